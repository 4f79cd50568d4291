package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// logRecorder is a slog.Handler that keeps every record as one line.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

var _ slog.Handler = (*logRecorder)(nil)

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Level.String() + " " + rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	return nil
}

// take returns the lines logged since the last call, sorted (episodes that
// end together are logged in map order).
func (r *logRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.lines
	r.lines = nil
	slices.Sort(out)
	return out
}

// dlStep is one call on a DropLog after advancing the clock by advance:
// Drop(src), or Tick or Flush when src is "tick" or "flush".
type dlStep struct {
	advance time.Duration
	src     string
	want    []string // the lines logged, in any order
	wantLen int      // Len() afterwards
}

func TestDropLog(t *testing.T) {
	const (
		start  = "WARN rate limiting things; excess is dropped"
		still  = "WARN still rate limiting things"
		ended  = "INFO stopped rate limiting things"
		others = "WARN rate limiting things from more sources than are logged one by one; their drops are summed up"
		oEnded = "INFO stopped rate limiting things from other sources"
		oStill = "WARN still rate limiting things from other sources"
	)
	tests := []struct {
		name  string
		opts  DropLogOptions
		steps []dlStep
	}{
		{
			name: "one line when a source starts, summaries while it lasts, one when it ends",
			steps: []dlStep{
				{src: "192.0.2.1", want: []string{start + " source=192.0.2.1"}, wantLen: 1},
				{advance: time.Millisecond, src: "192.0.2.1", wantLen: 1},
				{advance: 9 * time.Second, src: "192.0.2.1", wantLen: 1},
				{advance: 9 * time.Second, src: "192.0.2.1", wantLen: 1},
				{advance: 9 * time.Second, src: "192.0.2.1", wantLen: 1},
				{advance: 9 * time.Second, src: "192.0.2.1", wantLen: 1},
				{advance: 9 * time.Second, src: "192.0.2.1", wantLen: 1},
				{advance: 9 * time.Second, src: "192.0.2.1", wantLen: 1},
				{advance: 6 * time.Second, src: "tick", want: []string{still + " source=192.0.2.1 dropped=8 for=1m0s"}, wantLen: 1},
				{advance: 3 * time.Second, src: "tick", wantLen: 1},
				{advance: time.Second, src: "tick", want: []string{ended + " source=192.0.2.1 dropped=8 for=54s"}},
				{advance: time.Second, src: "192.0.2.1", want: []string{start + " source=192.0.2.1"}, wantLen: 1},
			},
		},
		{
			name: "IPv6 sources by /64, IPv4-mapped as IPv4",
			steps: []dlStep{
				{src: "2001:db8:1:1::1", want: []string{start + " source=2001:db8:1:1::/64"}, wantLen: 1},
				{src: "2001:db8:1:1:ffff::2", wantLen: 1},
				{src: "::ffff:192.0.2.1", want: []string{start + " source=192.0.2.1"}, wantLen: 2},
				{src: "192.0.2.1", wantLen: 2},
				{advance: DefaultQuiet, src: "tick", want: []string{
					ended + " source=192.0.2.1 dropped=2 for=0s",
					ended + " source=2001:db8:1:1::/64 dropped=2 for=0s",
				}},
			},
		},
		{
			name: "sources beyond MaxTracked are summed up together",
			opts: DropLogOptions{MaxTracked: 2},
			steps: []dlStep{
				{src: "192.0.2.1", want: []string{start + " source=192.0.2.1"}, wantLen: 1},
				{src: "192.0.2.2", want: []string{start + " source=192.0.2.2"}, wantLen: 2},
				{src: "192.0.2.3", want: []string{others + " logged_sources=2"}, wantLen: 3},
				{src: "192.0.2.4", wantLen: 4},
				{advance: time.Second, src: "192.0.2.3", wantLen: 4},
				{advance: time.Minute, src: "tick", want: []string{
					ended + " source=192.0.2.1 dropped=1 for=0s",
					ended + " source=192.0.2.2 dropped=1 for=0s",
					oEnded + " sources=2 dropped=3 for=1s",
				}},
			},
		},
		{
			name: "the others are summed up every ReportEvery while they last",
			opts: DropLogOptions{MaxTracked: 1, Quiet: 2 * time.Minute, ReportEvery: time.Minute},
			steps: []dlStep{
				{src: "192.0.2.1", want: []string{start + " source=192.0.2.1"}, wantLen: 1},
				{src: "192.0.2.2", want: []string{others + " logged_sources=1"}, wantLen: 2},
				{advance: 5 * time.Second, src: "192.0.2.1", wantLen: 2},
				{advance: 5 * time.Second, src: "192.0.2.2", wantLen: 2},
				{advance: 50 * time.Second, src: "192.0.2.2", want: []string{
					still + " source=192.0.2.1 dropped=2 for=1m0s",
					oStill + " sources=1 dropped=2 for=1m0s",
				}, wantLen: 2},
			},
		},
		{
			name: "at most MaxTracked episodes open per ReportEvery",
			opts: DropLogOptions{MaxTracked: 1, Quiet: time.Second, ReportEvery: time.Minute},
			steps: []dlStep{
				{src: "192.0.2.1", want: []string{start + " source=192.0.2.1"}, wantLen: 1},
				{advance: time.Second, src: "tick", want: []string{ended + " source=192.0.2.1 dropped=1 for=0s"}},
				{advance: time.Second, src: "192.0.2.2", want: []string{others + " logged_sources=1"}, wantLen: 1},
				{advance: time.Second, src: "tick", want: []string{oEnded + " sources=1 dropped=1 for=0s"}},
				{advance: 57 * time.Second, src: "192.0.2.3", want: []string{start + " source=192.0.2.3"}, wantLen: 1},
			},
		},
		{
			name: "distinct other sources are counted up to MaxOther",
			opts: DropLogOptions{MaxTracked: 1, MaxOther: 2},
			steps: []dlStep{
				{src: "192.0.2.1", want: []string{start + " source=192.0.2.1"}, wantLen: 1},
				{src: "192.0.2.2", want: []string{others + " logged_sources=1"}, wantLen: 2},
				{src: "192.0.2.3", wantLen: 3},
				{src: "192.0.2.4", wantLen: 3},
				{src: "192.0.2.2", wantLen: 3},
				{src: "flush", want: []string{
					ended + " source=192.0.2.1 dropped=1 for=0s",
					oEnded + " sources=2 dropped=4 for=0s sources_capped=true",
				}},
			},
		},
		{
			name: "Tick looks at most once a second",
			opts: DropLogOptions{Quiet: 500 * time.Millisecond},
			steps: []dlStep{
				{src: "192.0.2.1", want: []string{start + " source=192.0.2.1"}, wantLen: 1},
				{advance: 600 * time.Millisecond, src: "tick", wantLen: 1},
				{advance: 400 * time.Millisecond, src: "tick", want: []string{ended + " source=192.0.2.1 dropped=1 for=0s"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			rec := &logRecorder{}
			tt.opts.Logger = slog.New(rec)
			tt.opts.What = "things"
			tt.opts.Now = clock.Now
			d := NewDropLog(tt.opts)
			for i, st := range tt.steps {
				clock.Add(st.advance)
				switch st.src {
				case "tick":
					d.Tick()
				case "flush":
					d.Flush()
				default:
					d.Drop(netip.MustParseAddr(st.src))
				}
				slices.Sort(st.want)
				if got := rec.take(); !slices.Equal(got, st.want) {
					t.Errorf("step %d (%s): logged %q, want %q", i, st.src, got, st.want)
				}
				if got := d.Len(); got != st.wantLen {
					t.Errorf("step %d (%s): Len() = %d, want %d", i, st.src, got, st.wantLen)
				}
			}
		})
	}
}

// TestDropLogFlood: many sources for many minutes give a bounded number of
// lines and entries.
func TestDropLogFlood(t *testing.T) {
	clock := newFakeClock()
	rec := &logRecorder{}
	d := NewDropLog(DropLogOptions{Logger: slog.New(rec), Now: clock.Now, MaxTracked: 4, MaxOther: 100})
	const minutes = 30
	maxLen := 0
	for i := range minutes * 6000 {
		d.Drop(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		clock.Add(10 * time.Millisecond)
		maxLen = max(maxLen, d.Len())
	}
	clock.Add(time.Minute)
	d.Tick()
	lines := rec.take()
	// Per minute at most 4 episodes open and end, and the others are
	// summed up once; they start and end once.
	if bound := minutes*(2*4+1) + 2*4 + 2; len(lines) > bound {
		t.Errorf("%d lines, want at most %d", len(lines), bound)
	}
	if maxLen > 4+100 {
		t.Errorf("Len() reached %d, more than MaxTracked+MaxOther = 104", maxLen)
	}
	if d.Len() != 0 {
		t.Errorf("Len() = %d after the flood, want 0", d.Len())
	}
	t.Logf("%d drops from as many sources in %d minutes: %d lines", minutes*6000, minutes, len(lines))
}

func TestDropLogDefaults(t *testing.T) {
	d := NewDropLog(DropLogOptions{})
	if d.quiet != DefaultQuiet || d.every != DefaultReportEvery || d.maxTracked != DefaultMaxTracked ||
		d.maxOther != DefaultMaxOther || d.now == nil || d.log == nil {
		t.Errorf("NewDropLog with zero fields: %+v", d)
	}
	d.Drop(netip.MustParseAddr("192.0.2.1")) // discarded, no panic
	d.Flush()
}

func TestDropLogConcurrent(t *testing.T) {
	clock := newFakeClock()
	rec := &logRecorder{}
	d := NewDropLog(DropLogOptions{Logger: slog.New(rec), Now: clock.Now})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				d.Drop(netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", g)))
				if i%50 == 0 {
					clock.Add(time.Second)
					d.Tick()
				}
			}
		})
	}
	wg.Wait()
	d.Flush()
	// Every episode that started has ended, once.
	starts, ends := 0, 0
	for _, l := range rec.take() {
		switch {
		case strings.HasPrefix(l, "WARN rate limiting requests; excess is dropped"):
			starts++
		case strings.HasPrefix(l, "INFO stopped rate limiting requests source="):
			ends++
		}
	}
	if starts == 0 || starts != ends {
		t.Errorf("%d episodes started and %d ended, want as many and some", starts, ends)
	}
	if d.Len() != 0 {
		t.Errorf("Len() = %d after Flush, want 0", d.Len())
	}
}
