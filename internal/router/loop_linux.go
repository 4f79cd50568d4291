//go:build linux

package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
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

// loopBufSize is the loop's one copy buffer. Messages are copied one at a
// time, so a loop needs one buffer, not one per connection.
//
// Bulk is copied through it too, not spliced: splice(2) through a pipe per
// direction, switched on once a read filled the buffer, cost more CPU per
// GiB (0.91 of HAProxy's against 0.81) and a worse p99 (1.07 of HAProxy's
// against 0.93) in bench/router on loopback.
const loopBufSize = 64 << 10

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

// pendingBufs holds the buffers of writes that did not complete.
var pendingBufs = sync.Pool{New: func() any {
	b := make([]byte, loopBufSize)
	return &b
}}

// errHelloTimeout is the error of a ClientHello not complete within
// Options.PeekTimeout.
var errHelloTimeout = errors.New("reading client hello: timed out")

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

// listen accepts ln's connections in the first loop, until ctx is done
// (nil) or accepting fails for good. It reports handled false, having done
// nothing, when ln is not a *net.TCPListener. The runtime's descriptor of
// ln is closed at once (a TCP listener's Close only closes its
// descriptor): the loop's duplicate listens on, and the runtime's poller
// does not wake up for the listener's events too.
func (ls *loops) listen(ctx context.Context, ln net.Listener) (handled bool, err error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return false, nil
	}
	lfd, ok := dupFD(tl)
	if !ok {
		return false, nil
	}
	l := ls.all[0]
	p := &pair{fd: [2]int{lfd, -1}, lsn: &listenerState{errc: make(chan error, 1)}}
	if err := l.add(p, false); err != nil {
		_ = unix.Close(lfd)
		return false, nil
	}
	_ = ln.Close()
	select {
	case <-ctx.Done():
	case err = <-p.lsn.errc:
		err = fmt.Errorf("accepting connections on %s: %w", ln.Addr(), err)
	}
	l.mu.Lock()
	l.closeListener(p)
	l.mu.Unlock()
	return true, err
}

// listenerState is the state of a pair that is a listening socket.
type listenerState struct {
	errc     chan error // a lasting accept failure, for listen
	backoff  time.Duration
	retrying bool // a retry after a transient failure is scheduled
}

// acceptAll accepts every connection waiting on the listener p and starts
// reading their ClientHellos. Called with l.mu held.
func (l *loop) acceptAll(p *pair) {
	for {
		fd, sa, err := unix.Accept4(p.fd[0], unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch err {
		case nil:
		case unix.EAGAIN:
			return
		case unix.EINTR, unix.ECONNABORTED:
			continue
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			ln := p.lsn
			if err == unix.EMFILE || err == unix.ENFILE {
				// Out of descriptors: close connections still waiting
				// for their ClientHello (guard.go) and accept on.
				closed, freed := l.r.guard.exhausted(l)
				if freed > 0 {
					continue
				}
				if closed > 0 {
					// Their descriptors are freed by other goroutines.
					if !ln.retrying {
						ln.retrying = true
						time.AfterFunc(time.Millisecond, func() { l.retryAccept(p) })
					}
					return
				}
			}
			// Transient: back off as net/http does. The connections
			// wait in the listen queue; the retry takes them.
			// Logged once per retry, not per connection that arrives
			// meanwhile.
			if !ln.retrying {
				ln.backoff = min(max(2*ln.backoff, 5*time.Millisecond), time.Second)
				l.r.log.Warn("accepting connection", "error", os.NewSyscallError("accept4", err), "retry_in", ln.backoff)
				ln.retrying = true
				time.AfterFunc(ln.backoff, func() { l.retryAccept(p) })
			}
			return
		default:
			select {
			case p.lsn.errc <- os.NewSyscallError("accept4", err):
			default:
			}
			l.closeListener(p)
			return
		}
		p.lsn.backoff = 0
		l.r.accepted.Add(1)
		l.newConn(fd, sa)
	}
}

// retryAccept accepts again after a transient failure.
func (l *loop) retryAccept(p *pair) {
	l.mu.Lock()
	p.lsn.retrying = false
	if l.slots[p.slot] == p {
		l.acceptAll(p)
	}
	l.unlockAndRelease()
}

// closeListener stops accepting on p. Called with l.mu held.
func (l *loop) closeListener(p *pair) {
	if l.slots[p.slot] != p {
		return
	}
	_ = unix.Close(p.fd[0])
	p.fd[0] = -1
	l.slots[p.slot] = nil
	l.free = append(l.free, p.slot)
}

// newConn starts serving fd, just accepted from a remote at sa, in a loop
// (in turn): it reads the ClientHello. Called with l.mu held.
func (l *loop) newConn(fd int, sa unix.Sockaddr) {
	r, s := l.r, l.ls.s
	cn := &conn{}
	t := l.ls.pick()
	p := &pair{cn: cn, fd: [2]int{fd, -1}, rsa: sa}
	if !r.guard.admit(cn, sockaddrIP(sa), t, p) {
		_ = unix.Close(fd) // too many from its source; counted
		return
	}
	if r.guard.pressure(fd) {
		r.guard.evict(2, cn, l, fd)
	}
	if !s.track(cn) {
		r.guard.leave(cn)
		_ = unix.Close(fd) // shutting down
		return
	}
	r.active.Add(1)
	// What the net package sets on every accepted TCP connection: no
	// delay for whole messages, and keep-alive probes (15 s idle, 15 s
	// apart, 9 of them), which end connections whose client vanished.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9)
	p.hello, p.deadline = r.bufs.Get().(*[]byte), time.Now().Add(r.opts.PeekTimeout)
	var err error
	if t == l {
		err = l.addLocked(p, true)
	} else {
		err = t.add(p, true) // lock order: the accepting loop, then another
	}
	if err != nil {
		r.log.Error("router event loop refused a connection", "remote_addr", p.remoteAddr().String(), "error", err)
		r.guard.leave(cn)
		r.bufs.Put(p.hello)
		p.hello = nil
		_ = unix.Close(fd)
		l.dead = append(l.dead, p)
	}
}

// accept takes cn, just accepted and tracked: a loop reads its ClientHello
// (bounded by PeekTimeout and MaxHello) and routes it. It reports false,
// and leaves cn as it was, when cn's socket is not the net package's own
// (a wrapper may buffer bytes of its own that reading the descriptor would
// skip).
func (ls *loops) accept(cn *conn) bool {
	fd, ok := dupConn(cn.client)
	if !ok {
		return false
	}
	r := ls.r
	r.active.Add(1)
	l := ls.pick()
	p := &pair{cn: cn, fd: [2]int{fd, -1},
		remote: cn.client.RemoteAddr(), local: cn.client.LocalAddr(),
		hello: r.bufs.Get().(*[]byte), deadline: time.Now().Add(r.opts.PeekTimeout)}
	_ = cn.client.Close()
	if !r.guard.attach(cn, l, p) {
		// Evicted while it changed hands; counted.
		r.bufs.Put(p.hello)
		_ = unix.Close(fd)
		r.release(ls.s, cn)
		return true
	}
	if err := l.add(p, true); err != nil {
		r.log.Error("router event loop refused a connection", "remote_addr", p.remoteAddr().String(), "error", err)
		r.guard.leave(cn)
		r.bufs.Put(p.hello)
		_ = unix.Close(fd)
		r.release(ls.s, cn)
	}
	return true
}

// adopt moves cn, routed by a goroutine and with its ClientHello written to
// the backend, to a loop. It reports false, and leaves cn as it was, when
// its sockets are not the net package's own.
func (ls *loops) adopt(cn *conn) bool {
	cfd, ok := dupConn(cn.client)
	if !ok {
		return false
	}
	bfd, ok := dupConn(cn.backend)
	if !ok {
		_ = unix.Close(cfd)
		return false
	}
	p := &pair{cn: cn, fd: [2]int{cfd, bfd}}
	p.dir[0].writable, p.dir[1].writable = true, true
	_ = cn.client.Close()
	_ = cn.backend.Close()
	if err := ls.pick().add(p, false); err != nil {
		ls.r.log.Error("router event loop refused a connection", "remote_addr", cn.client.RemoteAddr().String(), "error", err)
		_ = unix.Close(cfd)
		_ = unix.Close(bfd)
		ls.r.release(ls.s, cn)
	}
	return true
}

// canDialLocal reports whether dialLocal can connect to rt: a local
// backend at a literal address or a Unix socket.
func canDialLocal(rt *route) bool {
	return rt.local && (rt.network == "unix" || rt.ip.Addr().Is4() || (rt.ip.Addr().Is6() && rt.ip.Addr().Zone() == ""))
}

// dialLocal starts connecting a non-blocking socket to rt's backend, for
// which canDialLocal holds. A local backend accepts or refuses at once, so
// no timer bounds the attempt; one the backend leaves hanging (a full
// listen queue) ends when the client gives up. The loop learns the outcome
// from the socket's first event (see loop.connected).
func dialLocal(rt *route) (int, error) {
	var sa unix.Sockaddr
	family := unix.AF_UNIX
	switch {
	case rt.network == "unix":
		sa = &unix.SockaddrUnix{Name: rt.addr}
	case rt.ip.Addr().Is4():
		sa, family = &unix.SockaddrInet4{Port: int(rt.ip.Port()), Addr: rt.ip.Addr().As4()}, unix.AF_INET
	default:
		sa, family = &unix.SockaddrInet6{Port: int(rt.ip.Port()), Addr: rt.ip.Addr().As16()}, unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, &net.OpError{Op: "dial", Net: rt.network, Addr: backendAddr(rt), Err: os.NewSyscallError("socket", err)}
	}
	if family != unix.AF_UNIX {
		// As the net package does for every TCP connection: the
		// messages passed on are whole, and waiting for more only
		// delays them.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	for {
		err = unix.Connect(fd, sa)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil && err != unix.EINPROGRESS {
		_ = unix.Close(fd)
		return -1, &net.OpError{Op: "dial", Net: rt.network, Addr: backendAddr(rt), Err: os.NewSyscallError("connect", err)}
	}
	return fd, nil
}

// backendAddr is rt's backend as a net.Addr, for errors.
func backendAddr(rt *route) net.Addr {
	if rt.network == "unix" {
		return &net.UnixAddr{Name: rt.addr, Net: "unix"}
	}
	return net.TCPAddrFromAddrPort(rt.ip)
}

// dupConn duplicates c's descriptor when c is the net package's own socket
// type.
func dupConn(c net.Conn) (int, bool) {
	switch c := c.(type) {
	case *net.TCPConn:
		return dupFD(c)
	case *net.UnixConn:
		return dupFD(c)
	}
	return -1, false
}

// dupFD duplicates sc's descriptor (close-on-exec, and non-blocking like
// the original: the flag belongs to the shared file description).
func dupFD(sc syscall.Conn) (int, bool) {
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, false
	}
	nfd := -1
	if err := raw.Control(func(fd uintptr) {
		nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil || nfd < 0 {
		return -1, false
	}
	return nfd, true
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

// remoteAddr is the client's address.
func (p *pair) remoteAddr() net.Addr {
	if p.remote == nil {
		p.remote = sockaddrAddr(p.rsa)
	}
	return p.remote
}

// localAddr is the address the client connected to.
func (p *pair) localAddr() net.Addr {
	if p.local == nil && p.fd[0] >= 0 {
		if sa, err := unix.Getsockname(p.fd[0]); err == nil {
			p.local = sockaddrAddr(sa)
		}
	}
	if p.local == nil {
		return &net.TCPAddr{}
	}
	return p.local
}

// sockaddrAddr converts a TCP socket address as the net package does.
func sockaddrAddr(sa unix.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *unix.SockaddrInet6:
		ta := &net.TCPAddr{IP: append(net.IP(nil), a.Addr[:]...), Port: a.Port}
		if a.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				ta.Zone = ifi.Name
			} else {
				ta.Zone = strconv.Itoa(int(a.ZoneId))
			}
		}
		return ta
	}
	return &net.TCPAddr{}
}

// connectTo makes p, whose side 1 is a socket connecting to rt, wait for
// the connection with first queued for the backend.
func (p *pair) connectTo(rt *route, first, sni []byte) {
	p.connecting, p.rt, p.sni = true, rt, string(sni)
	p.dir[1].writable = true
	up := &p.dir[0]
	bp := pendingBufs.Get().(*[]byte)
	up.pending, up.off, up.end = bp, 0, copy(*bp, first)
	up.writable = false
	// Bytes the client sent after its hello raised their edge already.
	up.readable = true
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

// expire is the peek timer: connections whose ClientHello is not complete
// by their deadline are rejected.
func (l *loop) expire() {
	l.mu.Lock()
	l.expireLocked()
	l.unlockAndRelease()
}

func (l *loop) expireLocked() {
	now := time.Now()
	for l.helloHead < len(l.hellos) {
		p := l.hellos[l.helloHead]
		if p.hello != nil && l.slots[p.slot] == p {
			if d := p.deadline.Sub(now); d > 0 {
				l.timer.Reset(d)
				if l.helloHead > len(l.hellos)/2 {
					n := copy(l.hellos, l.hellos[l.helloHead:])
					clear(l.hellos[n:])
					l.hellos, l.helloHead = l.hellos[:n], 0
				}
				return
			}
			l.reject(p, errHelloTimeout)
		}
		l.hellos[l.helloHead] = nil
		l.helloHead++
	}
	l.hellos, l.helloHead = l.hellos[:0], 0
	l.armed = false
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

// readHello reads p's ClientHello as far as the client has sent it, and
// routes p once it is complete.
func (l *loop) readHello(p *pair) {
	d := &p.dir[0]
	if !d.readable {
		return
	}
	peek := (*p.hello)[maxProxyHeader:]
	for {
		if p.helloN == len(peek) {
			l.reject(p, errTooLarge)
			return
		}
		n, err := rawRead(p.fd[0], peek[p.helloN:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			d.readable = false
			return
		case err != nil:
			l.reject(p, fmt.Errorf("reading client hello: %w", os.NewSyscallError("read", err)))
			return
		case n == 0:
			l.reject(p, fmt.Errorf("reading client hello: %w", io.EOF))
			return
		}
		p.helloN += n
		h, perr := parseHello(peek[:p.helloN], len(peek))
		if perr == nil {
			// Complete: no longer the guard's. Should the guard have
			// chosen p to evict meanwhile, the hello wins: closeHello
			// finds p past it.
			l.r.guard.leave(p.cn)
			l.routeHello(p, h)
			return
		}
		if !errors.Is(perr, errShort) {
			l.reject(p, perr)
			return
		}
	}
}

// reject closes p, whose ClientHello is missing, malformed, too large or
// too slow.
func (l *loop) reject(p *pair, err error) {
	l.r.rejected.Add(1)
	if l.r.log.Enabled(context.Background(), slog.LevelDebug) {
		l.r.log.Debug("closing connection: no valid client hello", "remote_addr", p.remoteAddr().String(), "bytes", p.helloN, "error", err)
	}
	l.closePair(p)
}

// routeHello acts on p's complete ClientHello: a local backend at a literal
// address is connected here; acme-tls/1 and other backends go to a
// goroutine.
func (l *loop) routeHello(p *pair, h clientHello) {
	r := l.r
	var nameBuf [255]byte
	rt, name, acme := r.decide(h, &nameBuf)
	switch {
	case acme:
		l.handOff(p, h)
		return
	case rt == nil:
		r.logNoRoute(p.remoteAddr, name)
		l.closePair(p)
		return
	case !canDialLocal(rt):
		l.handOff(p, h)
		return
	}
	bfd, err := dialLocal(rt)
	if err != nil {
		r.failed.Add(1)
		rt.failLog.log(r.log, "connecting to backend", "backend", rt.Backend, "sni", string(name), "error", err)
		l.closePair(p)
		return
	}
	p.fd[1] = bfd
	p.connectTo(rt, firstBytes(*p.hello, p.helloN, rt, p.remoteAddr(), p.localAddr()), name)
	r.bufs.Put(p.hello)
	p.hello = nil
	if err := l.register(p, 1); err != nil {
		r.failed.Add(1)
		rt.failLog.log(r.log, "connecting to backend", "backend", rt.Backend, "sni", string(name), "error", err)
		l.closePair(p)
		return
	}
	if r.log.Enabled(context.Background(), slog.LevelDebug) {
		r.log.Debug("routing connection", "remote_addr", p.remoteAddr().String(), "sni", string(name), "backend", rt.Backend)
	}
}

// handOff gives p, with its ClientHello read, to a goroutine holding a
// net.Conn of its socket (see dispatch); the connection comes back to a
// loop to be copied.
func (l *loop) handOff(p *pair, h clientHello) {
	fd := p.fd[0]
	// Out of the epoll set first: the net.Conn made below shares the
	// socket, and a registration lives as long as the socket does.
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	l.slots[p.slot] = nil
	l.free = append(l.free, p.slot)
	p.fd[0] = -1
	f := os.NewFile(uintptr(fd), "client")
	c, err := net.FileConn(f)
	_ = f.Close()
	bp, n := p.hello, p.helloN
	p.hello = nil
	if err != nil {
		l.r.failed.Add(1)
		l.r.log.Error("handing a connection to a goroutine", "remote_addr", p.remoteAddr().String(), "error", err)
		l.r.bufs.Put(bp)
		l.dead = append(l.dead, p)
		return
	}
	cn, r, ctx, s := p.cn, l.r, l.ls.ctx, l.ls.s
	if !s.setClient(cn, c) {
		r.bufs.Put(bp)
		l.dead = append(l.dead, p)
		return
	}
	go func() {
		growStack(0)
		res := r.dispatch(ctx, s, cn, *bp, n, h)
		r.bufs.Put(bp)
		r.finish(s, cn, res)
	}()
}

// connected ends the connection attempt of p, whose backend socket became
// writable or failed: it reports whether the socket is connected, and
// counts and logs the outcome as a dial would be.
func (l *loop) connected(p *pair) bool {
	p.connecting = false
	errno, err := unix.GetsockoptInt(p.fd[1], unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && errno != 0 {
		err = unix.Errno(errno)
	}
	if err != nil {
		l.r.failed.Add(1)
		err = &net.OpError{Op: "dial", Net: p.rt.network, Addr: backendAddr(p.rt), Err: os.NewSyscallError("connect", err)}
		p.rt.failLog.log(l.r.log, "connecting to backend", "backend", p.rt.Backend, "sni", p.sni, "error", err)
		return false
	}
	l.r.routed.Add(1)
	p.rt, p.sni = nil, ""
	return true
}

// progress moves what it can of direction i of p. It reports false when
// the pair is to be closed: an error on either socket, or both directions
// at their end.
func (l *loop) progress(p *pair, i int) bool {
	d := &p.dir[i]
	src, dst := p.fd[i], p.fd[1-i]
	if d.pending != nil {
		if !d.writable {
			return true
		}
		for d.off < d.end {
			n, err := rawWrite(dst, (*d.pending)[d.off:d.end])
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				d.writable = false
				return true
			}
			if err != nil {
				return false
			}
			d.off += n
		}
		pendingBufs.Put(d.pending)
		d.pending = nil
		if d.eof {
			return l.shutWrite(p, i)
		}
	}
	for d.readable && !d.eof {
		n, err := rawRead(src, l.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			d.readable = false
			return true
		case err != nil:
			return false // reset: close both sides
		case n == 0:
			d.eof, d.readable = true, false
			return l.shutWrite(p, i)
		}
		w, err := writeAll(dst, l.buf[:n])
		if err == unix.EAGAIN {
			bp := pendingBufs.Get().(*[]byte)
			d.pending, d.off, d.end = bp, 0, copy(*bp, l.buf[w:n])
			d.writable = false
			return true
		}
		if err != nil {
			return false
		}
		if n < len(l.buf) && !d.rdhup {
			d.readable = false // drained; the next byte raises an edge
		}
	}
	return true
}

// writeAll writes b to fd until it is all written or the socket is full
// (EAGAIN, with the count written so far) or fails.
func writeAll(fd int, b []byte) (int, error) {
	w := 0
	for w < len(b) {
		n, err := rawWrite(fd, b[w:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return w, err
		}
		w += n
	}
	return w, nil
}

// shutWrite passes direction i's EOF on: the destination is shut down for
// writing, so the FIN travels on while the other direction goes on. It
// reports false when the pair is done (both directions ended) or the
// destination cannot be shut down.
func (l *loop) shutWrite(p *pair, i int) bool {
	if d := &p.dir[i]; d.pending != nil {
		return true // after the flush
	}
	if err := unix.Shutdown(p.fd[1-i], unix.SHUT_WR); err != nil {
		return false
	}
	o := &p.dir[1-i]
	return !(o.eof && o.pending == nil)
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
