package dnsserver

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// maxBuckets bounds the limiter's memory. Sources seen once the table is full
// share one overflow bucket, so a flood from many (spoofed) sources is still
// limited as a whole.
const maxBuckets = 1 << 16

// sweepInterval is how often buckets that have refilled are forgotten.
const sweepInterval = 10 * time.Second

// limiter is a token bucket per source: an IPv4 address or an IPv6 /64
// (one host usually owns a whole /64).
type limiter struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[netip.Addr]*bucket
	overflow  bucket
	lastSweep time.Time
}

type bucket struct {
	tokens  float64
	last    time.Time
	limited bool // dropping since the last allowed query
}

func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	t := now()
	return &limiter{
		rate:      rate,
		burst:     float64(burst),
		now:       now,
		buckets:   make(map[netip.Addr]*bucket),
		overflow:  bucket{tokens: float64(burst), last: t},
		lastSweep: t,
	}
}

// sourceKey maps an address to the key of its bucket.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// allow takes a token from src's bucket. It reports whether the query may be
// answered and whether this is the first query dropped in a row.
func (l *limiter) allow(src netip.Addr) (ok, first bool) {
	now := l.now()
	key := sourceKey(src)
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepInterval {
		l.sweepLocked(now)
	}
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			b = &l.overflow
		} else {
			b = &bucket{tokens: l.burst, last: now}
			l.buckets[key] = b
		}
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		b.limited = false
		return true, false
	}
	first = !b.limited
	b.limited = true
	return false, first
}

func (l *limiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.last = now
	}
}

// sweepLocked forgets buckets that are full again: a new bucket for the
// same source would be identical.
func (l *limiter) sweepLocked(now time.Time) {
	l.lastSweep = now
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
}

// limitReader is a dns.DecorateReader that drops UDP queries over the rate
// limit before they are parsed or answered.
func (s *Server) limitReader(r dns.Reader) dns.Reader {
	pcr, _ := r.(dns.PacketConnReader)
	return &limitedReader{Reader: r, pcr: pcr, s: s}
}

type limitedReader struct {
	dns.Reader // ReadTCP passes through
	pcr        dns.PacketConnReader
	s          *Server
}

var _ dns.PacketConnReader = (*limitedReader)(nil)

func (r *limitedReader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *dns.SessionUDP, error) {
	for {
		m, sess, err := r.Reader.ReadUDP(conn, timeout)
		if err != nil || r.s.admit(sess.RemoteAddr()) {
			return m, sess, err
		}
	}
}

func (r *limitedReader) ReadPacketConn(conn net.PacketConn, timeout time.Duration) ([]byte, net.Addr, error) {
	if r.pcr == nil {
		return nil, nil, errors.New("reading UDP: the DNS reader cannot read a generic net.PacketConn")
	}
	for {
		m, addr, err := r.pcr.ReadPacketConn(conn, timeout)
		if err != nil || r.s.admit(addr) {
			return m, addr, err
		}
	}
}

// admit applies the rate limit to a query from addr, counting and logging
// what it drops.
func (s *Server) admit(addr net.Addr) bool {
	var src netip.Addr
	switch a := addr.(type) {
	case *net.UDPAddr:
		src = a.AddrPort().Addr()
	default:
		ap, err := netip.ParseAddrPort(addr.String())
		if err != nil {
			return true
		}
		src = ap.Addr()
	}
	ok, first := s.limit.allow(src)
	if !ok {
		s.dropped.Add(1)
		if first {
			s.log.Warn("rate limiting DNS queries over UDP; excess is dropped", "source", src.String())
		}
	}
	return ok
}
