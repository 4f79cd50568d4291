//go:build linux

// Connecting the event loops' connections to local backends and copying
// their bytes both ways (loop_linux.go has the loop itself).

package router

import (
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// loopBufSize is the loop's one copy buffer. Messages are copied one at a
// time, so a loop needs one buffer, not one per connection.
//
// Bulk is copied through it too, not spliced: splice(2) through a pipe per
// direction, switched on once a read filled the buffer, cost more CPU per
// GiB (0.91 of HAProxy's against 0.81) and a worse p99 (1.07 of HAProxy's
// against 0.93) in bench/router on loopback.
const loopBufSize = 64 << 10

// pendingBufs holds the buffers of writes that did not complete.
var pendingBufs = sync.Pool{New: func() any {
	b := make([]byte, loopBufSize)
	return &b
}}

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
