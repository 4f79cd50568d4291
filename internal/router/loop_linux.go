//go:build linux

package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// On Linux a connection is served by an event loop of the router's own
// rather than by goroutines: each loop owns an epoll set with the sockets
// of many connections, and one goroutine drives it. It reads the
// ClientHello, routes it, connects to a local backend with a socket of its
// own, and copies both ways. The loop's goroutine waits on the epoll
// descriptor itself through the runtime's poller, so it parks and wakes
// like any goroutine, but one wake-up serves every event that came
// meanwhile, on any connection, and a message costs one read and one
// write: no goroutine to start or wake per connection or direction, no
// deadline timer per connection, no read that returns EAGAIN to learn that
// a socket is drained. The first loop also accepts from a TCP listener:
// measured with bench/router's A/B front, that took the CPU per new
// connection from 1.03-1.09 of HAProxy's to 0.87-0.90 (15 reps).
//
// What the loop does not do itself it hands to a goroutine with a net.Conn:
// answering acme-tls/1 (crypto/tls) and connecting to a backend whose
// address needs the resolver or is not local (the net package's dialer,
// with its timeout); such a connection comes back to a loop to be copied.
// A listener whose type is not *net.TCPListener is served by the
// accepting goroutine of Serve, which hands each connection to a loop; a
// connection whose type is not the net package's own is served by
// goroutines throughout, as off Linux.
//
// The guard (guard.go) is consulted when a connection is accepted and when
// its ClientHello is complete or it closes before that, never per read. A
// pair it evicts is closed under its loop's lock, taken after the
// accepting loop's (the order newConn keeps); a pair in the loops of
// another Serve call is closed by a goroutine.
//
// Sockets are taken out of the runtime's poller (their descriptors are
// duplicated and the net.Conns closed) before the loop registers them, so
// that the runtime does not wake up for their events too.
//
// Registration is edge-triggered for input, output and peer shutdown, made
// once per socket. A direction reads until the read comes back short (TCP
// and Unix stream sockets return short only when their queue is empty; a
// byte that arrives later raises a new edge), and reads on to the EOF when
// the event said the peer shut down. A write that does not complete keeps
// the rest in a buffer and stops reading that direction until the
// destination's output edge, so a slow reader slows its sender instead of
// filling memory.

// loopEvents is how many events one wait returns at most.
const loopEvents = 128

// cpusPerLoop: one loop per this many CPUs. The kernel's side of the
// copying (TCP, loopback) costs several times the loop's own work, and
// fewer loops batch more events per wake-up: on 2 CPUs one loop took
// 10-20 % less CPU per keep-alive request than two (bench/router).
const cpusPerLoop = 4

// genMask bounds pair generations to the 31 bits left in an event's data
// beside the side.
const genMask = 1<<31 - 1

// loops is the set of event loops of one Serve call.
type loops struct {
	r    *Router
	s    *session
	ctx  context.Context // for what loops hand to goroutines
	all  []*loop
	mu   sync.Mutex
	next int
}

// newLoops starts the event loops of a Serve call.
func newLoops(ctx context.Context, r *Router, s *session) (*loops, error) {
	ls := &loops{r: r, s: s, ctx: ctx}
	for range max(1, runtime.GOMAXPROCS(0)/cpusPerLoop) {
		l, err := newLoop(ls)
		if err != nil {
			ls.close()
			return nil, err
		}
		ls.all = append(ls.all, l)
	}
	return ls, nil
}

// close stops the loops. Their connections must be gone.
func (ls *loops) close() {
	for _, l := range ls.all {
		l.mu.Lock()
		if l.timer != nil {
			l.timer.Stop()
		}
		l.mu.Unlock()
		_ = l.file.Close()
		<-l.done
	}
}

// pick returns the next loop, in turn.
func (ls *loops) pick() *loop {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	l := ls.all[ls.next]
	ls.next = (ls.next + 1) % len(ls.all)
	return l
}

// shutdownAll ends the connections of every loop; see loop.shutdownAll.
func (ls *loops) shutdownAll() {
	for _, l := range ls.all {
		l.shutdownAll()
	}
}

// loop is one event loop.
type loop struct {
	ls   *loops
	r    *Router
	epfd int
	file *os.File // epfd, in the runtime's poller
	raw  syscall.RawConn
	done chan struct{}

	// mu guards everything below up to the loop goroutine's own fields,
	// and every pair's state: the loop holds it while it handles a batch
	// of events, others (add, shutdownAll, the peek timer) while they
	// touch it.
	mu      sync.Mutex
	slots   []*pair
	free    []int32
	closing bool   // shutdownAll ran
	gen     uint32 // of the last pair added
	stopped bool   // the loop ended on an error: add nothing more
	// Connections reading their ClientHello, in the order of their
	// deadlines (all are accept time plus PeekTimeout): hellos[helloHead:].
	hellos    []*pair
	helloHead int
	timer     *time.Timer // fires at the first deadline, when armed
	armed     bool
	dead      []*pair // closed in this round, released after it

	// The loop goroutine's own.
	events  [loopEvents]unix.EpollEvent
	n       int  // events from the last wait
	skip    bool // next serve: wait for an edge without asking first
	serveFn func(uintptr) bool
	buf     []byte
	waitErr error
}

// pair is one connection in a loop: the client's socket (side 0) and the
// backend's (side 1, -1 until connected). dir[i] copies side i to side 1-i.
type pair struct {
	cn   *conn
	fd   [2]int
	slot int32
	gen  uint32 // tells this pair's events from those of the slot's earlier ones
	dir  [2]direction

	// While the ClientHello is read: the buffer (r.bufs; the hello goes
	// at maxProxyHeader), bytes read, the deadline.
	hello         *[]byte
	helloN        int
	deadline      time.Time
	remote, local net.Addr      // nil until asked for (remoteAddr, localAddr)
	rsa           unix.Sockaddr // the client's, when a loop accepted it

	lsn *listenerState // set when the pair is a listening socket

	// While the backend's socket connects (loop.connected).
	connecting bool
	rt         *route
	sni        string
}

// direction is one way of a pair.
type direction struct {
	readable bool // an input edge came and the socket is not known drained
	rdhup    bool // the peer shut down writing: read on to the EOF
	writable bool // the destination may take bytes
	eof      bool // EOF read; the destination is (or will be, once flushed) shut down for writing
	pending  *[]byte
	off, end int // pending bytes not yet written: (*pending)[off:end]
}

func newLoop(ls *loops) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating epoll set: %w", os.NewSyscallError("epoll_create1", err))
	}
	// Non-blocking, so that os.NewFile puts it in the runtime's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("creating epoll set: %w", err)
	}
	l := &loop{ls: ls, r: ls.r, epfd: epfd, done: make(chan struct{}), buf: make([]byte, loopBufSize)}
	l.file = os.NewFile(uintptr(epfd), "epoll")
	raw, err := l.file.SyscallConn()
	if err != nil {
		_ = l.file.Close()
		return nil, fmt.Errorf("creating epoll set: %w", err)
	}
	l.raw = raw
	l.serveFn = l.serve
	go l.run()
	return l, nil
}

// add registers p's sockets (side 1 too unless it is -1), and with hello
// set queues p for the peek timer.
func (l *loop) add(p *pair, hello bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addLocked(p, hello)
}

// addLocked is add with l.mu held.
func (l *loop) addLocked(p *pair, hello bool) error {
	if l.stopped {
		return errors.New("the event loop has stopped")
	}
	l.gen = (l.gen + 1) & genMask
	p.gen = l.gen
	if n := len(l.free); n > 0 {
		p.slot = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		p.slot = int32(len(l.slots))
		l.slots = append(l.slots, nil)
	}
	for side, fd := range p.fd {
		if fd < 0 {
			continue
		}
		if err := l.register(p, side); err != nil {
			if side == 1 {
				_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, p.fd[0], nil)
			}
			l.free = append(l.free, p.slot)
			return err
		}
	}
	l.slots[p.slot] = p
	if hello {
		l.hellos = append(l.hellos, p)
		if !l.armed {
			l.armed = true
			if l.timer == nil {
				l.timer = time.AfterFunc(l.r.opts.PeekTimeout, l.expire)
			} else {
				l.timer.Reset(l.r.opts.PeekTimeout)
			}
		}
	}
	if l.closing && p.lsn == nil {
		// Serve's drain ran out while this one was on its way.
		l.shutdownPair(p)
	}
	return nil
}

// register adds side of p to the epoll set.
func (l *loop) register(p *pair, side int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: p.slot, Pad: int32(p.gen<<1) | int32(side)}
	if p.lsn != nil {
		ev.Events = unix.EPOLLIN | unix.EPOLLET
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, p.fd[side], &ev); err != nil {
		return fmt.Errorf("adding to epoll set: %w", os.NewSyscallError("epoll_ctl", err))
	}
	return nil
}

// shutdownAll ends every pair from outside the loop (Serve's drain
// timeout), and those added later: their sockets are shut down both ways,
// and the loop sees the EOFs and closes them.
func (l *loop) shutdownAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closing = true
	for _, p := range l.slots {
		if p != nil && p.lsn == nil {
			l.shutdownPair(p)
		}
	}
}

func (l *loop) shutdownPair(p *pair) {
	for _, fd := range p.fd {
		if fd >= 0 {
			_ = unix.Shutdown(fd, unix.SHUT_RDWR)
		}
	}
}

// serve is the callback of the loop's one RawConn.Read on the epoll
// descriptor, and the loop itself: it returns false to wait for the
// descriptor's next edge, and is called again after it. Waiting inside one
// Read matters: each Read starts by forgetting an edge that came since the
// last one, which would lose the events of a round's own duration.
func (l *loop) serve(uintptr) bool {
	for {
		if l.skip {
			// The last round found fewer events than fit: wait for the
			// next edge (one that came during the round wakes at once).
			l.skip = false
			return false
		}
		n, err := epollPoll(l.epfd, l.events[:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			l.waitErr = os.NewSyscallError("epoll_pwait", err)
			return true
		case n == 0:
			return false
		}
		l.n = n
		l.round()
	}
}

// run is the loop's goroutine. It ends when the epoll descriptor is closed.
func (l *loop) run() {
	defer close(l.done)
	if err := l.raw.Read(l.serveFn); err != nil {
		return // closed
	}
	l.r.log.Error("router event loop stopped", "error", l.waitErr)
	l.closeAll()
}

// round handles the events of the last wait.
func (l *loop) round() {
	l.mu.Lock()
	for _, ev := range l.events[:l.n] {
		p := l.slots[ev.Fd]
		if p == nil || uint32(ev.Pad)>>1 != p.gen {
			// Closed since the wait (earlier in this round, or by the
			// peek timer), and the slot perhaps taken by another.
			continue
		}
		if p.lsn != nil {
			l.acceptAll(p)
			continue
		}
		side := int(ev.Pad & 1)
		if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			d := &p.dir[side]
			d.readable = true
			if ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				d.rdhup = true
			}
		}
		if p.hello != nil {
			l.readHello(p)
			continue
		}
		if p.connecting && side == 1 && ev.Events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 && !l.connected(p) {
			l.closePair(p)
			continue
		}
		if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			p.dir[1-side].writable = true
		}
		if !l.progress(p, side) || !l.progress(p, 1-side) {
			l.closePair(p)
		}
	}
	// A full batch may have left events behind: ask again at once.
	l.skip = l.n < len(l.events)
	l.unlockAndRelease()
}

// closePair closes p's sockets (their registrations go with them: the loop
// holds the only descriptors) and queues the connection to be released
// after the round. Called with l.mu held.
func (l *loop) closePair(p *pair) {
	if l.slots[p.slot] != p {
		return
	}
	for i := range p.dir {
		if d := &p.dir[i]; d.pending != nil {
			pendingBufs.Put(d.pending)
			d.pending = nil
		}
		if p.fd[i] >= 0 {
			_ = unix.Close(p.fd[i])
			p.fd[i] = -1
		}
	}
	if p.hello != nil {
		l.r.guard.leave(p.cn)
		l.r.bufs.Put(p.hello)
		p.hello = nil
	}
	l.slots[p.slot] = nil
	l.free = append(l.free, p.slot)
	l.dead = append(l.dead, p)
}

// unlockAndRelease unlocks l.mu and then releases the connections closed
// while it was held (release takes the session's lock and closes
// net.Conns: no need to hold up the loop's lock for that).
func (l *loop) unlockAndRelease() {
	dead := l.dead
	l.dead = nil // not [:0]: another goroutine may append once unlocked
	l.mu.Unlock()
	for _, p := range dead {
		l.r.release(l.ls.s, p.cn)
	}
}

// closeAll closes every pair; the loop is stopping on an error.
func (l *loop) closeAll() {
	l.mu.Lock()
	l.stopped = true
	for _, p := range l.slots {
		switch {
		case p == nil:
		case p.lsn != nil:
			select {
			case p.lsn.errc <- l.waitErr:
			default:
			}
			l.closeListener(p)
		default:
			l.closePair(p)
		}
	}
	l.unlockAndRelease()
}

// The loop's system calls never block (the sockets and the wait are
// non-blocking), so they go straight to the kernel, without telling the
// scheduler a goroutine may block: that bookkeeping was 5 % of the loop's
// CPU under load.

func rawRead(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// epollPoll returns the ready events of epfd without waiting.
func epollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
