package agent

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// heldAddrs returns the addresses b holds, for checks from inside the
// package.
func heldAddrs(b *bindSet) map[string]bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]bool{}
	for a, h := range b.held {
		if h {
			out[a] = true
		}
	}
	return out
}

// mustAcquire acquires addrs within a second or fails the test.
func mustAcquire(t *testing.T, b *bindSet, addrs ...string) func() {
	t.Helper()
	select {
	case r := <-acquireAsync(t.Context(), b, addrs...):
		if r.err != nil {
			t.Fatalf("acquire %v: %v (held: %v)", addrs, r.err, heldAddrs(b))
		}
		return r.release
	case <-time.After(time.Second):
		t.Fatalf("acquire %v still waits after a second (held: %v)", addrs, heldAddrs(b))
	}
	return nil
}

// acquired is the outcome of one acquire.
type acquired struct {
	release func()
	err     error
}

// acquireAsync acquires addrs in a goroutine and reports the outcome on
// the returned channel.
func acquireAsync(ctx context.Context, b *bindSet, addrs ...string) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		release, err := b.acquire(ctx, addrs)
		ch <- acquired{release, err}
	}()
	return ch
}

// waiting is how long an acquire that must wait is watched, and released
// how long one that must go ahead may take. The tests run in real time,
// not in a synctest bubble, so that an implementation blocking on a mutex
// fails them instead of hanging them.
const (
	waiting  = 100 * time.Millisecond
	released = 5 * time.Second
)

// stillWaiting fails if the acquire reporting on ch returns within waiting.
func stillWaiting(t *testing.T, ch <-chan acquired, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s did not wait (err %v)", what, r.err)
	case <-time.After(waiting):
	}
}

// goesAhead waits up to released for the acquire reporting on ch and
// returns its outcome, failing with why when it does not come.
func goesAhead(t *testing.T, ch <-chan acquired, why string) acquired {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(released):
		t.Fatalf("%s (still waiting after %v)", why, released)
	}
	return acquired{}
}

// A renewal whose paths list one address twice takes it once: it does not
// wait on itself, holds the address until it releases, and frees it then.
func TestBindSetDuplicatesDoNotSelfBlock(t *testing.T) {
	t.Parallel()
	b := newBindSet()
	r := goesAhead(t, acquireAsync(t.Context(), b, ":80", ":80", ":443", ":80"), "acquire [:80 :80 :443 :80] blocks on its own addresses")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if h := heldAddrs(b); len(h) != 2 || !h[":80"] || !h[":443"] {
		t.Errorf("held %v, want :80 and :443", h)
	}
	// Another renewal on :80 waits while the first holds it.
	other := acquireAsync(t.Context(), b, ":80")
	stillWaiting(t, other, "a second renewal on :80 while the first held it")
	r.release()
	o := goesAhead(t, other, "the waiter on :80 was not released when the holder of [:80 :80 :443 :80] released")
	if o.err != nil {
		t.Fatal(o.err)
	}
	o.release()
	if h := heldAddrs(b); len(h) != 0 {
		t.Errorf("held after every release: %v", h)
	}
}

// Two renewals taking the same two addresses in opposite orders, again and
// again from several goroutines, never deadlock and never hold an address
// at once. A deadlock fails the test at a deadline (the waiters' context
// ends then) instead of hanging it.
func TestBindSetOppositeOrderNoDeadlock(t *testing.T) {
	const iterations = 5000
	b := newBindSet()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	orders := [][]string{
		{"a", "b"},
		{"b", "a"},
		{"a", "b"},
		{"b", "a"},
		{"b", "a", "a", "b"}, // repeats too
		{"a"},
		{"b"},
	}
	// inUse counts the holders of each address: never more than one.
	inUse := map[string]*atomic.Int32{"a": {}, "b": {}}
	var overlaps atomic.Int32
	done := make([]atomic.Int64, len(orders))
	var wg sync.WaitGroup
	errs := make(chan error, len(orders))
	start := time.Now()
	for g, addrs := range orders {
		wg.Go(func() {
			for range iterations {
				release, err := b.acquire(ctx, addrs)
				if err != nil {
					errs <- fmt.Errorf("goroutine %d %v: %w after %d of %d acquisitions", g, addrs, err, done[g].Load(), iterations)
					return
				}
				seen := map[string]bool{}
				for _, a := range addrs {
					if !seen[a] {
						seen[a] = true
						if inUse[a].Add(1) != 1 {
							overlaps.Add(1)
						}
					}
				}
				runtime.Gosched() // let another goroutine run while this one holds
				for a := range seen {
					inUse[a].Add(-1)
				}
				release()
				done[g].Add(1)
			}
		})
	}
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(45 * time.Second):
		// The waiters did not even return at their context's deadline.
		t.Fatalf("deadlock: the goroutines are still blocked 15s after their deadline (held: %v)", heldAddrs(b))
	}
	close(errs)
	for err := range errs {
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("deadlock: %v (held: %v)", err, heldAddrs(b))
		} else {
			t.Error(err)
		}
	}
	if n := overlaps.Load(); n > 0 {
		t.Errorf("%d times two goroutines held one address at once", n)
	}
	if h := heldAddrs(b); len(h) != 0 {
		t.Errorf("held after every release: %v", h)
	}
	t.Logf("%d goroutines x %d acquisitions in %v", len(orders), iterations, time.Since(start).Round(time.Millisecond))
}

// A waiter holds nothing while it waits (all or nothing: not even an
// address that sorts before the one it waits for), and takes its
// addresses when the holder releases them. One release wakes every waiter
// it unblocks.
func TestBindSetWaiterReleasedByHolder(t *testing.T) {
	t.Parallel()
	b := newBindSet()
	holder := mustAcquire(t, b, "m", "n")
	wantM := acquireAsync(t.Context(), b, "z", "m", "a")
	wantN := acquireAsync(t.Context(), b, "n")
	stillWaiting(t, wantM, "[z m a] while m is held")
	stillWaiting(t, wantN, "[n] while n is held")
	if h := heldAddrs(b); len(h) != 2 || !h["m"] || !h["n"] {
		t.Errorf("held while [z m a] waits: %v, want m and n only", h)
	}
	mustAcquire(t, b, "a", "z")()
	holder()
	for name, ch := range map[string]<-chan acquired{"[z m a]": wantM, "[n]": wantN} {
		r := goesAhead(t, ch, name+" was not released when the holder of [m n] released")
		if r.err != nil {
			t.Fatalf("%s: %v", name, r.err)
		}
		defer r.release()
	}
	if h := heldAddrs(b); len(h) != 4 {
		t.Errorf("held %v, want a, m, n and z", h)
	}
}

// A waiter whose context ends returns the context's error and holds
// nothing afterwards.
func TestBindSetWaiterCancelled(t *testing.T) {
	t.Parallel()
	b := newBindSet()
	holder := mustAcquire(t, b, "b")
	ctx, cancel := context.WithCancel(t.Context())
	waiter := acquireAsync(ctx, b, "c", "b", "a")
	stillWaiting(t, waiter, "[c b a] while b is held")
	if h := heldAddrs(b); len(h) != 1 || !h["b"] {
		t.Errorf("held while [c b a] waits: %v, want b only", h)
	}
	cancel()
	r := goesAhead(t, waiter, "the waiter did not return when its context was cancelled")
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled waiter: err %v, want context.Canceled", r.err)
	}
	if r.release != nil {
		t.Error("a cancelled waiter returned a release function")
	}
	if h := heldAddrs(b); len(h) != 1 || !h["b"] {
		t.Errorf("held after the cancelled wait: %v, want b only", h)
	}
	// Its other addresses are free for others.
	mustAcquire(t, b, "a", "c")()

	// A deadline ends a wait the same way.
	dctx, dcancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer dcancel()
	r = goesAhead(t, acquireAsync(dctx, b, "a", "b"), "a waiter did not return at its context's deadline")
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("waiting past the deadline: err %v, want context.DeadlineExceeded", r.err)
	}
	if h := heldAddrs(b); len(h) != 1 || !h["b"] {
		t.Errorf("held after the wait that timed out: %v, want b only", h)
	}
	holder()
	if h := heldAddrs(b); len(h) != 0 {
		t.Errorf("held after every release: %v", h)
	}
	mustAcquire(t, b, "a", "b", "c")()
}

// Renewals on disjoint addresses, or none, do not wait for one another.
func TestBindSetDisjointRunAtOnce(t *testing.T) {
	t.Parallel()
	b := newBindSet()
	var releases []func()
	for _, set := range [][]string{{"a"}, {"b", "c"}, {"d", "d"}, {}, nil, {"e"}} {
		releases = append(releases, mustAcquire(t, b, set...))
	}
	if h := heldAddrs(b); len(h) != 5 {
		t.Errorf("held %v, want a to e", h)
	}
	// An empty set never waits, even while everything is held.
	mustAcquire(t, b)()
	for _, r := range releases {
		r()
	}

	// From goroutines acquiring at once, each holding its address until
	// all have taken theirs, so that they are sure to overlap.
	const n = 8
	var all sync.WaitGroup
	all.Add(n)
	ready := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for i := range n {
		wg.Go(func() {
			release, err := b.acquire(ctx, []string{fmt.Sprint("addr", i)})
			if err != nil {
				errs <- err
				all.Done()
				return
			}
			defer release()
			all.Done()
			select {
			case <-ready:
			case <-ctx.Done():
				errs <- fmt.Errorf("addr%d: the others did not take their disjoint addresses at the same time: %w", i, ctx.Err())
			}
		})
	}
	all.Wait()
	close(ready)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if h := heldAddrs(b); len(h) != 0 {
		t.Errorf("held after every release: %v", h)
	}
}
