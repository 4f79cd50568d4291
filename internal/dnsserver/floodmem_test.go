package dnsserver

import (
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ratelimit"
)

// TestFloodMemoryBounded floods the limit from more spoofed sources than
// any table holds and counts the entries held while it lasts and after.
func TestFloodMemoryBounded(t *testing.T) {
	const sources = 100_000 // more than maxSources and DefaultMaxOther
	clock := newFakeClock()
	rec := &logRecorder{}
	s := New(Options{Logger: slog.New(rec), Now: clock.Now, RateLimit: 1, RateBurst: 1})
	admit := func(a netip.Addr) { s.admit(&net.UDPAddr{IP: a.AsSlice(), Port: 5353}) }

	maxBuckets, maxEntries := 0, 0
	for i := range sources {
		for range 3 {
			admit(v4(i))
		}
		clock.Add(100 * time.Microsecond)
		if i%1000 == 999 {
			maxBuckets = max(maxBuckets, s.limit.Len())
			maxEntries = max(maxEntries, s.drops.Len())
		}
	}
	if maxBuckets > maxSources {
		t.Errorf("the limiter held %d buckets, more than its bound %d", maxBuckets, maxSources)
	}
	if bound := ratelimit.DefaultMaxTracked + ratelimit.DefaultMaxOther; maxEntries > bound {
		t.Errorf("the drop log held %d entries, more than its bound %d", maxEntries, bound)
	}
	t.Logf("at most %d buckets and %d drop-log entries for %d sources, %d log lines", maxBuckets, maxEntries, sources, len(rec.matching("rate limiting")))

	clock.Add(time.Minute)
	admit(netip.MustParseAddr("192.0.2.1"))
	if n := s.drops.Len(); n != 0 {
		t.Errorf("the drop log holds %d entries a minute after the flood, want 0", n)
	}
	if n := s.limit.Len(); n > 1 {
		t.Errorf("the limiter holds %d buckets a minute after the flood, want at most 1", n)
	}
	ended := rec.matching("stopped rate limiting DNS queries over UDP from other sources")
	if len(ended) != 1 {
		t.Fatalf("%d summaries of the other sources, want 1", len(ended))
	}
	if v, _ := attr(ended[0], "sources_capped"); !v.Bool() {
		t.Errorf("the summary of more sources than counted does not say so: %v", ended[0])
	}
	if v, _ := attr(ended[0], "sources"); v.Int64() != int64(ratelimit.DefaultMaxOther) {
		t.Errorf("the summary counts %v other sources, want the bound %d", v, ratelimit.DefaultMaxOther)
	}
}
