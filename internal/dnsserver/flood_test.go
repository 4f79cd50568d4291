package dnsserver

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

var _ slog.Handler = (*logRecorder)(nil)

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}

// matching returns the records whose message contains substr.
func (r *logRecorder) matching(substr string) []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []slog.Record
	for _, rec := range r.recs {
		if strings.Contains(rec.Message, substr) {
			out = append(out, rec)
		}
	}
	return out
}

// attr returns the value of rec's attribute key.
func attr(rec slog.Record, key string) (slog.Value, bool) {
	var v slog.Value
	found := false
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v, found = a.Value, true
			return false
		}
		return true
	})
	return v, found
}

// show formats rec as level, message and attributes.
func show(rec slog.Record) string {
	out := rec.Level.String() + " " + rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		out += " " + a.String()
		return true
	})
	return out
}

// v4 returns the i-th address of 10.0.0.0/8.
func v4(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// TestFloodLogsEpisodes floods the UDP rate limit in-process (the path
// Serve's reader takes for every datagram) on a fake clock and counts the
// log lines: one when a source starts being limited, one summary when it
// stops (or every minute while it lasts), and for thousands of (spoofed)
// sources a bounded number of lines, with the rest summed up together.
func TestFloodLogsEpisodes(t *testing.T) {
	tests := []struct {
		name      string
		opts      Options
		flood     func(admit func(netip.Addr), clock *fakeClock)
		maxLines  int
		wantStart int // "rate limiting ...; excess is dropped" lines, one per source logged
	}{
		{
			name: "one source at 1000/s for 10s",
			flood: func(admit func(netip.Addr), clock *fakeClock) {
				for range 10_000 {
					admit(v4(1))
					clock.Add(time.Millisecond)
				}
			},
			maxLines:  2, // start, end
			wantStart: 1,
		},
		{
			name: "ten sources at 1000/s for 5s",
			flood: func(admit func(netip.Addr), clock *fakeClock) {
				for range 5_000 {
					for i := range 10 {
						admit(v4(i))
					}
					clock.Add(time.Millisecond)
				}
			},
			maxLines:  20,
			wantStart: 10,
		},
		{
			name: "one source at 200/s for 3 minutes",
			flood: func(admit func(netip.Addr), clock *fakeClock) {
				for range 36_000 {
					admit(v4(1))
					clock.Add(5 * time.Millisecond)
				}
			},
			maxLines:  5, // start, a summary per minute, end
			wantStart: 1,
		},
		{
			name: "10000 spoofed sources in 10s",
			opts: Options{RateLimit: 1, RateBurst: 1},
			flood: func(admit func(netip.Addr), clock *fakeClock) {
				for i := range 10_000 {
					for range 3 {
						admit(v4(i))
					}
					clock.Add(time.Millisecond)
				}
			},
			// 16 sources one by one and the others together: each a start
			// and an end.
			maxLines:  2 * (16 + 1),
			wantStart: 16,
		},
		{
			name: "10000 spoofed sources over 10 minutes",
			opts: Options{RateLimit: 1, RateBurst: 1},
			flood: func(admit func(netip.Addr), clock *fakeClock) {
				for i := range 10_000 {
					for range 3 {
						admit(v4(i))
					}
					clock.Add(60 * time.Millisecond)
				}
			},
			// At most 16 episodes open per minute; each minute window has
			// at most their starts and ends and two lines of the others'.
			maxLines:  11 * (2*16 + 2),
			wantStart: 10 * 16,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			rec := &logRecorder{}
			tt.opts.Logger = slog.New(rec)
			tt.opts.Now = clock.Now
			s := New(tt.opts)
			admit := func(a netip.Addr) {
				s.admit(&net.UDPAddr{IP: a.AsSlice(), Port: 5353})
			}
			tt.flood(admit, clock)
			// The flood stops; a query from elsewhere a minute later lets
			// the server notice that the episodes have ended.
			clock.Add(time.Minute)
			admit(netip.MustParseAddr("192.0.2.1"))

			lines := rec.matching("rate limiting")
			t.Logf("%d queries dropped, %d log lines", s.Dropped(), len(lines))
			if s.Dropped() == 0 {
				t.Fatal("nothing dropped: the flood did not exceed the limit")
			}
			if len(lines) > tt.maxLines {
				var first []string
				for _, r := range lines[:3] {
					first = append(first, show(r))
				}
				t.Errorf("%d log lines about rate limiting, want at most %d; the first:\n%s", len(lines), tt.maxLines, strings.Join(first, "\n"))
			}
			starts := rec.matching("rate limiting DNS queries over UDP; excess is dropped")
			if len(starts) != tt.wantStart {
				t.Errorf("%d lines say a source starts being limited, want %d", len(starts), tt.wantStart)
			}
			// Every drop is summed up once when the episodes end.
			var summed uint64
			for _, r := range rec.matching("stopped rate limiting DNS queries over UDP") {
				v, ok := attr(r, "dropped")
				if !ok {
					t.Errorf("summary %q has no dropped count", r.Message)
				}
				summed += v.Uint64()
			}
			if summed != s.Dropped() {
				t.Errorf("the end summaries count %d drops, want all %d", summed, s.Dropped())
			}
		})
	}
}

// TestServeSumsUpOnStop: over real UDP, a limited source is logged once,
// and the episode still open when Serve stops is summed up before the
// server says it stopped.
func TestServeSumsUpOnStop(t *testing.T) {
	clock := newFakeClock() // frozen: no tokens come back
	rec := &logRecorder{}
	s := New(Options{Logger: slog.New(rec), Now: clock.Now, RateLimit: 1, RateBurst: 1})
	s.SetAddrs("a.test.", netip.MustParseAddr("192.0.2.1"))
	pc, ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc, ln) }()
	<-s.Ready()

	flood := rawConn(t, "127.0.0.1:0", pc.LocalAddr().String())
	const queries = 20
	for i := range queries {
		if _, err := flood.Write(packed(t, uint16(i), dns.TypeA, nil)); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); s.Dropped() < queries-1; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d queries dropped, want %d", s.Dropped(), queries, queries-1)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}

	var got []string
	for _, r := range rec.matching("") {
		if r.Message == "DNS server serving" {
			continue // logged once serving, which may come after the first query
		}
		got = append(got, show(r))
	}
	want := []string{
		"WARN rate limiting DNS queries over UDP; excess is dropped source=127.0.0.1",
		"INFO stopped rate limiting DNS queries over UDP source=127.0.0.1 dropped=19 for=0s",
		"INFO DNS server stopped",
	}
	if g := strings.Join(got, "\n"); !strings.Contains(g, strings.Join(want, "\n")) {
		t.Errorf("log:\n%s\nwant it to contain:\n%s", g, strings.Join(want, "\n"))
	}
}
