package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
)

// TestStorageHistory: attempts come back newest first, at most Keep of
// them; a history that cannot be read starts again.
func TestStorageHistory(t *testing.T) {
	ctx := t.Context()
	st, err := store.NewFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := &StorageHistory{Storage: st, Keep: 5}
	if got, err := h.Attempts(ctx, "none.example"); err != nil || got != nil {
		t.Fatalf("Attempts of a certificate without history = %v, %v", got, err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 7 {
		if err := h.Add(ctx, "a.example", Attempt{Time: t0.Add(time.Duration(i) * time.Hour), OK: i%2 == 0, Took: time.Second,
			Steps: []Step{{Name: "obtain", Took: time.Second}}}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := h.Attempts(ctx, "a.example")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || !got[0].Time.Equal(t0.Add(6*time.Hour)) || !got[4].Time.Equal(t0.Add(2*time.Hour)) || got[0].Steps[0].Took != time.Second {
		t.Errorf("attempts = %+v, want the 5 newest, newest first", got)
	}
	if err := st.Store(ctx, historyKey("a.example"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Attempts(ctx, "a.example"); err == nil {
		t.Error("an unreadable history read without an error")
	}
	if err := h.Add(ctx, "a.example", Attempt{Time: t0}); err != nil {
		t.Fatal(err)
	}
	if got, err := h.Attempts(ctx, "a.example"); err != nil || len(got) != 1 {
		t.Errorf("after an unreadable history: %v, %v; want the one new attempt", got, err)
	}
	if err := h.Add(ctx, "../escape", Attempt{}); err == nil {
		t.Error("a name that is no certificate name was accepted")
	}
}

// refusing is a path that cannot answer: Present fails, with its reason.
type refusing struct{}

func (refusing) Type() string                                  { return solve.HTTP01 }
func (refusing) Check(context.Context, ident.Identifier) error { return nil }
func (refusing) Present(context.Context, solve.Challenge) error {
	return errors.New("port 80 is held by another server; forward /.well-known/acme-challenge/ to Detour")
}
func (refusing) CleanUp(context.Context, solve.Challenge) error { return nil }

// TestAgentKeepsHistory: against Pebble, the agent keeps each attempt with
// its steps, as the renewal reports them (account, order, authorization,
// validation, finalize, store) between the agent's own (wait, plan,
// record), and a failure's stage and error.
func TestAgentKeepsHistory(t *testing.T) {
	t.Parallel()
	env := newEnv(t, time.Hour, 0)
	client := env.Client(t)
	const good, bad = "history-good.detour.test", "history-bad.detour.test"
	h := &StorageHistory{Storage: env.Store}
	a, err := New(Options{Obtainer: env.Manager(t), Store: env.Store, Logger: env.Log, Policy: fastPolicy, History: h})
	if err != nil {
		t.Fatal(err)
	}
	plan := Plan{Certs: []Cert{pebbleCert(t, env, client, good, profileLong),
		pebbleCert(t, env, client, bad, profileLong, solve.Path{Name: "refusing", Solver: refusing{}})}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, plan) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, a, 30*time.Second, "one renewal and one failure", func(st map[string]Status) bool {
		return st[good].Version == 1 && st[bad].Failures >= 1 && !st[good].Running && !st[bad].Running
	})
	var hist map[string][]Attempt
	deadline := time.Now().Add(10 * time.Second)
	for {
		hist = map[string][]Attempt{}
		for _, n := range []string{good, bad} {
			if hist[n], err = h.Attempts(t.Context(), n); err != nil {
				t.Fatal(err)
			}
		}
		if len(hist[good]) > 0 && len(hist[bad]) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(hist[good]) == 0 || len(hist[bad]) == 0 {
		t.Fatalf("history = %+v", hist)
	}
	g := hist[good][len(hist[good])-1] // the first attempt
	names := func(a Attempt) []string {
		var out []string
		for _, s := range a.Steps {
			out = append(out, s.Name)
		}
		return out
	}
	if !g.OK || g.Version != 1 || g.Serial == "" || g.Path != "standalone-http" || g.CA != "pebble" || g.Took <= 0 ||
		!slices.Equal(names(g), []string{"wait", "plan", "account", "order", "authz", "validation", "finalize", "store", "record"}) {
		t.Errorf("the renewal's attempt = %+v (steps %v)", g, names(g))
	}
	var sum time.Duration
	for _, s := range g.Steps {
		sum += s.Took
	}
	if sum > g.Took || sum < g.Took*9/10 {
		t.Errorf("the steps add up to %v of the attempt's %v", sum, g.Took)
	}
	b := hist[bad][len(hist[bad])-1]
	if b.OK || b.Stage != "self-check" || b.Error == "" || b.Path != "refusing" || fmt.Sprint(names(b)) != "[wait plan account order authz self-check record]" {
		t.Errorf("the failure's attempt = %+v (steps %v)", b, names(b))
	}
	t.Logf("failure at %s: %s", b.Stage, b.Error)
}

// TestClockSteps: an attempt's steps from the moments the agent notes and
// the events the renewal reports; without events, Obtain is one step (and
// a success's deploy another).
func TestClockSteps(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	names := func(a Attempt) string {
		var out []string
		for _, s := range a.Steps {
			out = append(out, fmt.Sprintf("%s=%d", s.Name, s.Took.Milliseconds()))
		}
		return fmt.Sprint(out)
	}
	newClock := func() *clock {
		return &clock{begin: ms(0), ready: ms(2), done: ms(100), obtain: &timedObtainer{start: ms(5), end: ms(95)}}
	}
	c := newClock()
	ok := renew.Outcome{CA: "le", Result: renew.Result{Elapsed: 80 * time.Millisecond, Version: 2}}
	if got := names(c.attempt(ok)); got != "[wait=2 plan=3 obtain=80 deploy=10 record=5]" {
		t.Errorf("without events: %s", got)
	}
	c = newClock()
	for _, e := range []renew.Event{{Kind: renew.EventAccount, At: ms(10)}, {Kind: renew.EventOrder, At: ms(15)},
		{Kind: renew.EventAuthz, At: ms(16)}, {Kind: renew.EventAuthz, At: ms(18)}, {Kind: renew.EventValidation, At: ms(40)},
		{Kind: renew.EventValidation, At: ms(50)}, {Kind: renew.EventFinalize, At: ms(70)}, {Kind: renew.EventStored, At: ms(80)},
		{Kind: renew.EventDeployed, At: ms(94)}} {
		c.progress(e)
	}
	if got := names(c.attempt(ok)); got != "[wait=2 plan=3 account=5 order=5 authz=3 validation=32 finalize=20 store=10 deploy=14 finish=1 record=5]" {
		t.Errorf("with events: %s", got)
	}
	c = newClock()
	c.progress(renew.Event{Kind: renew.EventAccount, At: ms(10)})
	failed := renew.Outcome{CA: "le", Paths: "web", Err: &renew.Error{Name: "x", Stage: "order", Err: errors.New("rate limited")}}
	a := c.attempt(failed)
	if got := names(a); got != "[wait=2 plan=3 account=5 order=85 record=5]" || a.Stage != "order" || a.OK {
		t.Errorf("failed at the order: %s, stage %q", got, a.Stage)
	}
}
