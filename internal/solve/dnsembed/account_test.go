package dnsembed_test

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
	"github.com/detour-acme/detour/internal/solve/dnsembed"
	"github.com/detour-acme/detour/internal/testenv"
)

// TestDNSAccount01TwoAccounts obtains one name and its wildcard from the
// in-process Pebble CA through dns-account-01 answered by the embedded DNS
// responder, for two ACME accounts at once: each account's records live at
// its own _<label>._acme-challenge name, so the two orders never touch
// each other's record, and every record is gone afterwards.
func TestDNSAccount01TwoAccounts(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	m := env.Manager(t)
	names := []string{"acct.detour.test", "*.acct.detour.test"}
	ids, err := ident.ParseAll(names)
	if err != nil {
		t.Fatal(err)
	}
	type order struct {
		ca    renew.CA
		acct  acme.Account
		label string
	}
	var orders []order
	for _, email := range []string{"a@detour.test", "b@detour.test"} {
		ca := env.RenewCA(t)
		ca.Email = email
		acct, err := m.Account(t.Context(), ca)
		if err != nil {
			t.Fatal(err)
		}
		orders = append(orders, order{ca: ca, acct: acct, label: solve.AccountLabel(acct.Location)})
	}
	if orders[0].acct.Location == orders[1].acct.Location || orders[0].label == orders[1].label {
		t.Fatalf("the two accounts are one: %s", orders[0].acct.Location)
	}
	errs := make([]error, len(orders))
	var wg sync.WaitGroup
	for i, o := range orders {
		url := o.acct.Location
		s, err := dnsembed.New(dnsembed.Options{Server: env.DNS, QueryAddr: env.DNSAddr, Challenge: solve.DNSAccount01,
			AccountURL: func(context.Context) (string, error) { return url, nil }})
		if err != nil {
			t.Fatal(err)
		}
		if s.Type() != solve.DNSAccount01 {
			t.Fatalf("Type() = %s", s.Type())
		}
		wg.Go(func() {
			_, errs[i] = m.Obtain(t.Context(), renew.Request{Name: fmt.Sprintf("acct-%d", i), Identifiers: ids, CA: o.ca,
				Profile: env.CA.DefaultProfile(), Paths: []solve.Path{{Name: "dns-embedded", Solver: s}}})
		})
	}
	wg.Wait()
	for i, o := range orders {
		if errs[i] != nil {
			t.Fatalf("account %s: %v", o.acct.Location, errs[i])
		}
		if got := env.LeafNames(t, fmt.Sprintf("acct-%d", i)); !slices.Equal(got, names) {
			t.Errorf("certificate %d names = %v, want %v", i, got, names)
		}
		owner := "_" + o.label + "._acme-challenge.acct.detour.test."
		if got := env.DNS.TXT(owner); len(got) != 0 {
			t.Errorf("%s still holds %q after the order", owner, got)
		}
	}
	if got := env.DNS.TXT("_acme-challenge.acct.detour.test."); len(got) != 0 {
		t.Errorf("the dns-01 name holds %q: dns-account-01 must not use it", got)
	}
}
