package ratelimit

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied by NewDropLog to zero DropLogOptions fields.
const (
	// DefaultQuiet is how long a source must go without a drop for its
	// episode to end.
	DefaultQuiet = 10 * time.Second
	// DefaultReportEvery is the interval between summaries of an episode
	// that lasts, and the window in which at most MaxTracked episodes open.
	DefaultReportEvery = time.Minute
	// DefaultMaxTracked bounds the episodes logged one by one.
	DefaultMaxTracked = 16
	// DefaultMaxOther bounds the distinct other sources counted exactly.
	DefaultMaxOther = 1 << 14
)

// tickEvery is the least clock time between two looks for ended episodes
// and due summaries; Tick and Drop return at once in between.
const tickEvery = time.Second

// DropLogOptions configures a DropLog.
type DropLogOptions struct {
	// Logger receives the lines; nil discards them.
	Logger *slog.Logger
	// What names what is limited, as in "rate limiting <What>; excess is
	// dropped", e.g. "DNS queries over UDP".
	What string
	// Quiet is how long a source must go without a drop for its episode to
	// end. 0 or less means DefaultQuiet.
	Quiet time.Duration
	// ReportEvery is how often an episode that lasts is summed up, and the
	// window in which at most MaxTracked episodes are opened. 0 or less
	// means DefaultReportEvery.
	ReportEvery time.Duration
	// MaxTracked bounds the sources logged one by one; drops from any other
	// source are summed up together. 0 or less means DefaultMaxTracked.
	MaxTracked int
	// MaxOther bounds how many distinct other sources are counted (and
	// remembered) exactly. 0 or less means DefaultMaxOther.
	MaxOther int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DropLog turns the requests a Limiter drops into a bounded number of log
// lines, so that a flood cannot flood the log too.
//
// A source (keyed as by Key) that starts being limited opens an episode,
// logged with one warning. The episode lasts until the source has gone
// Quiet without a drop, then one line sums it up (the count dropped and how
// long it lasted); an episode that lasts is also summed up every
// ReportEvery. A Limiter alone cannot tell this: under a steady flood every
// token that comes back lets one request through, so "dropping since the
// last allowed request" restarts many times a second.
//
// Only MaxTracked episodes are logged one by one, and at most MaxTracked are
// opened per ReportEvery, so (spoofed) sources cannot multiply the lines:
// drops from every other source are summed up in one episode of their own,
// with the number of distinct sources (exact up to MaxOther). The lines are
// thus at most about 2×(MaxTracked+1) per ReportEvery, and the memory held is
// at most MaxTracked episodes and MaxOther addresses.
//
// A DropLog is safe for concurrent use. Drop and Tick do the periodic work
// as the clock moves; call Tick every second or so when no requests come, and
// Flush when the server stops.
type DropLog struct {
	log        *slog.Logger
	msgStart   string
	msgStill   string
	msgEnded   string
	msgOther   string
	msgOStill  string
	msgOEnded  string
	quiet      time.Duration
	every      time.Duration
	maxTracked int
	maxOther   int
	now        func() time.Time

	nextTick atomic.Int64 // UnixNano before which Tick has nothing to do

	mu          sync.Mutex
	eps         map[netip.Addr]*episode
	opened      int       // tracked episodes opened since windowStart
	windowStart time.Time // start of the current ReportEvery window
	other       episode   // the drops of untracked sources; active when dropped > 0
	otherSrcs   map[netip.Addr]struct{}
	otherCapped bool // more distinct other sources than MaxOther
}

// episode is a run of drops from one source (or from the other sources).
type episode struct {
	start, last, reported time.Time
	dropped               uint64
}

// NewDropLog returns a DropLog configured by opts.
func NewDropLog(opts DropLogOptions) *DropLog {
	d := &DropLog{
		log:        opts.Logger,
		quiet:      opts.Quiet,
		every:      opts.ReportEvery,
		maxTracked: opts.MaxTracked,
		maxOther:   opts.MaxOther,
		now:        opts.Now,
		eps:        make(map[netip.Addr]*episode),
		otherSrcs:  make(map[netip.Addr]struct{}),
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.quiet <= 0 {
		d.quiet = DefaultQuiet
	}
	if d.every <= 0 {
		d.every = DefaultReportEvery
	}
	if d.maxTracked <= 0 {
		d.maxTracked = DefaultMaxTracked
	}
	if d.maxOther <= 0 {
		d.maxOther = DefaultMaxOther
	}
	if d.now == nil {
		d.now = time.Now
	}
	what := opts.What
	if what == "" {
		what = "requests"
	}
	d.msgStart = "rate limiting " + what + "; excess is dropped"
	d.msgStill = "still rate limiting " + what
	d.msgEnded = "stopped rate limiting " + what
	d.msgOther = "rate limiting " + what + " from more sources than are logged one by one; their drops are summed up"
	d.msgOStill = "still rate limiting " + what + " from other sources"
	d.msgOEnded = "stopped rate limiting " + what + " from other sources"
	d.windowStart = d.now()
	return d
}

// Drop records one request from src that the Limiter dropped, logging the
// start of an episode and any summary that is due.
func (d *DropLog) Drop(src netip.Addr) {
	now := d.now()
	key := Key(src)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tickLocked(now)
	if e := d.eps[key]; e != nil {
		e.dropped++
		e.last = now
		return
	}
	if _, seen := d.otherSrcs[key]; !seen && len(d.eps) < d.maxTracked && d.opened < d.maxTracked {
		d.opened++
		d.eps[key] = &episode{start: now, last: now, reported: now, dropped: 1}
		d.log.Warn(d.msgStart, "source", sourceString(key))
		return
	}
	if d.other.dropped == 0 {
		d.other = episode{start: now, reported: now}
		d.log.Warn(d.msgOther, "logged_sources", d.maxTracked)
	}
	d.other.dropped++
	d.other.last = now
	if _, seen := d.otherSrcs[key]; !seen {
		if len(d.otherSrcs) < d.maxOther {
			d.otherSrcs[key] = struct{}{}
		} else {
			d.otherCapped = true
		}
	}
}

// Tick ends the episodes that have gone quiet and logs the summaries that
// are due. It does nothing until a second has passed since it last looked,
// so it is cheap to call for every request.
func (d *DropLog) Tick() {
	now := d.now()
	if now.UnixNano() < d.nextTick.Load() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tickLocked(now)
}

// Flush ends every episode now, logging its summary; for a server that
// stops.
func (d *DropLog) Flush() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for key, e := range d.eps {
		d.log.Info(d.msgEnded, "source", sourceString(key), "dropped", e.dropped, "for", lasted(e, e.last))
		delete(d.eps, key)
	}
	if d.other.dropped > 0 {
		d.endOtherLocked(d.other.last)
	}
}

// Len reports how many entries the DropLog holds: the episodes logged one
// by one and the other sources remembered.
func (d *DropLog) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.eps) + len(d.otherSrcs)
}

// tickLocked is Tick with d.mu held.
func (d *DropLog) tickLocked(now time.Time) {
	if now.UnixNano() < d.nextTick.Load() {
		return
	}
	d.nextTick.Store(now.Add(tickEvery).UnixNano())
	if now.Sub(d.windowStart) >= d.every {
		d.windowStart = now
		d.opened = 0
	}
	for key, e := range d.eps {
		switch {
		case now.Sub(e.last) >= d.quiet:
			d.log.Info(d.msgEnded, "source", sourceString(key), "dropped", e.dropped, "for", lasted(e, e.last))
			delete(d.eps, key)
		case now.Sub(e.reported) >= d.every:
			e.reported = now
			d.log.Warn(d.msgStill, "source", sourceString(key), "dropped", e.dropped, "for", lasted(e, now))
		}
	}
	if d.other.dropped == 0 {
		return
	}
	switch {
	case now.Sub(d.other.last) >= d.quiet:
		d.endOtherLocked(d.other.last)
	case now.Sub(d.other.reported) >= d.every:
		d.other.reported = now
		d.log.Warn(d.msgOStill, d.otherAttrs(now)...)
	}
}

// endOtherLocked logs the end of the other sources' episode and forgets
// them.
func (d *DropLog) endOtherLocked(end time.Time) {
	d.log.Info(d.msgOEnded, d.otherAttrs(end)...)
	d.other = episode{}
	clear(d.otherSrcs)
	d.otherCapped = false
}

func (d *DropLog) otherAttrs(now time.Time) []any {
	attrs := []any{"sources", len(d.otherSrcs), "dropped", d.other.dropped, "for", lasted(&d.other, now)}
	if d.otherCapped {
		attrs = append(attrs, "sources_capped", true) // more sources than counted
	}
	return attrs
}

// lasted is how long e has lasted at t, to the second.
func lasted(e *episode, t time.Time) time.Duration {
	return t.Sub(e.start).Round(time.Second)
}

// sourceString names a bucket key: the address, or for IPv6 its /64.
func sourceString(key netip.Addr) string {
	switch {
	case !key.IsValid():
		return "unknown"
	case key.Is6():
		return netip.PrefixFrom(key, 64).String()
	}
	return key.String()
}
