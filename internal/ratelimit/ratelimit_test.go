package ratelimit

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeClock is an injectable clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (l *Limiter) numBuckets() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

func TestKey(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"2001:db8:1:1::1", "2001:db8:1:1::"},
		{"2001:db8:1:1:ffff:ffff:ffff:ffff", "2001:db8:1:1::"},
		{"fe80::1%eth0", "fe80::"},
		{"::1", "::"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := Key(netip.MustParseAddr(tt.in)); got != netip.MustParseAddr(tt.want) {
				t.Errorf("Key(%s) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

// step is one call of Allow, after advancing the clock by advance.
type step struct {
	name      string
	advance   time.Duration
	src       string
	wantOK    bool
	wantFirst bool
}

func TestAllow(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		steps []step
	}{
		{
			name: "per source, IPv6 by /64, mapped IPv4 unmapped",
			opts: Options{Rate: 1, Burst: 2},
			steps: []step{
				{name: "v6 first", src: "2001:db8:1:1::1", wantOK: true},
				{name: "v6 same /64", src: "2001:db8:1:1::2", wantOK: true},
				{name: "v6 same /64 over burst", src: "2001:db8:1:1:ffff::9", wantFirst: true},
				{name: "v6 other /64", src: "2001:db8:1:2::1", wantOK: true},
				{name: "v4 mapped and plain share", src: "::ffff:192.0.2.1", wantOK: true},
				{name: "v4 plain", src: "192.0.2.1", wantOK: true},
				{name: "v4 over burst", src: "192.0.2.1", wantFirst: true},
				{name: "v4 second drop not first", src: "192.0.2.1"},
			},
		},
		{
			name: "tokens come back with time up to the burst",
			opts: Options{Rate: 2, Burst: 2},
			steps: []step{
				{name: "first", src: "192.0.2.1", wantOK: true},
				{name: "second", src: "192.0.2.1", wantOK: true},
				{name: "over burst", src: "192.0.2.1", wantFirst: true},
				{name: "half a second refills one", advance: 500 * time.Millisecond, src: "192.0.2.1", wantOK: true},
				{name: "then empty again", src: "192.0.2.1", wantFirst: true},
				{name: "long idle", advance: time.Hour, src: "192.0.2.1", wantOK: true},
				{name: "refill capped at burst", src: "192.0.2.1", wantOK: true},
				{name: "capped bucket empties", src: "192.0.2.1", wantFirst: true},
			},
		},
		{
			name: "first drop flagged again after an allowed request",
			opts: Options{Rate: 1, Burst: 1},
			steps: []step{
				{name: "allowed", src: "192.0.2.1", wantOK: true},
				{name: "first drop", src: "192.0.2.1", wantFirst: true},
				{name: "second drop", src: "192.0.2.1"},
				{name: "refilled", advance: time.Second, src: "192.0.2.1", wantOK: true},
				{name: "first drop of new run", src: "192.0.2.1", wantFirst: true},
			},
		},
		{
			name: "sources past MaxSources share the overflow bucket",
			opts: Options{Rate: 1, Burst: 1, MaxSources: 2},
			steps: []step{
				{name: "own bucket a", src: "192.0.2.1", wantOK: true},
				{name: "own bucket b", src: "192.0.2.2", wantOK: true},
				{name: "overflow c", src: "192.0.2.3", wantOK: true},
				{name: "overflow d shares c's bucket", src: "192.0.2.4", wantFirst: true},
				{name: "overflow e too", src: "2001:db8::1"},
				{name: "a has its own bucket", advance: time.Second, src: "192.0.2.1", wantOK: true},
			},
		},
		{
			name: "sweep frees the table for new sources",
			opts: Options{Rate: 1, Burst: 1, MaxSources: 1, SweepEvery: 10 * time.Second},
			steps: []step{
				{name: "a fills the table", src: "192.0.2.1", wantOK: true},
				{name: "b overflows", src: "192.0.2.2", wantOK: true},
				{name: "c shares the empty overflow", src: "192.0.2.3", wantFirst: true},
				{name: "after the sweep c gets a's slot", advance: 10 * time.Second, src: "192.0.2.3", wantOK: true},
				{name: "and its own empty bucket", src: "192.0.2.3", wantFirst: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			tt.opts.Now = clock.Now
			l := New(tt.opts)
			for _, st := range tt.steps {
				clock.Add(st.advance)
				ok, first := l.Allow(netip.MustParseAddr(st.src))
				if ok != st.wantOK || first != st.wantFirst {
					t.Errorf("%s: Allow(%s) = %v, %v; want %v, %v", st.name, st.src, ok, first, st.wantOK, st.wantFirst)
				}
			}
		})
	}
}

func TestSweep(t *testing.T) {
	tests := []struct {
		name        string
		sweepEvery  time.Duration
		advance     time.Duration
		wantBuckets int
	}{
		{"before the interval nothing is forgotten", 10 * time.Second, 9 * time.Second, 3},
		{"at the interval refilled buckets are forgotten", 10 * time.Second, 10 * time.Second, 1},
		{"zero means DefaultSweepEvery", 0, DefaultSweepEvery - time.Second, 3},
		{"DefaultSweepEvery sweeps", 0, DefaultSweepEvery, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			l := New(Options{Rate: 1, Burst: 2, SweepEvery: tt.sweepEvery, Now: clock.Now})
			for _, s := range []string{"192.0.2.1", "192.0.2.2"} {
				if ok, _ := l.Allow(netip.MustParseAddr(s)); !ok {
					t.Fatalf("Allow(%s) limited on a fresh limiter", s)
				}
			}
			clock.Add(tt.advance)
			if ok, _ := l.Allow(netip.MustParseAddr("198.51.100.1")); !ok {
				t.Fatal("new source limited")
			}
			if got := l.numBuckets(); got != tt.wantBuckets {
				t.Errorf("%d buckets, want %d", got, tt.wantBuckets)
			}
		})
	}
}

func TestSweepKeepsDrainedBuckets(t *testing.T) {
	clock := newFakeClock()
	l := New(Options{Rate: 0.01, Burst: 1, SweepEvery: time.Second, Now: clock.Now})
	src := netip.MustParseAddr("192.0.2.1")
	if ok, _ := l.Allow(src); !ok {
		t.Fatal("first request limited")
	}
	clock.Add(time.Second) // sweep runs; 0.01 tokens back, not full
	if ok, first := l.Allow(src); ok || !first {
		t.Errorf("Allow after sweep = %v, %v; want false, true (a drained bucket must survive the sweep)", ok, first)
	}
}

func TestDefaults(t *testing.T) {
	l := New(Options{Rate: 1, Burst: 1})
	if l.maxSources != DefaultMaxSources || l.sweepEvery != DefaultSweepEvery || l.now == nil {
		t.Errorf("New with zero fields: maxSources %d, sweepEvery %v, now set %v; want %d, %v, true",
			l.maxSources, l.sweepEvery, l.now != nil, DefaultMaxSources, DefaultSweepEvery)
	}
	if ok, _ := l.Allow(netip.MustParseAddr("192.0.2.1")); !ok {
		t.Error("first request on the real clock limited")
	}
}

func TestAllowConcurrent(t *testing.T) {
	clock := newFakeClock()
	const burst = 50
	l := New(Options{Rate: 1, Burst: burst, Now: clock.Now})
	src := netip.MustParseAddr("2001:db8::1")
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
	)
	for range 4 * burst {
		wg.Go(func() {
			if ok, _ := l.Allow(src); ok {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if allowed != burst {
		t.Errorf("%d of %d concurrent requests allowed, want exactly the burst %d", allowed, 4*burst, burst)
	}
}
