package rfc2136_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/rfc2136"
	"github.com/detour-acme/detour/internal/testenv"
)

// TestIssueDNSAccount01ThroughBIND obtains a name and its wildcard through
// dns-account-01 from the in-process Pebble CA, whose validation authority
// resolves through a BIND resolver in front of a real BIND primary and
// secondary, with RFC 2136 updates; two ACME accounts order the same names
// at once, each at its own _<label>._acme-challenge name. Nothing is left
// on the primary afterwards.
func TestIssueDNSAccount01ThroughBIND(t *testing.T) {
	b := testenv.StartBIND(t, testenv.BINDOptions{Zones: zones, Secondary: true, Resolver: true})
	env := testenv.New(t, testenv.Options{VADNSAddr: b.ResolverAddr})
	m := env.Manager(t)
	names := []string{"detour.test", "*.detour.test"}
	ids, err := ident.ParseAll(names)
	if err != nil {
		t.Fatal(err)
	}
	var accts []acme.Account
	var cas []renew.CA
	for _, email := range []string{"a@detour.test", "b@detour.test"} {
		ca := env.RenewCA(t)
		ca.Email = email
		acct, err := m.Account(t.Context(), ca)
		if err != nil {
			t.Fatal(err)
		}
		accts, cas = append(accts, acct), append(cas, ca)
	}
	errs := make([]error, len(cas))
	var wg sync.WaitGroup
	for i := range cas {
		url := accts[i].Location
		s := newSolver(t, b, func(o *rfc2136.Options) {
			o.Challenge = solve.DNSAccount01
			o.AccountURL = func(context.Context) (string, error) { return url, nil }
		})
		if s.Type() != solve.DNSAccount01 {
			t.Fatalf("Type() = %s", s.Type())
		}
		wg.Go(func() {
			_, errs[i] = m.Obtain(t.Context(), renew.Request{Name: fmt.Sprintf("account-%d", i), Identifiers: ids, CA: cas[i],
				Profile: env.CA.DefaultProfile(), Paths: []solve.Path{{Name: "bind", Solver: s}}})
		})
	}
	wg.Wait()
	for i := range cas {
		if errs[i] != nil {
			t.Fatalf("account %s: %v", accts[i].Location, errs[i])
		}
		if got := env.LeafNames(t, fmt.Sprintf("account-%d", i)); !slices.Equal(got, names) {
			t.Errorf("certificate %d names = %v, want %v", i, got, names)
		}
		owner := "_" + solve.AccountLabel(accts[i].Location) + "._acme-challenge.detour.test."
		if got := txtAt(t, b.Addr, owner); len(got) != 0 {
			t.Errorf("the primary still holds %q at %s after the order", got, owner)
		}
	}
}
