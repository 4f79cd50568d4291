//go:build linux

package router

import (
	"context"
	"log/slog"
	"net/netip"

	"golang.org/x/sys/unix"
)

// sockaddrIP is the IP address of a TCP socket address; not valid for
// others.
func sockaddrIP(sa unix.Sockaddr) netip.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(a.Addr)
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(a.Addr)
	}
	return netip.Addr{}
}

// evictPair closes p, in loop l, which the guard chose to evict, if it is
// still reading its ClientHello, and reports whether it did. held is the
// loop whose lock the caller holds: the accepting loop of a Serve, which
// may take the locks of the other loops of its Serve (as newConn does). A
// pair in the loops of another Serve is closed by a goroutine instead,
// which counts it (async).
func evictPair(l *loop, p *pair, held *loop) (closed, async bool) {
	if held != nil && l != held && l.ls != held.ls {
		go func() {
			if ok, _ := evictPair(l, p, nil); ok {
				l.r.guard.countEvicted(1, -1)
			}
		}()
		return false, true
	}
	if l != held {
		l.mu.Lock()
	}
	closed = int(p.slot) < len(l.slots) && l.slots[p.slot] == p && p.hello != nil
	if closed {
		if l.r.log.Enabled(context.Background(), slog.LevelDebug) {
			l.r.log.Debug("closing connection: evicted to keep file descriptors free", "remote_addr", p.remoteAddr().String(), "bytes", p.helloN)
		}
		l.closePair(p)
	}
	if l != held {
		l.unlockAndRelease()
	}
	return closed, false
}
