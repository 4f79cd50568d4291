package agent

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
)

// fakeCert is a certificate of the fake CA: CAs in order, its lifetime.
func fakeCert(t testing.TB, f *fakeCA, name string, life time.Duration, cas ...string) Cert {
	f.life[name] = life
	if len(cas) == 0 {
		cas = []string{"primary"}
	}
	id, err := ident.Parse(name + ".example")
	if err != nil {
		t.Fatal(err)
	}
	return Cert{Name: name, Identifiers: []string{id.Value}, CAs: cas, AfterFailures: 3,
		Request: func(_ context.Context, ca int) (renew.Request, func(), error) {
			return renew.Request{Name: name, Identifiers: []ident.Identifier{id}, CA: renew.CA{Name: cas[ca]}}, func() {}, nil
		}}
}

// A year of the real agent loop against a fake CA, on synctest's fake
// clock: every certificate is renewed on time (never after expiry, never
// before its window), a quarter of the attempts fail and back off, a
// certificate whose CA is down moves to its fallback CA, no more than two
// renewals run at once. How long the year takes (about 0.2 s here) is
// logged, not asserted: speed targets are benchmarks, never timed tests.
func TestAgentYear(t *testing.T) {
	begin := time.Now()
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore(t)
		f := newFakeCA(t, st)
		f.fail, f.delay = 0.25, 20*time.Second
		f.down["primary-down"] = true
		plan := Plan{RenewalInfo: f.RenewalInfo}
		plan.Certs = append(plan.Certs,
			fakeCert(t, f, "short", 160*time.Hour),
			fakeCert(t, f, "mid", 45*24*time.Hour),
			fakeCert(t, f, "long", 90*24*time.Hour),
			fakeCert(t, f, "fallback", 90*24*time.Hour, "primary-down", "backup"))
		for i := range 10 {
			plan.Certs = append(plan.Certs, fakeCert(t, f, fmt.Sprintf("fresh%d", i), 90*24*time.Hour))
		}
		a, err := New(Options{Obtainer: f, Store: st, Metrics: NewMetrics()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx, plan) }()
		time.Sleep(365 * 24 * time.Hour)
		status, err := a.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		for _, p := range f.problems {
			t.Error(p)
		}
		if f.maxRunning > 2 {
			t.Errorf("%d renewals ran at once, want at most 2", f.maxRunning)
		}
		for name, life := range map[string]time.Duration{"short": 160 * time.Hour, "mid": 45 * 24 * time.Hour, "long": 90 * 24 * time.Hour, "fallback": 90 * 24 * time.Hour} {
			n := int(365 * 24 * time.Hour / (life * 2 / 3)) // one renewal per two thirds of the lifetime
			got := f.renewals[name]
			if got < n-2 || got > n+2 {
				t.Errorf("%s: %d renewals in a year, want about %d (attempts %d)", name, got, n, f.attempts[name])
			}
		}
		if f.byCA["backup"] == 0 || f.byCA["primary-down"] < 3 {
			t.Errorf("attempts by CA = %v: the fallback CA was not used after 3 failures", f.byCA)
		}
		if len(status) != len(plan.Certs) {
			t.Errorf("status lists %d certificates, want %d", len(status), len(plan.Certs))
		}
		for _, s := range status {
			if s.Version == 0 || s.NotAfter.Before(time.Now()) {
				t.Errorf("%s: version %d, not after %v at the end of the year", s.Name, s.Version, s.NotAfter)
			}
		}
		t.Logf("renewals %v; attempts %v; by CA %v", f.renewals, f.attempts, f.byCA)
	})
	t.Logf("a year of the agent loop took %v", time.Since(begin))
}

// The pure decision for one certificate.
func TestSchedule(t *testing.T) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	life := 90 * 24 * time.Hour
	rec := func(mod func(r *store.Record)) *store.Record {
		r := &store.Record{Name: "x", Identifiers: []string{"a.example"}, Serial: "1", NotBefore: now.Add(-10 * 24 * time.Hour),
			NotAfter: now.Add(life - 10*24*time.Hour), Last: &store.Attempt{Time: now.Add(-10 * 24 * time.Hour), OK: true}}
		if mod != nil {
			mod(r)
		}
		return r
	}
	fetched := now.Add(-time.Hour)
	tests := []struct {
		name   string
		s      certState
		ari    bool
		action string
		at     time.Time
		reason string
	}{
		{"never issued: now", certState{}, true, actionRenew, now, "not issued yet"},
		{"never issued, failed: backoff", certState{last: &store.Attempt{Time: now, Failures: 2}, retryFrac: 1}, true, actionRenew, now.Add(2 * time.Minute), renew.ReasonBackoff},
		{"no window yet: poll ARI now", certState{rec: rec(nil)}, true, actionARI, now, ""},
		{"ARI off: lifetime rule", certState{rec: rec(nil)}, false, actionRenew, now.Add(50 * 24 * time.Hour), renew.ReasonLifetime},
		{"window known: poll at Retry-After", certState{rec: rec(func(r *store.Record) {
			r.ARI = &store.ARIWindow{Start: now.Add(40 * 24 * time.Hour), End: now.Add(41 * 24 * time.Hour), Fetched: fetched, RetryAfter: now.Add(5 * time.Hour)}
		})}, true, actionARI, now.Add(5 * time.Hour), ""},
		{"window before the next poll: renew", certState{rec: rec(func(r *store.Record) {
			r.ARI = &store.ARIWindow{Start: now.Add(time.Hour), End: now.Add(2 * time.Hour), Fetched: fetched, RetryAfter: now.Add(5 * time.Hour)}
		})}, true, actionRenew, now.Add(time.Hour), renew.ReasonARI},
		{"window passed (revoked): renew now", certState{rec: rec(func(r *store.Record) {
			r.ARI = &store.ARIWindow{Start: now.Add(-2 * time.Hour), End: now.Add(-2*time.Hour + time.Second), Fetched: fetched}
		})}, true, actionRenew, now, renew.ReasonARIPassed},
		{"names changed: renew now", certState{cert: Cert{Identifiers: []string{"a.example", "b.example"}}, rec: rec(nil)}, true, actionRenew, now, "the configured names differ from the certificate's"},
		{"lock held elsewhere: a minute later", certState{rec: rec(func(r *store.Record) { r.NotAfter = now }), notBefore: now.Add(time.Minute)}, true, actionRenew, now.Add(time.Minute), "another detour process holds the certificate's lock"},
		{"CA unreachable for ARI: wait", certState{rec: rec(nil), ariNotBefore: now.Add(time.Hour)}, true, actionARI, now.Add(time.Hour), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			at, action, reason := schedule(&tc.s, renew.Policy{}, now, tc.ari)
			if action != tc.action || !at.Equal(tc.at) || (tc.reason != "" && reason != tc.reason) {
				t.Errorf("schedule = %v %s %q, want %v %s %q", at, action, reason, tc.at, tc.action, tc.reason)
			}
		})
	}
}
