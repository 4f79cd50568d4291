package renew_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/detour-acme/detour/internal/deploy"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/testenv"
)

// recorder wraps a solver and records what it cleaned up; with crash set,
// Present call number crash fails.
type recorder struct {
	solve.Solver
	mu       sync.Mutex
	cleaned  []string
	presents int
	crash    int
}

var errCrash = errors.New("simulated failure")

func (r *recorder) Present(ctx context.Context, ch solve.Challenge) error {
	r.mu.Lock()
	r.presents++
	n := r.presents
	r.mu.Unlock()
	if n == r.crash {
		return errCrash
	}
	return r.Solver.Present(ctx, ch)
}

func (r *recorder) CleanUp(ctx context.Context, ch solve.Challenge) error {
	r.mu.Lock()
	r.cleaned = append(r.cleaned, ch.Token)
	r.mu.Unlock()
	return r.Solver.CleanUp(ctx, ch)
}

// Work a renewal leaves when it dies is written down first and finished by
// Sweep (or by the next Obtain): challenges are cleaned up on the path of
// the same name, and a stored version that was not deployed is deployed.
func TestJournalAndSweep(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	const name = "sweep.detour.test"
	env.AddName(name)
	m := env.Manager(t)
	marker := filepath.Join(t.TempDir(), "deployed")
	rec := &recorder{Solver: env.HTTPPath.Solver}
	req := renew.Request{Name: name, Identifiers: ids(t, name), CA: env.RenewCA(t),
		Paths:  []solve.Path{{Name: "web", Solver: rec}},
		Deploy: deploy.Plan{Hook: deploy.Hook{Command: "echo $DETOUR_VERSION >> " + marker}}}
	if _, err := m.Obtain(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(marker); string(got) != "1\n" {
		t.Fatalf("deploy plan ran with %q, want version 1", got)
	}
	if names, err := m.Pending(ctx(t)); err != nil || len(names) != 0 {
		t.Fatalf("after a clean renewal Pending = %v, %v", names, err)
	}

	// A crash just before the deploy: the version is live, the marker says
	// it was not deployed.
	if err := env.Store.Store(ctx(t), "pending/"+name+".deploy.json", []byte(`{"version":1}`)); err != nil {
		t.Fatal(err)
	}
	// A crash while a challenge was presented: the journal names it.
	if err := env.Store.Store(ctx(t), "pending/"+name+".cleanup.json",
		[]byte(`[{"path":"web","challenge":{"Type":"http-01","Identifier":{"Type":"dns","Value":"`+name+`"},"Token":"leftover-token"}},`+
			`{"path":"gone","challenge":{"Type":"http-01","Identifier":{"Type":"dns","Value":"`+name+`"},"Token":"other"}}]`)); err != nil {
		t.Fatal(err)
	}
	if names, err := m.Pending(ctx(t)); err != nil || len(names) != 1 || names[0] != name {
		t.Fatalf("Pending = %v, %v; want [%s]", names, err, name)
	}
	if err := m.Sweep(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(marker); string(got) != "1\n1\n" {
		t.Errorf("pending deploy not run again: %q", got)
	}
	if !contains(rec.cleaned, "leftover-token") {
		t.Errorf("leftover challenge not cleaned up: %v", rec.cleaned)
	}
	if names, _ := m.Pending(ctx(t)); len(names) != 0 {
		t.Errorf("Pending after Sweep = %v", names)
	}

	// A renewal that fails in Present leaves no journal behind, and one
	// whose cleanup did not run (the crash) is swept by the next Obtain.
	// (The failing one asks for a name never validated: Pebble sometimes
	// reuses a valid authorization, and then nothing is presented.)
	rec.crash = rec.presents + 1
	fresh := "fresh-" + name
	env.AddName(fresh)
	failing := req
	failing.Identifiers = ids(t, fresh)
	if _, err := m.Obtain(ctx(t), failing); err == nil || !strings.Contains(err.Error(), errCrash.Error()) {
		t.Fatalf("Obtain = %v, want the failed Present", err)
	}
	if names, _ := m.Pending(ctx(t)); len(names) != 0 {
		t.Errorf("a failed Present left a journal: %v", names)
	}
	if err := env.Store.Store(ctx(t), "pending/"+name+".cleanup.json",
		[]byte(`[{"path":"web","challenge":{"Type":"http-01","Identifier":{"Type":"dns","Value":"`+name+`"},"Token":"second-leftover"}}]`)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Obtain(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	if !contains(rec.cleaned, "second-leftover") {
		t.Errorf("Obtain did not sweep the leftover first: %v", rec.cleaned)
	}
	checkLive(t, env, name, name)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// cancelOnPut is a Backend that cancels the renewal's context as the
// certificate is stored: what SIGTERM does when it lands just after the CA
// issued.
type cancelOnPut struct {
	renew.Backend
	cancel context.CancelFunc
}

func (c cancelOnPut) PutCertificate(ctx context.Context, name string, b store.Bundle) (int, error) {
	c.cancel()
	return c.Backend.PutCertificate(ctx, name, b)
}

// A cancellation that lands once the CA has issued neither throws the
// certificate away nor leaves live/ ahead of the record; a crash in that
// gap (the record saved late) is repaired by Sweep from the live
// certificate.
func TestStoreAfterIssuanceSurvivesCancelAndCrash(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	const name = "lag.detour.test"
	env.AddName(name)
	req := renew.Request{Name: name, Identifiers: ids(t, name), CA: env.RenewCA(t),
		Paths: []solve.Path{{Name: "web", Solver: env.HTTPPath.Solver}}}

	cctx, cancel := context.WithCancel(ctx(t))
	m, err := renew.New(renew.Options{Store: cancelOnPut{Backend: env.Store, cancel: cancel}, Logger: env.Log})
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.Obtain(cctx, req)
	if err != nil {
		t.Fatalf("Obtain cancelled after issuance: %v", err)
	}
	if cctx.Err() == nil {
		t.Fatal("the test did not cancel the renewal")
	}
	first, err := env.Store.LoadRecord(ctx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	if first.Version != res.Version || first.Serial != res.Serial {
		t.Fatalf("record %d/%s after a cancelled store, live %d/%s", first.Version, first.Serial, res.Version, res.Serial)
	}

	// A crash between the switch of live/ and the save of the record:
	// renew, then put the older record back and the marker the renewal
	// leaves while under way.
	plain := env.Manager(t)
	second, err := plain.Obtain(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Store.SaveRecord(ctx(t), first); err != nil {
		t.Fatal(err)
	}
	if err := env.Store.Store(ctx(t), "pending/"+name+".renewing", []byte("crashed")); err != nil {
		t.Fatal(err)
	}
	if names, err := plain.Pending(ctx(t)); err != nil || len(names) != 1 {
		t.Fatalf("Pending = %v, %v; want the crashed renewal", names, err)
	}
	if err := plain.Sweep(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	got, err := env.Store.LoadRecord(ctx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != second.Version || got.Serial != second.Serial || !got.NotAfter.Equal(second.NotAfter) {
		t.Errorf("after Sweep the record says version %d serial %s not_after %v; live is %d %s %v",
			got.Version, got.Serial, got.NotAfter, second.Version, second.Serial, second.NotAfter)
	}
	if got.ARIID == "" || got.ARIID == first.ARIID {
		t.Errorf("ARI identifier %q not rebuilt from the live certificate (was %q)", got.ARIID, first.ARIID)
	}
	if names, _ := plain.Pending(ctx(t)); len(names) != 0 {
		t.Errorf("Pending after Sweep = %v", names)
	}
}
