//go:build linux

// Accepting connections into the event loops and reading their
// ClientHellos (loop_linux.go has the loop itself): the listener, taking
// connections in from Serve and from goroutines, the peek timer, and
// routing or handing off a complete ClientHello.

package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// errHelloTimeout is the error of a ClientHello not complete within
// Options.PeekTimeout.
var errHelloTimeout = errors.New("reading client hello: timed out")

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
