package acmedns

import (
	"net/netip"
	"sync"
	"time"
)

// maxBuckets bounds the limiter's memory; sources seen once the table is
// full share one overflow bucket.
const maxBuckets = 1 << 14

// limiter is a token bucket per source address (an IPv4 address or an IPv6
// /64, which one host usually owns whole).
type limiter struct {
	rate, burst float64
	now         func() time.Time

	mu        sync.Mutex
	buckets   map[netip.Addr]*bucket
	overflow  bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	t := now()
	return &limiter{
		rate: rate, burst: float64(burst), now: now,
		buckets:   make(map[netip.Addr]*bucket),
		overflow:  bucket{tokens: float64(burst), last: t},
		lastSweep: t,
	}
}

// allow takes a token from src's bucket and reports whether the request may
// proceed.
func (l *limiter) allow(src netip.Addr) bool {
	now := l.now()
	key := src.Unmap().WithZone("")
	if key.Is6() {
		p, _ := key.Prefix(64)
		key = p.Addr()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= time.Minute {
		l.lastSweep = now
		for k, b := range l.buckets {
			if l.refill(b, now); b.tokens >= l.burst {
				delete(l.buckets, k)
			}
		}
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
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *limiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.last = now
	}
}
