package agent

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/renew"
)

// bindChecker is an Obtainer over the fake CA that knows the addresses
// each certificate's paths bind and complains when two renewals binding
// one address run at once. Renewals of the certificates in hold bind their
// addresses and then wait for the end of their context.
type bindChecker struct {
	*fakeCA
	binds map[string][]string
	hold  map[string]bool

	mu       sync.Mutex
	inUse    map[string]string // address -> certificate renewing with it
	entered  []string          // held certificates that entered Obtain, in order
	enteredC chan string
	clashes  []string
}

func newBindChecker(f *fakeCA) *bindChecker {
	return &bindChecker{fakeCA: f, binds: map[string][]string{}, hold: map[string]bool{}, inUse: map[string]string{},
		enteredC: make(chan string, 16)}
}

// cert is a certificate of the fake CA whose paths bind addrs.
func (c *bindChecker) cert(t *testing.T, name string, life time.Duration, addrs ...string) Cert {
	cert := fakeCert(t, c.fakeCA, name, life)
	cert.Binds = addrs
	c.binds[name] = addrs
	return cert
}

func (c *bindChecker) Obtain(ctx context.Context, req renew.Request) (renew.Result, error) {
	addrs := slices.Compact(slices.Sorted(slices.Values(c.binds[req.Name])))
	c.mu.Lock()
	for _, a := range addrs {
		if other, ok := c.inUse[a]; ok {
			c.clashes = append(c.clashes, fmt.Sprintf("%s renewing while %s holds %s", req.Name, other, a))
		}
	}
	for _, a := range addrs {
		c.inUse[a] = req.Name
	}
	hold := c.hold[req.Name]
	if hold {
		c.entered = append(c.entered, req.Name)
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		for _, a := range addrs {
			if c.inUse[a] == req.Name {
				delete(c.inUse, a)
			}
		}
		c.mu.Unlock()
	}()
	if hold {
		c.enteredC <- req.Name
		<-ctx.Done()
		return renew.Result{}, ctx.Err()
	}
	return c.fakeCA.Obtain(ctx, req)
}

// runningAgent is an agent under test: cancel stops it, done is closed
// when Run has returned, with its error in err.
type runningAgent struct {
	*Agent
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// startBindAgent runs an agent with the default concurrency (2) over c; it
// is stopped at the end of the test if still running.
func startBindAgent(t *testing.T, c *bindChecker, plan Plan) *runningAgent {
	t.Helper()
	a, err := New(Options{Obtainer: c, Store: c.st, Policy: fastPolicy})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningAgent{Agent: a, cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = a.Run(ctx, plan)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("the agent did not stop within 10s at the end of the test")
		}
	})
	return r
}

// stopPromptly cancels the agent and fails unless Run returns nil within
// limit; it returns how long Run took to return.
func (r *runningAgent) stopPromptly(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	begin := time.Now()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Fatalf("Run: %v", r.err)
		}
	case <-time.After(limit):
		t.Fatalf("the agent did not stop within %v of cancel: a renewal is stuck waiting for its bind addresses", limit)
	}
	return time.Since(begin)
}

// Certificates whose paths bind overlapping addresses in opposite orders
// (ab: :80 then :443; ba: :443 then :80), one whose paths list :80 twice,
// and one binding nothing, all due at once and renewed again and again
// with the default concurrency: every one is renewed several times, no two
// renewals binding one address ever run at once, and the agent stops
// promptly on cancel.
func TestAgentOverlappingBinds(t *testing.T) {
	t.Parallel()
	st := newMemStore(t)
	f := newFakeCA(t, st)
	f.delay = 10 * time.Millisecond
	c := newBindChecker(f)
	const life = 3 * time.Second
	plan := Plan{Certs: []Cert{
		c.cert(t, "ab", life, ":80", ":443"),
		c.cert(t, "ba", life, ":443", ":80"),
		c.cert(t, "dup", life, ":80", ":80"),
		c.cert(t, "dup443", life, ":443", ":443", ":443"),
		c.cert(t, "free", life),
	}}
	a := startBindAgent(t, c, plan)

	const want = 3
	deadline := time.Now().Add(30 * time.Second)
	for {
		f.mu.Lock()
		renewals := countsString(f.renewals)
		short := false
		for _, cert := range plan.Certs {
			if f.renewals[cert.Name] < want {
				short = true
			}
		}
		f.mu.Unlock()
		if !short {
			break
		}
		if time.Now().After(deadline) {
			st, _ := a.Status(t.Context())
			t.Fatalf("after 30s not every certificate was issued and renewed %d times: renewals %s; status %+v", want, renewals, st)
		}
		time.Sleep(20 * time.Millisecond) // polling the fake CA's counters
	}
	took := a.stopPromptly(t, 5*time.Second)

	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.clashes {
		t.Error(p)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.problems {
		t.Error(p)
	}
	if f.maxRunning > 2 {
		t.Errorf("%d renewals ran at once, want at most 2", f.maxRunning)
	}
	t.Logf("renewals %s; stopped %v after cancel", countsString(f.renewals), took.Round(time.Millisecond))
}

// Renewals waiting for addresses another renewal holds do not keep the
// agent from stopping: ab holds :80 and :443 in a renewal that lasts until
// shutdown, ba (the same addresses in the other order) and dup (:80 twice)
// wait for them, free (its own address) renews meanwhile; cancel stops the
// agent at once, and the waiters never started their renewals.
func TestAgentStopsWhileWaitingForBinds(t *testing.T) {
	t.Parallel()
	st := newMemStore(t)
	f := newFakeCA(t, st)
	f.delay = 10 * time.Millisecond
	c := newBindChecker(f)
	for _, n := range []string{"ab", "ba", "dup"} {
		c.hold[n] = true
	}
	plan := Plan{Certs: []Cert{
		c.cert(t, "ab", time.Hour, ":80", ":443"),
		c.cert(t, "ba", time.Hour, ":443", ":80"),
		c.cert(t, "dup", time.Hour, ":80", ":80"),
		c.cert(t, "free", time.Hour, ":8053"),
	}}
	a := startBindAgent(t, c, plan)

	var first string
	select {
	case first = <-c.enteredC:
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal of ab, ba or dup started within 10s")
	}
	// free is not kept waiting by them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := a.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if i := slices.IndexFunc(s, func(s Status) bool { return s.Name == "free" }); i >= 0 && s[i].Version >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("free was not issued within 10s while %s held :80 and :443; status %+v", first, s)
		}
		time.Sleep(10 * time.Millisecond) // polling the agent's status
	}
	// Give the waiters time to (wrongly) start.
	time.Sleep(200 * time.Millisecond) // nothing to wait on: they must not start
	s, err := a.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range s {
		if row.Name != "free" && !row.Running {
			t.Errorf("%s is not running (waiting for its addresses): %+v", row.Name, row)
		}
	}
	took := a.stopPromptly(t, 5*time.Second)

	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entered) != 1 {
		t.Errorf("renewals started among ab, ba and dup: %v, want only %s (they share :80)", c.entered, first)
	}
	for _, p := range c.clashes {
		t.Error(p)
	}
	if len(c.inUse) != 0 {
		t.Errorf("addresses still in use after Run returned: %v", c.inUse)
	}
	t.Logf("%s held the addresses; the agent stopped %v after cancel", first, took.Round(time.Millisecond))
}

// countsString formats counts by name, sorted.
func countsString(m map[string]int) string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	out := ""
	for _, n := range names {
		out += fmt.Sprintf("%s=%d ", n, m[n])
	}
	return out
}
