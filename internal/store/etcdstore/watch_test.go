package etcdstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/store/storetest"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// liveEvents records what WatchLive reports.
type liveEvents struct {
	mu     sync.Mutex
	got    []string // "name=version", in the order reported
	notify chan struct{}
}

func newLiveEvents() *liveEvents { return &liveEvents{notify: make(chan struct{}, 1)} }

func (e *liveEvents) fn(name string, version int) {
	e.mu.Lock()
	e.got = append(e.got, fmt.Sprintf("%s=%d", name, version))
	e.mu.Unlock()
	select {
	case e.notify <- struct{}{}:
	default:
	}
}

func (e *liveEvents) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.got)
}

// waitFor waits until the reports since from end with want (in order, other
// reports may come between), and returns how many there are then.
func (e *liveEvents) waitFor(t *testing.T, from int, timeout time.Duration, want ...string) int {
	t.Helper()
	deadline := time.After(timeout)
	for {
		got := e.all()
		rest := got[min(from, len(got)):]
		i := 0
		for _, g := range rest {
			if i < len(want) && g == want[i] {
				i++
			}
		}
		if i == len(want) {
			return len(got)
		}
		select {
		case <-e.notify:
		case <-deadline:
			t.Fatalf("WatchLive reported %q after the first %d, want %q among them", rest, from, want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the loggers of several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestWatchLive: WatchLive reports every live version at start, then each
// change (a new version, a deleted pointer, one holding garbage), and goes
// on after the only member its client talks to is stopped and restarted:
// the change made meanwhile (through the other members) is reported, the
// outage is logged once and its end once. A watch started before a
// compaction ends with errCompacted.
func TestWatchLive(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t, etcdtest.Options{})
	writer := open(t, c, Options{})
	ctx := context.Background()
	put := func(name string) {
		t.Helper()
		if _, err := writer.PutCertificate(ctx, name, storetest.NewBundle(t, name)); err != nil {
			t.Fatal(err)
		}
	}
	put("b.example")
	put("a.example")
	put("a.example")

	// The watcher's client talks to member 0 only, so stopping it cuts
	// the watcher off while the cluster goes on.
	logs := &syncBuffer{}
	watcher := open(t, c, Options{
		Client:  newClient(t, c.Endpoints()[:1]),
		Prefix:  writer.Prefix(),
		Logger:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Timeout: time.Second,
	})
	ev := newLiveEvents()
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- watcher.WatchLiveWith(wctx, WatchOptions{Probe: 300 * time.Millisecond}, ev.fn) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("WatchLive = %v, want context.Canceled", err)
		}
		if t.Failed() {
			t.Logf("watcher's log:\n%s", logs)
		}
	}()

	n := ev.waitFor(t, 0, 10*time.Second, "a.example=2", "b.example=1")
	if got := ev.all()[:2]; !slices.Equal(got, []string{"a.example=2", "b.example=1"}) {
		t.Fatalf("initial reports = %q, want a.example=2, b.example=1 in name order", got)
	}

	put("a.example")
	put("c.example")
	n = ev.waitFor(t, n, 10*time.Second, "a.example=3", "c.example=1")
	if _, err := writer.cli.Delete(ctx, writer.liveKey("b.example")); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.cli.Put(ctx, writer.liveKey("c.example"), "junk"); err != nil {
		t.Fatal(err)
	}
	n = ev.waitFor(t, n, 10*time.Second, "b.example=0", "c.example=0")
	if !strings.Contains(logs.String(), "a live pointer holds no version") {
		t.Errorf("a live pointer holding junk was not logged")
	}
	for _, g := range ev.all() {
		if strings.Contains(g, "versions") {
			t.Errorf("reported a version key: %s", g)
		}
	}

	// Member 0 stops: the watcher hears nothing; the writer stores a
	// version through the other two.
	start := time.Now()
	c.Stop(0)
	t.Logf("member 0 stopped in %v", time.Since(start).Round(time.Millisecond))
	put("a.example")
	time.Sleep(time.Second) // several probes and attempts go unanswered
	c.Restart(0)
	ev.waitFor(t, n, 15*time.Second, "a.example=4")
	t.Logf("caught up %v after the stop", time.Since(start).Round(time.Millisecond))
	if k := strings.Count(logs.String(), "etcd does not answer"); k != 1 {
		t.Errorf("the outage was logged %d times, want once", k)
	}
	if k := strings.Count(logs.String(), "etcd answers again"); k != 1 {
		t.Errorf("the end of the outage was logged %d times, want once", k)
	}

	// A watch from a compacted revision ends with errCompacted (and
	// WatchLive reads everything again).
	resp, err := writer.cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writer.cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if err := watcher.watchLive(cctx, 1, time.Second, map[string]bool{}, func(string, int) {}); !errors.Is(err, errCompacted) {
		t.Errorf("a watch from revision 1 after a compaction = %v, want errCompacted", err)
	}
}

// TestWatchLiveQuiet: with no write in etcd after the watch starts, the
// watch's progress probes are still answered: it does not give up and
// read (and report) everything again, every few probes, for as long as
// the fleet is quiet.
func TestWatchLiveQuiet(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t, etcdtest.Options{})
	writer := open(t, c, Options{})
	ctx := context.Background()
	if _, err := writer.PutCertificate(ctx, "a.example", storetest.NewBundle(t, "a.example")); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	watcher := open(t, c, Options{Prefix: writer.Prefix(), Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ev := newLiveEvents()
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- watcher.WatchLiveWith(wctx, WatchOptions{Probe: 100 * time.Millisecond}, ev.fn) }()
	ev.waitFor(t, 0, 10*time.Second, "a.example=1")
	time.Sleep(3 * time.Second) // quiet for 30 probes: the property is that nothing happens
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchLive = %v, want context.Canceled", err)
	}
	if got := ev.all(); len(got) != 1 {
		t.Errorf("reports over a quiet 3s = %q, want the first one only", got)
	}
	if l := logs.String(); strings.Contains(l, "reading them again") || strings.Contains(l, "does not answer") || strings.Contains(l, "no answer") {
		t.Errorf("the watch gave up while etcd was quiet:\n%s", l)
	}
}
