// Package ratelimit is a per-source token-bucket rate limiter for Detour's
// embedded servers: the authoritative DNS server (internal/dnsserver), which
// drops UDP queries over the limit so it cannot be used to amplify a spoofed
// flood, and the acme-dns HTTP API (internal/acmedns), which answers 429.
//
// Each source has its own bucket, keyed by its IPv4 address or, for IPv6,
// by its /64 (one host usually owns a whole /64, so keying by full address
// would let it use 2^64 buckets; see RFC 4291 section 2.5.1 and RFC 7421).
// The table of buckets is bounded: sources seen once it is full share one
// overflow bucket, so a flood from many sources is still limited as a whole.
// Buckets that have refilled are forgotten by a periodic sweep, since a new
// bucket for the same source would be identical.
//
// A DropLog (droplog.go) turns the drops into log lines: one when a source
// starts being limited and one summary when it stops (or every minute while
// it lasts), with a bounded table of sources, so that a flood, even from
// spoofed addresses, cannot flood the log.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"
)

// Defaults applied by New to zero Options fields.
const (
	// DefaultMaxSources is the default bound on the number of buckets.
	DefaultMaxSources = 1 << 16
	// DefaultSweepEvery is the default interval between sweeps.
	DefaultSweepEvery = time.Minute
)

// Options configures a Limiter.
type Options struct {
	// Rate is how many tokens per second each bucket regains.
	Rate float64
	// Burst is the size of each bucket, which starts full. It should be at
	// least 1; a bucket smaller than one token never allows anything.
	Burst int
	// MaxSources bounds the number of buckets; once it is reached, new
	// sources share one overflow bucket. 0 or less means DefaultMaxSources.
	MaxSources int
	// SweepEvery is how often buckets that have refilled are forgotten.
	// 0 or less means DefaultSweepEvery.
	SweepEvery time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Limiter is a token bucket per source address. It is safe for concurrent
// use.
type Limiter struct {
	rate, burst float64
	maxSources  int
	sweepEvery  time.Duration
	now         func() time.Time

	mu        sync.Mutex
	buckets   map[netip.Addr]*bucket
	overflow  bucket
	lastSweep time.Time
}

type bucket struct {
	tokens  float64
	last    time.Time
	limited bool // dropping since the last allowed request
}

// New returns a Limiter configured by opts, with every bucket full.
func New(opts Options) *Limiter {
	l := &Limiter{
		rate:       opts.Rate,
		burst:      float64(opts.Burst),
		maxSources: opts.MaxSources,
		sweepEvery: opts.SweepEvery,
		now:        opts.Now,
		buckets:    make(map[netip.Addr]*bucket),
	}
	if l.maxSources <= 0 {
		l.maxSources = DefaultMaxSources
	}
	if l.sweepEvery <= 0 {
		l.sweepEvery = DefaultSweepEvery
	}
	if l.now == nil {
		l.now = time.Now
	}
	t := l.now()
	l.overflow = bucket{tokens: l.burst, last: t}
	l.lastSweep = t
	return l
}

// Key returns the key of a's bucket: a with any IPv4-mapped IPv6 form
// unmapped and any zone dropped, and for IPv6 the first address of its /64.
func Key(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// Allow takes a token from src's bucket. It reports whether the request may
// proceed and, when it may not, whether this is the first request of the
// bucket dropped in a row. Under a steady flood every token that comes back
// lets one request through, so a run of drops restarts at every refill; to
// log floods, give the drops to a DropLog instead of logging firstDropped.
func (l *Limiter) Allow(src netip.Addr) (ok, firstDropped bool) {
	now := l.now()
	key := Key(src)
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= l.sweepEvery {
		l.sweepLocked(now)
	}
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.maxSources {
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
	firstDropped = !b.limited
	b.limited = true
	return false, firstDropped
}

// Len reports how many buckets the Limiter holds (at most MaxSources, plus
// the overflow bucket, which is not counted).
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// refill adds the tokens b has earned since it was last refilled.
func (l *Limiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.last = now
	}
}

// sweepLocked forgets buckets that are full again. l.mu must be held.
func (l *Limiter) sweepLocked(now time.Time) {
	l.lastSweep = now
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
}
