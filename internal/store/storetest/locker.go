package storetest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/store"
)

func runLocker(t *testing.T, h Harness) {
	t.Run("TryLockExcludes", func(t *testing.T) { testTryLockExcludes(t, h) })
	t.Run("LockSerialises", func(t *testing.T) { testLockSerialises(t, h) })
	t.Run("LockWaitsForRelease", func(t *testing.T) { testLockWaitsForRelease(t, h) })
	t.Run("LockContext", func(t *testing.T) { testLockContext(t, h) })
	t.Run("BadNames", func(t *testing.T) { testLockBadNames(t, h) })
}

// testTryLockExcludes: a held lock is refused with ErrLocked to another
// goroutine of the same handle and to a peer; other names are independent;
// releasing twice is harmless; after release both can take it.
func testTryLockExcludes(t *testing.T, h Harness) {
	ctx := context.Background()
	b := h.New(t)
	p := h.Peer(t, b)
	unlock, err := b.Lock(ctx, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		b    Backend
	}{{"same handle, other goroutine", b}, {"peer", p}} {
		t.Run(tt.name, func(t *testing.T) {
			errc := make(chan error, 1)
			go func() {
				_, err := tt.b.TryLock(ctx, "example.com")
				errc <- err
			}()
			if err := <-errc; !errors.Is(err, store.ErrLocked) {
				t.Errorf("TryLock while held: err = %v, want ErrLocked", err)
			}
			u, err := tt.b.TryLock(ctx, "other.example")
			if err != nil {
				t.Fatalf("TryLock of another name: %v", err)
			}
			if err := u(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if err := unlock(); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	if err := unlock(); err != nil {
		t.Errorf("second unlock: %v", err)
	}
	for _, x := range []Backend{b, p} {
		u, err := x.TryLock(ctx, "example.com")
		if err != nil {
			t.Fatalf("TryLock after unlock: %v", err)
		}
		if err := u(); err != nil {
			t.Fatal(err)
		}
	}
}

// testLockSerialises: goroutines on two handles taking one lock in turn
// are never inside together, and nobody is starved.
func testLockSerialises(t *testing.T, h Harness) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := h.New(t)
	hs := [2]Backend{b, h.Peer(t, b)}
	var inside, entries atomic.Int32
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			for range 4 {
				unlock, err := hs[i%2].Lock(ctx, "shared")
				if err != nil {
					t.Error(err)
					return
				}
				if n := inside.Add(1); n != 1 {
					t.Errorf("%d holders at once", n)
				}
				time.Sleep(time.Millisecond)
				entries.Add(1)
				inside.Add(-1)
				if err := unlock(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if got := entries.Load(); got != 24 {
		t.Errorf("entries = %d, want 24", got)
	}
}

// testLockWaitsForRelease: a peer's Lock waits while the lock is held and
// gets it as soon as it is released (not after some lease or timeout).
func testLockWaitsForRelease(t *testing.T, h Harness) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := h.New(t)
	p := h.Peer(t, b)
	unlock, err := b.Lock(ctx, "n")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	var released atomic.Int64
	go func() {
		u, err := p.Lock(ctx, "n")
		if err == nil {
			if released.Load() == 0 {
				err = errors.New("the peer got the lock while it was held")
			}
			_ = u()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("the peer's Lock returned while the lock was held: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	released.Store(time.Now().UnixNano())
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(time.Unix(0, released.Load())); waited > 2*time.Second {
		t.Errorf("the peer got the lock %v after the release; want it at once", waited)
	}
}

// testLockContext: Lock on a held lock gives up when ctx is done, on the
// same handle and on a peer, and leaves nothing behind: the lock can be
// taken once released.
func testLockContext(t *testing.T, h Harness) {
	b := h.New(t)
	p := h.Peer(t, b)
	unlock, err := b.Lock(context.Background(), "n")
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []Backend{b, p} {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		if _, err := x.Lock(ctx, "n"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Lock while held: err = %v, want DeadlineExceeded", err)
		}
		cancel()
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	for _, x := range []Backend{p, b} {
		u, err := x.TryLock(context.Background(), "n")
		if err != nil {
			t.Fatalf("TryLock after a timed-out waiter: %v", err)
		}
		if err := u(); err != nil {
			t.Fatal(err)
		}
	}
}

func testLockBadNames(t *testing.T, h Harness) {
	b := h.New(t)
	for _, name := range []string{"", ".hidden", "-x", "a/b", "../x", `a\b`, "a b"} {
		if _, err := b.Lock(context.Background(), name); err == nil {
			t.Errorf("Lock accepted %q", name)
		}
		if _, err := b.TryLock(context.Background(), name); err == nil {
			t.Errorf("TryLock accepted %q", name)
		}
	}
}
