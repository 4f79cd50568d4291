package renew_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/deploy"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/testenv"
)

// events collects progress events. It takes no lock: Obtain promises one
// call at a time, and overlapping calls are counted (and seen by the race
// detector).
type events struct {
	list    []renew.Event
	inside  atomic.Int32
	overlap atomic.Int32
}

func (e *events) add(ev renew.Event) {
	if e.inside.Add(1) > 1 {
		e.overlap.Add(1)
	}
	defer e.inside.Add(-1)
	time.Sleep(time.Millisecond) // widen the window an overlap needs
	e.list = append(e.list, ev)
}

// kinds lists the events' kinds, "kind:identifier:path" where they have
// an identifier.
func (e *events) kinds() []string {
	var out []string
	for _, ev := range e.list {
		k := string(ev.Kind)
		if ev.Identifier != "" {
			k += ":" + ev.Identifier + ":" + ev.Path
		}
		out = append(out, k)
	}
	return out
}

func (e *events) of(kind renew.EventKind) []renew.Event {
	var out []renew.Event
	for _, ev := range e.list {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// checkFails is a path whose Check refuses every identifier.
type checkFails struct{ failingSolver }

func (checkFails) Check(context.Context, ident.Identifier) error {
	return errors.New(":80 is held by nginx")
}

// TestProgressEvents obtains a certificate through the third of three
// paths (the first fails its check, the second its probe) and checks each
// step's event, in order, with the reason of the choice; then again with
// the account stored; then through a DNS path for two names.
func TestProgressEvents(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	m := env.Manager(t)
	const name = "progress.detour.test"
	env.AddName(name)
	marker := filepath.Join(t.TempDir(), "deployed")
	nocheck := solve.Path{Name: "side", Solver: checkFails{failingSolver{typ: solve.HTTP01}}}
	late := solve.Path{Name: "late", Solver: checkFails{failingSolver{typ: solve.HTTP01}}} // after the one chosen: not "passed over"
	req := renew.Request{
		Name: "progress", Identifiers: ids(t, name), Profile: sandbox.ProfileShortLived,
		CA: env.RenewCA(t), Paths: []solve.Path{nocheck, env.HTTPPath, env.TLSPath, late},
		SelfCheck: func(_ context.Context, _ solve.Path, ch solve.Challenge) error {
			if ch.Type == solve.HTTP01 {
				return errors.New("nginx answered 404")
			}
			return nil
		},
		DeployHook: deploy.Hook{Command: "echo ok > " + marker},
	}
	var got events
	req.Progress = got.add
	res, err := m.Obtain(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	http, tls := env.HTTPPath.Name, env.TLSPath.Name
	want := []string{
		"account",
		"probe:" + name + ":" + http,
		"probe:" + name + ":" + tls,
		"order",
		"authz:" + name + ":" + tls,
		"self-check:" + name + ":" + tls,
		"validation:" + name + ":" + tls,
		"finalize", "stored", "deployed",
	}
	if k := got.kinds(); !slices.Equal(k, want) {
		t.Fatalf("events:\n  %s\nwant:\n  %s", strings.Join(k, "\n  "), strings.Join(want, "\n  "))
	}
	for _, ev := range got.list {
		if ev.Name != "progress" || ev.At.IsZero() {
			t.Errorf("%s event without the certificate's name or time: %+v", ev.Kind, ev)
		}
	}
	if a := got.of(renew.EventAccount)[0]; !a.Registered || a.URL == "" {
		t.Errorf("account event %+v: want the URL of an account registered now", a)
	}
	if p := got.of(renew.EventProbe); p[0].Err == nil || !strings.Contains(p[0].Err.Error(), "nginx answered 404") || p[1].Err != nil {
		t.Errorf("probe events: %v, %v; want http-01's failure, then tls-alpn-01 passing", p[0].Err, p[1].Err)
	}
	if o := got.of(renew.EventOrder)[0]; o.URL == "" || !slices.Equal(o.Identifiers, []string{name}) || o.Profile != sandbox.ProfileShortLived {
		t.Errorf("order event %+v", o)
	}
	az := got.of(renew.EventAuthz)[0]
	if az.Reason != renew.ReasonFirstCheck || az.Challenge != solve.TLSALPN01 {
		t.Errorf("authz reason %q, challenge %q; want %q, %s", az.Reason, az.Challenge, renew.ReasonFirstCheck, solve.TLSALPN01)
	}
	if len(az.Skipped) != 2 || az.Skipped[0] != (renew.Skipped{Path: "side", Reason: "its check failed: :80 is held by nginx"}) ||
		az.Skipped[1] != (renew.Skipped{Path: http, Reason: "its probe failed: nginx answered 404", Kind: renew.EventProbe}) {
		t.Errorf("authz passed over %+v; want side's check failure, then %s's probe failure", az.Skipped, http)
	}
	if v := got.of(renew.EventValidation)[0]; v.Polls < 1 || v.Err != nil {
		t.Errorf("validation event %+v: want at least one poll and no error", v)
	}
	if f := got.of(renew.EventFinalize)[0]; f.Serial != res.Serial || !f.NotAfter.Equal(res.NotAfter) {
		t.Errorf("finalize event %+v, result serial %s", f, res.Serial)
	}
	if s := got.of(renew.EventStored)[0]; s.Version != 1 || s.LiveDir != env.Store.LiveDir("progress") {
		t.Errorf("stored event %+v: want version 1 in %s", s, env.Store.LiveDir("progress"))
	}
	if d := got.of(renew.EventDeployed)[0]; d.Hook != req.DeployHook.Command || d.Err != nil {
		t.Errorf("deployed event %+v", d)
	}

	// The account stored is used again, not registered; a path that
	// works first time is the preferred one.
	req.Paths = []solve.Path{env.TLSPath}
	got = events{}
	req.Progress = got.add
	if _, err := m.Obtain(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	if a := got.of(renew.EventAccount); len(a) != 1 || a[0].Registered {
		t.Errorf("account events %+v: want one, not registered now", a)
	}
	if az := got.of(renew.EventAuthz); len(az) != 1 || az[0].Reason != renew.ReasonPreferred && az[0].Reason != renew.ReasonReused || len(az[0].Skipped) != 0 {
		t.Errorf("authz events %+v: want the preferred path, nothing passed over", az)
	}

	// The probe passes on http-01 but the real answer's self-check does
	// not: the next path is tried, and said why.
	env.AddName("real." + name)
	got = events{}
	req.Name, req.Identifiers, req.Paths = "progress-real", ids(t, "real."+name), []solve.Path{env.HTTPPath, env.TLSPath}
	calls := 0
	req.SelfCheck = func(_ context.Context, _ solve.Path, ch solve.Challenge) error {
		if calls++; calls == 2 {
			return errors.New("a stale answer")
		}
		return nil
	}
	if _, err := m.Obtain(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	real := "real." + name
	want = []string{
		"account", "probe:" + real + ":" + http, "order",
		"authz:" + real + ":" + http, "self-check:" + real + ":" + http,
		"authz:" + real + ":" + tls, "self-check:" + real + ":" + tls,
		"validation:" + real + ":" + tls, "finalize", "stored", "deployed",
	}
	if k := got.kinds(); !slices.Equal(k, want) {
		t.Fatalf("events:\n  %s\nwant:\n  %s", strings.Join(k, "\n  "), strings.Join(want, "\n  "))
	}
	if az := got.of(renew.EventAuthz); az[0].Reason != renew.ReasonPreferred || az[1].Reason != renew.ReasonFirstCheck ||
		!slices.Equal(az[1].Skipped, []renew.Skipped{{Path: http, Reason: "its self-check failed: a stale answer", Kind: renew.EventSelfCheck}}) {
		t.Errorf("authz events %+v", az)
	}
	if sc := got.of(renew.EventSelfCheck); sc[0].Err == nil || sc[1].Err != nil {
		t.Errorf("self-check events %+v: want http-01's failure, then tls-alpn-01 passing", sc)
	}

	// DNS: no probe, no self-check; the record is waited for, and the two
	// validations run at once.
	got = events{}
	dreq := renew.Request{Name: "progress-dns", Identifiers: ids(t, "pdns.detour.test", "*.pdns.detour.test"),
		Profile: sandbox.ProfileShortLived, CA: env.RenewCA(t), Paths: []solve.Path{env.DNSPath}, Progress: got.add,
		SelfCheck: func(context.Context, solve.Path, solve.Challenge) error { return nil }}
	if _, err := m.Obtain(ctx(t), dreq); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []renew.EventKind{renew.EventAuthz, renew.EventWait, renew.EventValidation} {
		var ids []string
		for _, ev := range got.of(kind) {
			if ev.Err != nil || ev.Path != env.DNSPath.Name {
				t.Errorf("%s event %+v", kind, ev)
			}
			ids = append(ids, ev.Identifier)
		}
		slices.Sort(ids)
		if want := []string{"*.pdns.detour.test", "pdns.detour.test"}; !slices.Equal(ids, want) {
			t.Errorf("%s events for %v, want %v", kind, ids, want)
		}
	}
	if p := got.of(renew.EventProbe); len(p) != 0 {
		t.Errorf("a DNS path was probed: %+v", p)
	}
	if n := got.overlap.Load(); n > 0 {
		t.Errorf("Progress was called %d times while another call was running", n)
	}
}

// TestStepPassesProgress checks that StepOptions.Progress reaches the
// request the step obtains.
func TestStepPassesProgress(t *testing.T) {
	var asked []int
	ca := &stepCA{}
	called := 0
	step := renew.Step{Obtainer: ca, Records: &stepRecords{recs: map[string]store.Record{}}}
	out := step.Run(ctx(t), stepTarget(t, &asked, nil), renew.StepOptions{Force: true, Manual: true, Progress: func(renew.Event) { called++ }})
	if out.Err != nil || len(ca.reqs) != 1 || ca.reqs[0].Progress == nil {
		t.Fatalf("outcome %+v, requests %d: want one request with Progress set", out, len(ca.reqs))
	}
	ca.reqs[0].Progress(renew.Event{})
	if called != 1 {
		t.Errorf("the request's Progress is not the step's")
	}
}
