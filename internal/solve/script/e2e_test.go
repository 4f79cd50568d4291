package script_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/kinds"
	"github.com/detour-acme/detour/internal/solve/script"
	"github.com/detour-acme/detour/internal/solve/selfcheck"
	"github.com/detour-acme/detour/internal/testenv"
)

// TestIssueHTTP01 obtains a certificate from in-process Pebble through an
// exec path built from its spec, as a configuration builds it: the hooks
// write into the document root of a web server on the port Pebble
// validates on, Detour's probe and self-check fetch the answers the way
// the CA does before it is asked. A hook that publishes nothing is caught
// by the probe: no order is created.
func TestIssueHTTP01(t *testing.T) {
	tag := fmt.Sprintf("%06x", rand.IntN(1<<24))
	names := []string{"ex1-" + tag + ".detour.test", "ex2-" + tag + ".detour.test"}
	env := testenv.New(t, testenv.Options{KeepPorts: true})
	for _, n := range append(slices.Clone(names), "silent-"+tag+".detour.test") {
		env.AddName(n)
	}
	root, logs := t.TempDir(), t.TempDir()
	serveDir(t, env.HTTPAddr, root)
	auth, cleanup := publishHooks(t, root, logs)
	_, port, _ := net.SplitHostPort(env.HTTPAddr)
	httpPort, _ := strconv.Atoi(port)
	check := selfcheck.Func(selfcheck.Options{Resolver: selfcheck.ResolverAt(env.DNSAddr), HTTPPort: httpPort}, nil)
	build := func(t *testing.T, auth, cleanup string) solve.Path {
		sp, _ := kinds.Lookup(script.Kind)
		values := sp.WithDefaults(map[string]string{"auth": auth, "cleanup": cleanup})
		if probs := sp.Validate("hooks", values); len(probs) > 0 {
			t.Fatalf("settings %v: %v", values, probs)
		}
		s, err := sp.Build(t.Context(), solve.NewSettings("hooks", script.Kind, values), solve.Env{Logger: env.Log, Resolver: env.DNSAddr})
		if err != nil {
			t.Fatal(err)
		}
		return solve.Path{Name: "hooks", Solver: s}
	}
	m := env.Manager(t)

	t.Run("issued", func(t *testing.T) {
		ids, err := ident.ParseAll(names)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		res, err := m.Obtain(testCtx(t), renew.Request{Name: "exec-http", Identifiers: ids, CA: env.RenewCA(t),
			Paths: []solve.Path{build(t, auth, cleanup)}, SelfCheck: check})
		if err != nil {
			t.Fatalf("Obtain: %v", err)
		}
		t.Logf("issued in %v", time.Since(start).Round(time.Millisecond))
		if got := env.LeafNames(t, "exec-http"); !slices.Equal(got, names) {
			t.Errorf("certificate names %v, want %v", got, names)
		}
		for _, n := range names {
			if res.PathUsed[n] != "hooks" {
				t.Errorf("path used for %s: %q", n, res.PathUsed[n])
			}
		}
		// Per name: a probe and the CA's challenge, each published and
		// removed by the hooks; nothing is left in the document root.
		for _, n := range names {
			auths, _ := filepath.Glob(filepath.Join(logs, "auth-"+n+"-*"))
			cleanups, _ := filepath.Glob(filepath.Join(logs, "cleanup-"+n+"-*"))
			if len(auths) != 2 || len(cleanups) != 2 {
				t.Errorf("%s: the auth hook ran %d times, the cleanup hook %d times; want 2 and 2 (probe and challenge)", n, len(auths), len(cleanups))
			}
		}
		left, _ := os.ReadDir(filepath.Join(root, ".well-known", "acme-challenge"))
		if len(left) != 0 {
			t.Errorf("the document root still holds %d answers", len(left))
		}
	})

	t.Run("hook publishes nothing", func(t *testing.T) {
		silent := writeHook(t, t.TempDir(), "auth", "echo 'pretending to publish'\n")
		ids, _ := ident.ParseAll([]string{"silent-" + tag + ".detour.test"})
		_, err := m.Obtain(testCtx(t), renew.Request{Name: "exec-silent", Identifiers: ids, CA: env.RenewCA(t),
			Paths: []solve.Path{build(t, silent, "")}, SelfCheck: check})
		var re *renew.Error
		if !errors.As(err, &re) || re.AskedCA || !strings.Contains(err.Error(), "404") {
			t.Fatalf("Obtain = %v\nwant a self-check failure (a 404) before the CA is asked", err)
		}
		t.Logf("refused before the order: %v", err)
	})
}

// TestIssueDNS01 obtains a certificate for a name and its wildcard from
// in-process Pebble through a dns-01 exec path whose hooks set and remove
// the TXT records with curl through an API in front of the sandbox's DNS
// server, which Pebble's validation authority asks.
func TestIssueDNS01(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	api := startRecordAPI(t, env.DNS)
	logs := t.TempDir()
	auth, cleanup := dnsHooks(t, api, logs)
	s, err := script.New(script.Options{Logger: env.Log, Challenge: solve.DNS01, Auth: auth, Cleanup: cleanup,
		DNS: dnsClient(t, env.DNSAddr, sandbox.Zone), PropagationTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("%06x", rand.IntN(1<<24))
	names := []string{"exd-" + tag + ".detour.test", "*.exd-" + tag + ".detour.test"}
	ids, err := ident.ParseAll(names)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := env.Manager(t).Obtain(testCtx(t), renew.Request{Name: "exec-dns", Identifiers: ids, CA: env.RenewCA(t),
		Paths: []solve.Path{{Name: "hooks", Solver: s}}}); err != nil {
		t.Fatalf("Obtain: %v (record API calls: %q)", err, api.seen())
	}
	t.Logf("issued in %v", time.Since(start).Round(time.Millisecond))
	if got := env.LeafNames(t, "exec-dns"); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(names))) {
		t.Errorf("certificate names %v, want %v", got, names)
	}
	if calls := api.seen(); len(calls) != 4 {
		t.Errorf("the record API saw %q, want two additions and two removals", calls)
	}
	if got := env.DNS.TXT("_acme-challenge." + names[0] + "."); len(got) != 0 {
		t.Errorf("the sandbox DNS still answers TXT %q", got)
	}
	v := readVars(t, filepath.Join(logs, "cleanup-"+names[1]))
	if v["DETOUR_RECORD"] != "_acme-challenge."+names[0] || v["CERTBOT_DOMAIN"] != names[0] || v["CERTBOT_AUTH_OUTPUT"] != "added "+names[0] {
		t.Errorf("the cleanup hook of %s got %v", names[1], v)
	}
}
