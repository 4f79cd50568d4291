package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// expectKeys reads reports from ch until every key of want came (others
// may come too) and returns all it read.
func expectKeys(t *testing.T, ch <-chan string, timeout time.Duration, want ...string) []string {
	t.Helper()
	deadline := time.After(timeout)
	var got []string
	for {
		missing := slices.DeleteFunc(slices.Clone(want), func(k string) bool { return slices.Contains(got, k) })
		if len(missing) == 0 {
			return got
		}
		select {
		case k, ok := <-ch:
			if !ok {
				t.Fatalf("the channel closed after %q, before %q", got, missing)
			}
			got = append(got, k)
		case <-deadline:
			t.Fatalf("after %v WatchKeys reported %q, not %q", timeout, got, missing)
		}
	}
}

// TestWatchKeys: WatchKeys reports the keys at or below its prefix that
// are stored or deleted after it returns, and nothing else; a write made
// while the only member its client talks to is down is reported once it is
// back; the channel closes when ctx ends.
func TestWatchKeys(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t, etcdtest.Options{})
	writer := open(t, c, Options{})
	ctx := context.Background()
	put := func(key string) {
		t.Helper()
		if err := writer.Store(ctx, key, []byte("v-"+key)); err != nil {
			t.Fatal(err)
		}
	}
	put("acme/before")

	logs := &syncBuffer{}
	watcher := open(t, c, Options{
		Client:  newClient(t, c.Endpoints()[:1]),
		Prefix:  writer.Prefix(),
		Logger:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Timeout: time.Second,
	})
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := watcher.WatchKeysWith(wctx, "acme/", WatchOptions{Probe: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("watcher's log:\n%s", logs)
		}
	})

	put("other/z")
	put("acme-b/y") // a sibling of the prefix, not below it
	put("acme/x.key")
	put("acme/d/deep")
	if err := writer.Delete(ctx, "acme/before"); err != nil {
		t.Fatal(err)
	}
	got := expectKeys(t, ch, 10*time.Second, "acme/x.key", "acme/d/deep", "acme/before")
	for _, k := range got {
		if !strings.HasPrefix(k, "acme/") {
			t.Errorf("reported %q, outside the prefix acme/", k)
		}
	}
	if slices.Index(got, "acme/before") < slices.Index(got, "acme/d/deep") {
		t.Errorf("reports %q are not in the order of the writes", got)
	}

	// Member 0 stops: the watcher hears nothing while the writer stores
	// through the other two; the write is reported once it is back.
	c.Stop(0)
	put("acme/during")
	c.Restart(0)
	expectKeys(t, ch, 20*time.Second, "acme/during")

	cancel()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the channel is still open 10s after ctx ended")
		}
	}
}

// TestWatchKeysResync: a watch whose history was compacted away reads the
// keys again and reports every one, and those deleted meanwhile.
func TestWatchKeysResync(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t, etcdtest.Options{Members: 1})
	s := open(t, c, Options{})
	ctx := t.Context()
	for _, k := range []string{"p/a", "p/b"} {
		if err := s.Store(ctx, k, []byte("1")); err != nil {
			t.Fatal(err)
		}
	}
	w, err := s.keyWatch("p")
	if err != nil {
		t.Fatal(err)
	}
	known, rev, err := w.list(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Changes the watch will not see: its history goes.
	if err := s.Delete(ctx, "p/a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, "p/c", []byte("1")); err != nil {
		t.Fatal(err)
	}
	resp, err := s.cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 10)
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { w.follow(fctx, known, rev, time.Second, ch); close(done) }()
	expectKeys(t, ch, 10*time.Second, "p/a", "p/b", "p/c")
	cancel()
	<-done
}

// TestModify: Modify from two stores at once loses no change; the value of
// a secret is encrypted in etcd; fn sees nil for a missing key, and its
// error aborts the write; a secret under a key this node lacks is not
// replaced.
func TestModify(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t, etcdtest.Options{})
	s1 := open(t, c, Options{})
	s2 := open(t, c, Options{Prefix: s1.Prefix()})
	ctx := t.Context()
	const key, per = "counters/n.key", 15
	incr := func(old []byte) ([]byte, error) {
		n := 0
		if old != nil {
			var err error
			if n, err = strconv.Atoi(string(old)); err != nil {
				return nil, err
			}
		}
		return []byte(strconv.Itoa(n + 1)), nil
	}
	var wg sync.WaitGroup
	for _, s := range []*Store{s1, s2, s1, s2} {
		wg.Go(func() {
			for range per {
				if err := s.Modify(ctx, key, incr); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got, err := s2.Load(ctx, key)
	if err != nil || string(got) != strconv.Itoa(4*per) {
		t.Errorf("after %d increments from two stores: %q, %v", 4*per, got, err)
	}
	for k, v := range rawRange(t, s1.cli, s1.kvKey(key)) {
		if strings.Contains(string(v), strconv.Itoa(4*per)) {
			t.Errorf("%s holds the secret in clear: %q", k, v)
		}
	}

	var saw []byte
	stop := errors.New("stop")
	err = s1.Modify(ctx, "counters/none", func(old []byte) ([]byte, error) {
		saw = old
		return nil, stop
	})
	if !errors.Is(err, stop) || saw != nil {
		t.Errorf("Modify of a missing key: fn saw %q, returned %v; want nil and fn's error", saw, err)
	}
	if _, err := s1.Load(ctx, "counters/none"); err == nil {
		t.Error("a Modify whose fn failed wrote a value")
	}

	other := open(t, c, Options{Prefix: s1.Prefix(), Keys: mustKeys(t, keyLine("other"))})
	var km *KeyMismatchError
	err = other.Modify(ctx, key, func([]byte) ([]byte, error) { return []byte("x"), nil })
	if !errors.As(err, &km) {
		t.Errorf("Modify of a secret under a key this node lacks = %v, want a *KeyMismatchError", err)
	}
	if got, _ := s1.Load(ctx, key); string(got) != fmt.Sprint(4*per) {
		t.Errorf("the secret was replaced: %q", got)
	}
}
