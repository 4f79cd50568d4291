package rfc2136_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/rfc2136"
	"github.com/detour-acme/detour/internal/testenv"
)

// TestIssueThroughBIND obtains certificates from the in-process Pebble CA,
// whose validation authority resolves through a BIND resolver in front of a
// real BIND primary, with the TXT records set by RFC 2136 updates; the
// secondary must answer too before the CA is asked.
func TestIssueThroughBIND(t *testing.T) {
	b := testenv.StartBIND(t, testenv.BINDOptions{Zones: zones, Secondary: true, Resolver: true})
	env := testenv.New(t, testenv.Options{VADNSAddr: b.ResolverAddr})
	m := env.Manager(t)
	good := solve.Path{Name: "bind", Solver: newSolver(t, b, nil)}
	wrongSecret := solve.Path{Name: "bind", Solver: newSolver(t, b, func(o *rfc2136.Options) {
		o.TSIGSecret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	})}
	tests := []struct {
		name    string
		path    solve.Path
		names   []string
		wantErr string // a preflight error: nothing asked of the CA
	}{
		{name: "name and wildcard", path: good, names: []string{"detour.test", "*.detour.test"}},
		{name: "CNAME into another zone", path: good, names: []string{"www.detour.test"}},
		{name: "wrong TSIG secret", path: wrongSecret, names: []string{"detour.test"},
			wantErr: "wrong TSIG key name or secret for zone detour.test (NOTAUTH/BADSIG); check tsig_key and tsig_secret against the key in named.conf"},
		{name: "zone not found", path: good, names: []string{"nowhere.invalid"},
			wantErr: "the zone of nowhere.invalid could not be found"},
		{name: "CNAME loop", path: good, names: []string{"loop.detour.test"},
			wantErr: "CNAME loop: _acme-challenge.loop.detour.test. -> hop.detour.test. -> _acme-challenge.loop.detour.test."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids, err := ident.ParseAll(tt.names)
			if err != nil {
				t.Fatal(err)
			}
			name := strings.ToLower(strings.ReplaceAll(tt.name, " ", "-"))
			start := time.Now()
			res, err := m.Obtain(t.Context(), renew.Request{Name: name, Identifiers: ids, CA: env.RenewCA(t), Paths: []solve.Path{tt.path}})
			if tt.wantErr != "" {
				var re *renew.Error
				if !errors.As(err, &re) || re.Stage != "preflight" || re.AskedCA || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Obtain = %v\nwant a preflight error (no order created) containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Obtain: %v", err)
			}
			t.Logf("issued %v in %s", tt.names, time.Since(start))
			if got := env.LeafNames(t, name); !slices.Equal(got, tt.names) {
				t.Errorf("certificate names = %v, want %v", got, tt.names)
			}
			if res.PathUsed[tt.names[0]] != "bind" {
				t.Errorf("path used = %v, want bind", res.PathUsed)
			}
			// CleanUp left no challenge record behind on the primary.
			for _, owner := range []string{"_acme-challenge.detour.test.", "www.auth.test."} {
				if got := txtAt(t, b.Addr, owner); len(got) != 0 {
					t.Errorf("the primary still holds %q at %s after the order", got, owner)
				}
			}
		})
	}
}
