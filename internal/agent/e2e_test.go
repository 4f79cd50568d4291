package agent

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/testenv"
)

// Profiles of the test CA: certificates of a few seconds, and of 90 days.
const (
	profileBrief = "brief"
	profileLong  = "long"
)

// fastPolicy makes backoff and ARI polling fit a test of seconds.
var fastPolicy = renew.Policy{BackoffMin: 200 * time.Millisecond, BackoffMax: 2 * time.Second,
	ARIPollMin: 50 * time.Millisecond, ARIPollMax: 300 * time.Millisecond}

// newEnv starts Pebble with the test profiles; brief certificates live
// briefValidity.
func newEnv(t *testing.T, briefValidity time.Duration, nonceReject int) *testenv.Env {
	t.Helper()
	return testenv.New(t, testenv.Options{CA: sandbox.CAOptions{
		Profiles: map[string]sandbox.Profile{
			profileBrief: {Description: "a few seconds", Validity: briefValidity},
			profileLong:  {Description: "90 days", Validity: 90 * 24 * time.Hour},
		},
		DefaultProfile:     profileLong,
		NonceRejectPercent: nonceReject,
	}})
}

// pebbleCert is a certificate of env's CA through client, validated by the
// environment's standalone http-01 path.
func pebbleCert(t *testing.T, env *testenv.Env, client *acme.Client, name, profile string, paths ...solve.Path) Cert {
	t.Helper()
	env.AddName(name)
	id, err := ident.Parse(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		paths = []solve.Path{env.HTTPPath}
	}
	ca := renew.CA{Client: client, Name: "pebble", Email: "agent@detour.test", AgreeTOS: true}
	return Cert{Name: name, Identifiers: []string{name}, CAs: []string{"pebble"},
		Request: func(context.Context, int) (renew.Request, func(), error) {
			return renew.Request{Name: name, Identifiers: []ident.Identifier{id}, Profile: profile, CA: ca, Paths: paths}, func() {}, nil
		}}
}

// renewalInfo asks env's CA through client for the window of a leaf.
func renewalInfo(env *testenv.Env, client *acme.Client) func(context.Context, store.Record, *x509.Certificate) (acme.RenewalInfo, error) {
	return RenewalInfoFunc(client)
}

// runAgent starts an agent on env's store and stops it at the end of the
// test (waiting for Run to return).
func runAgent(t *testing.T, env *testenv.Env, plan Plan, m *Metrics) *Agent {
	t.Helper()
	return runAgentWith(t, env, env.Manager(t), plan, m)
}

// runAgentWith is runAgent with another Obtainer.
func runAgentWith(t *testing.T, env *testenv.Env, o Obtainer, plan Plan, m *Metrics) *Agent {
	t.Helper()
	a, err := New(Options{Obtainer: o, Store: env.Store, Logger: env.Log, Policy: fastPolicy, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, plan) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	return a
}

// waitFor polls the agent's status until cond holds for it, or fails the
// test after timeout.
func waitFor(t *testing.T, a *Agent, timeout time.Duration, what string, cond func(map[string]Status) bool) map[string]Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last map[string]Status
	for {
		st, err := a.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		last = map[string]Status{}
		for _, s := range st {
			last[s.Name] = s
		}
		if cond(last) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s did not happen; status: %+v", timeout, what, last)
		}
		<-tick.C
	}
}

// liveLeaf checks that live/<name> holds a matching key pair and returns
// the leaf.
func liveLeaf(t *testing.T, env *testenv.Env, name string) *x509.Certificate {
	t.Helper()
	b, _, err := env.Store.LoadCertificate(t.Context(), name)
	if err != nil {
		t.Fatalf("loading live %s: %v", name, err)
	}
	if err := b.Verify(); err != nil {
		t.Fatalf("live %s: %v", name, err)
	}
	blk, _ := pem.Decode(b.CertPEM)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// The agent issues a certificate of a few seconds and renews it again and
// again without anyone asking, inside each window, and reports it in its
// metrics.
func TestAgentRenewsUnattended(t *testing.T) {
	t.Parallel()
	env := newEnv(t, 4*time.Second, 0)
	client := env.Client(t)
	const name = "unattended.detour.test"
	m := NewMetrics()
	a := runAgent(t, env, Plan{Certs: []Cert{pebbleCert(t, env, client, name, profileBrief)}, RenewalInfo: renewalInfo(env, client)}, m)

	serials := map[string]bool{}
	var mu sync.Mutex
	waitFor(t, a, 40*time.Second, "three renewals after the first issuance", func(st map[string]Status) bool {
		s := st[name]
		if s.Version > 0 && !s.Running {
			mu.Lock()
			serials[liveLeaf(t, env, name).SerialNumber.Text(16)] = true
			mu.Unlock()
		}
		return s.Version >= 4
	})
	rec, err := env.Store.LoadRecord(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Last == nil || !rec.Last.OK || rec.ARI == nil {
		t.Errorf("record after renewals: last %+v, ari %+v", rec.Last, rec.ARI)
	}
	leaf := liveLeaf(t, env, name)
	if leaf.NotAfter.Sub(leaf.NotBefore) > 5*time.Second {
		t.Errorf("live certificate lives %v, want the brief profile", leaf.NotAfter.Sub(leaf.NotBefore))
	}
	rr := httptest.NewRecorder()
	a.Handler(m).ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rr.Body)
	for _, want := range []string{
		`detour_certificate_expiry_timestamp_seconds{certificate="` + name + `"}`,
		`detour_certificate_next_renewal_timestamp_seconds{certificate="` + name + `"}`,
		`detour_renewal_attempts_total{ca="pebble",path="standalone-http"}`,
		`detour_ari_polls_total{result="ok"}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	t.Logf("%d distinct certificates seen live", len(serials))
}

// Windows the CA sets through Pebble's management API move the renewal:
// a 90-day certificate is renewed inside a window set to the next seconds,
// and a revoked certificate (Pebble then answers with a window in the
// past) is replaced at once.
func TestAgentFollowsRenewalInfo(t *testing.T) {
	t.Parallel()
	env := newEnv(t, 4*time.Second, 0)
	client := env.Client(t)
	const moved, revoked = "moved.detour.test", "revoked.detour.test"
	a := runAgent(t, env, Plan{RenewalInfo: renewalInfo(env, client), Certs: []Cert{
		pebbleCert(t, env, client, moved, profileLong), pebbleCert(t, env, client, revoked, profileLong)}}, nil)

	st := waitFor(t, a, 20*time.Second, "first issuance with renewal windows", func(st map[string]Status) bool {
		return st[moved].Version == 1 && st[revoked].Version == 1 && !st[moved].ARIStart.IsZero() && !st[revoked].ARIStart.IsZero()
	})
	for _, n := range []string{moved, revoked} {
		if s := st[n]; s.Next.Before(time.Now().Add(50*24*time.Hour)) && s.NextAction == actionRenew {
			t.Fatalf("%s: renewal scheduled at %v, want about 60 days ahead", n, s.Next)
		}
	}

	// Move moved's window to the next seconds.
	b, _, err := env.Store.LoadCertificate(t.Context(), moved)
	if err != nil {
		t.Fatal(err)
	}
	start, end := time.Now().Add(time.Second).Truncate(time.Second), time.Now().Add(3*time.Second).Truncate(time.Second)
	if err := env.CA.SetRenewalInfo(t.Context(), b.CertPEM, start, end); err != nil {
		t.Fatal(err)
	}
	// Revoke revoked with its own key.
	rb, _, err := env.Store.LoadCertificate(t.Context(), revoked)
	if err != nil {
		t.Fatal(err)
	}
	key, err := acme.DecodeKey(rb.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	oldRevoked := liveLeaf(t, env, revoked)
	if err := client.Revoke(t.Context(), acme.Account{}, oldRevoked, key, 0); err != nil {
		t.Fatal(err)
	}

	waitFor(t, a, 20*time.Second, "renewals of both", func(st map[string]Status) bool {
		return st[moved].Version == 2 && st[revoked].Version == 2
	})
	rec, err := env.Store.LoadRecord(t.Context(), moved)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Issued.Before(start.Add(-time.Second)) || rec.Issued.After(end.Add(2*time.Second)) {
		t.Errorf("moved renewed at %v, want inside the window %v .. %v", rec.Issued, start, end)
	}
	if got := liveLeaf(t, env, revoked); got.SerialNumber.Cmp(oldRevoked.SerialNumber) == 0 {
		t.Errorf("revoked certificate still live")
	}
}

// Run returns only after the renewal it interrupts has cleaned up: the
// challenge is removed and no unfinished work is left in the store.
func TestAgentShutdownCleansUp(t *testing.T) {
	t.Parallel()
	env := newEnv(t, 4*time.Second, 0)
	client := env.Client(t)
	const name = "shutdown.detour.test"
	presented := make(chan struct{})
	gate := &gatedSolver{Solver: env.HTTPPath.Solver, presented: presented}
	cert := pebbleCert(t, env, client, name, profileLong, solve.Path{Name: "gated", Solver: gate})
	m := env.Manager(t)
	a, err := New(Options{Obtainer: m, Store: env.Store, Logger: env.Log, Policy: fastPolicy})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, Plan{Certs: []Cert{cert}}) }()
	select {
	case <-presented:
	case <-time.After(20 * time.Second):
		t.Fatal("no challenge presented")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	gate.mu.Lock()
	cleaned := gate.cleaned
	gate.mu.Unlock()
	if cleaned != 1 {
		t.Errorf("CleanUp ran %d times before Run returned, want 1", cleaned)
	}
	if p, err := m.Pending(t.Context()); err != nil || len(p) != 0 {
		t.Errorf("unfinished work left: %v, %v", p, err)
	}
}

// gatedSolver reports its first Present on presented and counts CleanUp.
type gatedSolver struct {
	solve.Solver
	presented chan struct{}
	once      sync.Once
	mu        sync.Mutex
	cleaned   int
}

func (g *gatedSolver) Present(ctx context.Context, ch solve.Challenge) error {
	if err := g.Solver.Present(ctx, ch); err != nil {
		return err
	}
	g.once.Do(func() { close(g.presented) })
	// Hold the renewal here until the agent shuts down.
	<-ctx.Done()
	return nil
}

func (g *gatedSolver) CleanUp(ctx context.Context, ch solve.Challenge) error {
	g.mu.Lock()
	g.cleaned++
	g.mu.Unlock()
	return g.Solver.CleanUp(ctx, ch)
}
