package renew_test

import (
	"context"
	"errors"
	"testing"

	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/testenv"
)

// TestSupersededOrdersNothing: a renewal decided on a certificate that
// another process (cron and the agent, another node of a fleet) has renewed
// since orders nothing, whether the step or Obtain (under the lock) sees
// it; a renewal decided on the current certificate goes ahead.
func TestSupersededOrdersNothing(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	m := env.Manager(t)
	env.AddName("sup.detour.test")
	req := renew.Request{Name: "sup", Identifiers: ids(t, "sup.detour.test"), Profile: sandbox.ProfileTLSServer,
		CA: env.RenewCA(t), Paths: []solve.Path{env.HTTPPath}}
	target := renew.Target{Name: "sup", CAs: []string{"sandbox"}, Request: func(context.Context, int) (renew.Request, func(), error) {
		return req, func() {}, nil
	}}
	never := renew.Expected{}

	// Nothing issued yet, and the decision says so: it is issued.
	out := m.Renew(ctx(t), target, renew.StepOptions{Force: true, Expect: &never})
	if out.Err != nil || !out.Ran || out.Result.Version != 1 {
		t.Fatalf("first issuance: %+v", out)
	}
	rec, err := env.Store.LoadRecord(ctx(t), "sup")
	if err != nil {
		t.Fatal(err)
	}

	// The agent's view is stale (it still thinks nothing was issued):
	// the step sees the record and orders nothing.
	out = m.Renew(ctx(t), target, renew.StepOptions{Force: true, Expect: &never})
	if !out.Superseded || out.Ran || out.Err != nil || out.Record == nil || out.Record.Serial != rec.Serial {
		t.Fatalf("stale forced step: %+v, want superseded with the current record", out)
	}

	// The same race seen only under the lock: Obtain refuses to order.
	stale := req
	stale.Expect = &never
	if _, err := m.Obtain(ctx(t), stale); err == nil {
		t.Fatal("Obtain with a stale expectation ordered a certificate")
	} else {
		var se *renew.SupersededError
		if !errors.As(err, &se) || se.Record == nil || se.Record.Version != 1 {
			t.Fatalf("Obtain = %v, want a *SupersededError naming version 1", err)
		}
	}
	if v, err := env.Store.ArchiveVersions(ctx(t), "sup"); err != nil || len(v) != 1 {
		t.Fatalf("versions = %v, %v; want only the first: nothing was ordered", v, err)
	}

	// A cron run that read the records before another process renewed:
	// its decision rests on a record that is no longer current.
	old := rec
	old.NotAfter = old.NotBefore // due at once
	fresh := renew.ExpectedOf(&rec)
	current := req
	current.Expect = &fresh
	if res, err := m.Obtain(ctx(t), current); err != nil || res.Version != 2 {
		t.Fatalf("Obtain with the current expectation: %+v, %v; want version 2", res, err)
	}
	out = m.Renew(ctx(t), target, renew.StepOptions{Record: &old})
	if !out.Superseded || out.Err != nil {
		t.Fatalf("cron step on a stale record: %+v, want superseded", out)
	}
	if v, _ := env.Store.ArchiveVersions(ctx(t), "sup"); len(v) != 2 {
		t.Fatalf("versions = %v, want 2", v)
	}
}
