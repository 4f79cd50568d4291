package plan

import (
	"context"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/firewall"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/kinds"
	"github.com/detour-acme/detour/internal/store"
)

// TestFirewallPathWiring: a path with firewall settings is built as a
// firewall window around its solver, and its settings survive the
// certificate's record, so a renewal without the config file opens the
// same window.
func TestFirewallPathWiring(t *testing.T) {
	st, err := store.NewFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := &Planner{log: slog.New(slog.DiscardHandler), Store: st, shared: st}
	ps := newPathSet()
	defer ps.Close()
	cp := config.Path{Name: "fw", Kind: "standalone", Settings: map[string]string{
		"challenge": "http-01", "listen": "127.0.0.1:0",
		firewall.KeyFirewall: "exec", firewall.KeyTimeout: "2m", firewall.KeyPort: "80",
		firewall.KeyOpen: "/o", firewall.KeyClose: "/c",
	}}
	sp, ref, err := p.build(context.Background(), ps, cp, solve.Env{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sp.Solver.(*firewall.Solver); !ok {
		t.Errorf("solver is %T, want a firewall window", sp.Solver)
	}
	spec, _ := kinds.Lookup("standalone")
	want, err := firewall.WindowOf(cp.SolveSettings(), *spec.Window)
	if err != nil {
		t.Fatal(err)
	}
	got, err := firewall.WindowOf(pathFromRef(ref).SolveSettings(), *spec.Window)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("from the record: %+v, %v; want %+v", got, err, want)
	}
}

// A path's kind-specific settings survive the trip through a certificate's
// record, so that `detour renew` rebuilds it without the config entry;
// secrets do not go into the record.
func TestPathSettingsSurviveTheRecord(t *testing.T) {
	p := config.Path{Name: "pp", Kind: "persist",
		Settings: map[string]string{"challenge": "dns-persist-01", "policy": "wildcard", "persist_until": "2030-01-01T00:00:00Z"}}
	spec, _ := kinds.Lookup(p.Kind)
	ref := refFor(spec, p)
	if got := pathFromRef(ref); !reflect.DeepEqual(got, p) {
		t.Errorf("round trip = %+v, want %+v", got, p)
	}

	secret := config.Path{Name: "ns", Kind: "rfc2136",
		Settings: map[string]string{"challenge": "dns-01", "server": "192.0.2.1:53", "tsig_key": "k", "tsig_secret": "c2VjcmV0", "tsig_algorithm": "hmac-sha256"}}
	kept := map[string]string{"challenge": "dns-01", "server": "192.0.2.1:53", "tsig_key": "k", "tsig_algorithm": "hmac-sha256"}
	spec, _ = kinds.Lookup(secret.Kind)
	ref = refFor(spec, secret)
	if !reflect.DeepEqual(ref.Settings, kept) {
		t.Errorf("recorded settings = %v, want %v (no secret)", ref.Settings, kept)
	}
	// With the config still defining the path, the record defers to it.
	ref.Name, ref.Kind = "ns", "rfc2136"
	cfg := &config.Config{Paths: map[string]config.Path{"ns": secret}}
	if got := recordPath(cfg, ref); !reflect.DeepEqual(got, secret) {
		t.Errorf("recordPath = %+v, want the config's path", got)
	}
	if got := recordPath(nil, ref); got.Setting("tsig_secret") != "" || got.Setting("server") != "192.0.2.1:53" {
		t.Errorf("recordPath without config = %+v", got)
	}
}

// TestOneBadCertificateDoesNotStopTheOthers: a certificate whose deploy
// settings cannot be read (a missing password_file) fails its own
// attempts; planning the others goes on.
func TestOneBadCertificateDoesNotStopTheOthers(t *testing.T) {
	cfg, err := config.Parse("detour.toml", []byte(`
default_ca = "https://acme.invalid/directory"
[[certificate]]
name = "a"
domains = ["a.example.com"]
[[certificate.output]]
path = "/tmp/a.p12"
format = "pkcs12"
password_file = "/nonexistent/detour/password"

[[certificate]]
name = "b"
domains = ["b.example.com"]
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Open(Options{Config: cfg, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := p.Renewals(t.Context(), nil, RequestOptions{})
	if err != nil || len(rs) != 2 {
		t.Fatalf("Renewals = %d, %v; want both certificates", len(rs), err)
	}
	if _, _, err := rs[0].Target.Request(t.Context(), 0); err == nil || !strings.Contains(err.Error(), "password_file") {
		t.Errorf("a's request: %v, want the password_file problem", err)
	}
	req, release, err := rs[1].Target.Request(t.Context(), 0)
	if err != nil {
		t.Fatalf("b's request: %v", err)
	}
	release()
	if req.Name != "b" {
		t.Errorf("request for %s, want b", req.Name)
	}
}
