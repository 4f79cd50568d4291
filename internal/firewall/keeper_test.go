package firewall

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
)

// fakeBackend records what it is asked to do and keeps the open windows.
type fakeBackend struct {
	mu                sync.Mutex
	calls             []string
	open              map[int]Family
	checkErr, openErr error
	sweeps            int
}

var _ Backend = (*fakeBackend)(nil)

func newFake() *fakeBackend { return &fakeBackend{open: map[int]Family{}} }

func (f *fakeBackend) Name() string { return "fake" }
func (f *fakeBackend) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}
func (f *fakeBackend) Check(_ context.Context, w Window) error {
	f.record("check " + w.String())
	return f.checkErr
}
func (f *fakeBackend) Open(_ context.Context, w Window) error {
	f.record("open " + w.String())
	if f.openErr != nil {
		return f.openErr
	}
	f.mu.Lock()
	f.open[w.Port] = f.open[w.Port].Union(w.Family)
	f.mu.Unlock()
	return nil
}
func (f *fakeBackend) Close(_ context.Context, w Window) error {
	f.record("close " + w.String())
	f.mu.Lock()
	if rest := f.open[w.Port].Minus(w.Family); rest != "" {
		f.open[w.Port] = rest
	} else {
		delete(f.open, w.Port)
	}
	f.mu.Unlock()
	return nil
}
func (f *fakeBackend) Status(context.Context) ([]Hole, error) { return nil, nil }
func (f *fakeBackend) Sweep(_ context.Context, all bool) error {
	f.record(fmt.Sprintf("sweep all=%v", all))
	f.mu.Lock()
	f.sweeps++
	f.mu.Unlock()
	return nil
}
func (f *fakeBackend) isOpen(port int) Family {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open[port]
}

// world is one state directory shared by several simulated processes.
type world struct {
	t     *testing.T
	fs    *store.FS
	b     *fakeBackend
	now   time.Time
	alive map[int]bool
	mu    sync.Mutex
}

func newWorld(t *testing.T) *world {
	fs, err := store.NewFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &world{t: t, fs: fs, b: newFake(), now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), alive: map[int]bool{}}
}

// process returns the Keeper of a simulated process with pid.
func (w *world) process(pid int) *Keeper {
	w.mu.Lock()
	w.alive[pid] = true
	w.mu.Unlock()
	k, err := NewKeeper(KeeperOptions{Backend: w.b, Store: w.fs, Locker: w.fs, PID: pid,
		Now:   func() time.Time { w.mu.Lock(); defer w.mu.Unlock(); return w.now },
		Alive: func(pid int) bool { w.mu.Lock(); defer w.mu.Unlock(); return w.alive[pid] }})
	if err != nil {
		w.t.Fatal(err)
	}
	return k
}

func (w *world) kill(pid int) { w.mu.Lock(); w.alive[pid] = false; w.mu.Unlock() }

// TestKeeperCounts: two processes hold the same port; the first to close
// leaves it open for the other, the last closes it. Families are counted
// separately.
func TestKeeperCounts(t *testing.T) {
	w := newWorld(t)
	a, b := w.process(101), w.process(202)
	ctx := t.Context()
	win := Window{Port: 80, Family: Inet, Timeout: time.Minute}
	la, err := a.Open(ctx, win)
	if err != nil {
		t.Fatal(err)
	}
	win4 := win
	win4.Family = IPv4
	lb, err := b.Open(ctx, win4)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx, la); err != nil {
		t.Fatal(err)
	}
	if got := w.b.isOpen(80); got != IPv4 {
		t.Errorf("after the first holder closed, open = %q, want ip (the second still holds it)", got)
	}
	if err := b.Close(ctx, lb); err != nil {
		t.Fatal(err)
	}
	if got := w.b.isOpen(80); got != "" {
		t.Errorf("after both closed, open = %q", got)
	}
	want := []string{"open 80/tcp (inet)", "open 80/tcp (ip)", "close 80/tcp (ip6)", "close 80/tcp (ip)"}
	if !slices.Equal(w.b.calls, want) {
		t.Errorf("backend calls %q, want %q", w.b.calls, want)
	}
	if keys, _ := w.fs.List(ctx, leasePrefix); len(keys) != 0 {
		t.Errorf("leases left: %v", keys)
	}
}

// TestKeeperDeadHolders: a lease of a killed process, or one past its
// deadline, does not keep a port open; the sweep runs only when no live
// lease is left.
func TestKeeperDeadHolders(t *testing.T) {
	tests := []struct {
		name string
		end  func(w *world)
	}{
		{"holder killed", func(w *world) { w.kill(101) }},
		{"deadline passed", func(w *world) { w.now = w.now.Add(2 * time.Minute) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			ctx := t.Context()
			win := Window{Port: 443, Family: Inet, Timeout: time.Minute}
			if _, err := w.process(101).Open(ctx, win); err != nil {
				t.Fatal(err)
			}
			c := w.process(303)
			if err := c.Check(ctx, win); err != nil {
				t.Fatal(err)
			}
			if w.b.sweeps != 0 {
				t.Fatalf("swept while process 101 holds a live window")
			}
			tc.end(w)
			d := w.process(404)
			if err := d.Check(ctx, win); err != nil {
				t.Fatal(err)
			}
			if w.b.sweeps != 1 {
				t.Errorf("sweeps = %d, want 1 once the holder is gone", w.b.sweeps)
			}
			l, err := d.Open(ctx, win)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Close(ctx, l); err != nil {
				t.Fatal(err)
			}
			if got := w.b.isOpen(443); got != "" {
				t.Errorf("a dead lease kept the port open: %q", got)
			}
		})
	}
}

// TestKeeperCloseAll closes every holder's window and forgets the leases.
func TestKeeperCloseAll(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	for i, port := range []int{80, 443} {
		if _, err := w.process(100+i).Open(ctx, Window{Port: port, Family: Inet, Timeout: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	k := w.process(999)
	_, leases, err := k.Status(ctx)
	if err != nil || len(leases) != 2 {
		t.Fatalf("Status leases = %v, %v", leases, err)
	}
	if err := k.CloseAll(ctx); err != nil {
		t.Fatal(err)
	}
	if w.b.isOpen(80) != "" || w.b.isOpen(443) != "" {
		t.Errorf("still open: %v", w.b.open)
	}
	if _, leases, _ := k.Status(ctx); len(leases) != 0 {
		t.Errorf("leases left: %v", leases)
	}
}

// TestKeeperOpenFails: a backend that cannot open leaves no lease.
func TestKeeperOpenFails(t *testing.T) {
	w := newWorld(t)
	w.b.openErr = errors.New("boom")
	if _, err := w.process(1).Open(t.Context(), Window{Port: 80, Family: Inet, Timeout: time.Minute}); err == nil {
		t.Fatal("Open succeeded")
	}
	if keys, _ := w.fs.List(t.Context(), leasePrefix); len(keys) != 0 {
		t.Errorf("leases left: %v", keys)
	}
}

// fakeSolver records the order of calls relative to the backend.
type fakeSolver struct {
	typ   string
	log   func(string)
	err   error
	calls []string
}

func (s *fakeSolver) Type() string { return s.typ }
func (s *fakeSolver) Check(context.Context, ident.Identifier) error {
	s.log("inner check")
	return s.err
}
func (s *fakeSolver) Present(context.Context, solve.Challenge) error {
	s.log("inner present")
	return s.err
}
func (s *fakeSolver) CleanUp(context.Context, solve.Challenge) error {
	s.log("inner cleanup")
	return nil
}

// TestSolver: the window opens before the inner Present and closes after
// the inner CleanUp, for the family the identifier needs, also when the
// renewal's context is already cancelled.
func TestSolver(t *testing.T) {
	tests := []struct {
		name   string
		id     string
		family Family
		want   string // the window
		err    string // Check's error
	}{
		{"dns name", "fw.detour.test", Inet, "80/tcp (inet)", ""},
		{"ipv4 address", "192.0.2.7", Inet, "80/tcp (ip)", ""},
		{"ipv6 address", "2001:db8::7", "", "80/tcp (ip6)", ""},
		{"ipv4 listener, name", "fw.detour.test", IPv4, "80/tcp (ip)", ""},
		{"ipv4 listener, ipv6 address", "2001:db8::7", IPv4, "", "serves ip only"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			var order []string
			var mu sync.Mutex
			logf := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
			inner := &fakeSolver{typ: solve.HTTP01, log: logf}
			s, err := Wrap(inner, SolverOptions{Keeper: w.process(1), Port: 80, Family: tc.family, Timeout: time.Minute,
				AfterOpen: func(context.Context, Window) error { logf("window open"); return nil }})
			if err != nil {
				t.Fatal(err)
			}
			id, err := ident.Parse(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			err = s.Check(t.Context(), id)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Check = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ch := solve.Challenge{Type: solve.HTTP01, Identifier: id, Token: "tok"}
			if err := s.Present(t.Context(), ch); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if err := s.CleanUp(ctx, ch); err != nil {
				t.Fatal(err)
			}
			wantOrder := []string{"inner check", "window open", "inner present", "inner cleanup"}
			if !slices.Equal(order, wantOrder) {
				t.Errorf("order %q, want %q", order, wantOrder)
			}
			wantCalls := []string{"check " + tc.want, "sweep all=false", "open " + tc.want, "close " + tc.want}
			if !slices.Equal(w.b.calls, wantCalls) {
				t.Errorf("backend calls %q, want %q", w.b.calls, wantCalls)
			}
		})
	}
}

// TestSolverFailures: a window that could not open is not closed, and a
// failed inner Present still has its window closed by CleanUp.
func TestSolverFailures(t *testing.T) {
	w := newWorld(t)
	w.b.openErr = errors.New("no")
	inner := &fakeSolver{typ: solve.TLSALPN01, log: func(string) {}}
	s, err := Wrap(inner, SolverOptions{Keeper: w.process(1), Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := ident.Parse("fw.detour.test")
	ch := solve.Challenge{Type: solve.TLSALPN01, Identifier: id, Token: "tok"}
	if err := s.Present(t.Context(), ch); err == nil || !strings.Contains(err.Error(), "opening the firewall window") {
		t.Fatalf("Present = %v", err)
	}
	if err := s.CleanUp(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(w.b.calls, func(c string) bool { return strings.HasPrefix(c, "close") }) {
		t.Errorf("closed a window it never opened: %q", w.b.calls)
	}

	w.b.openErr = nil
	inner.err = errors.New("port taken")
	if err := s.Present(t.Context(), ch); err == nil {
		t.Fatal("Present succeeded")
	}
	if err := s.CleanUp(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	if got := w.b.isOpen(443); got != "" {
		t.Errorf("window left open after a failed Present and CleanUp: %q", got)
	}
	if _, err := Wrap(&fakeSolver{typ: solve.DNS01}, SolverOptions{Keeper: w.process(1), Port: 53}); err == nil {
		t.Error("wrapped a dns-01 solver")
	}
}
