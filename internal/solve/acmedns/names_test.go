package acmedns_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/acmedns"
)

// TestOtherRecordName drives the backend with an owner name other than
// dns-01's, as dns-account-01 will (_<label>._acme-challenge.<name>): the
// CNAME is demanded at that name, pointing at the domain's one account.
func TestOtherRecordName(t *testing.T) {
	w := newWorld(t)
	s := w.solver(t, acmedns.Options{PropagationTimeout: 10 * time.Second})
	rec := s.Records()
	const name = "_abc._acme-challenge.example.test."
	r := solve.TXTRecord{Name: name, Challenge: solve.Challenge{Type: solve.DNS01, Identifier: mustID(t, "example.test")}}

	var cerr *acmedns.CNAMEError
	if err := rec.CheckTXT(t.Context(), r); !errors.As(err, &cerr) {
		t.Fatalf("CheckTXT on first use: %v, want a *CNAMEError", err)
	}
	acct, created, err := s.Account(t.Context(), "example.test")
	if err != nil || created {
		t.Fatalf("Account after CheckTXT: created=%v err=%v, want the account CheckTXT registered", created, err)
	}
	want := name + " CNAME " + acct.Fulldomain + "."
	if cerr.Record != want || cerr.Name != name || cerr.Domain != "example.test" || !strings.HasSuffix(cerr.Error(), want) {
		t.Errorf("record %q, name %q, domain %q (message %q); want the record %q", cerr.Record, cerr.Name, cerr.Domain, cerr.Error(), want)
	}
	if got := acct.CNAMERecordAt(name); got != want {
		t.Errorf("CNAMERecordAt(%s) = %q, want %q", name, got, want)
	}
	if got, dns01 := acct.CNAMERecord("example.test"), "_acme-challenge.example.test. CNAME "+acct.Fulldomain+"."; got != dns01 {
		t.Errorf("CNAMERecord = %q, want dns-01's %q", got, dns01)
	}

	// dns-01's CNAME does not answer for another name.
	w.customer.SetCNAME("_acme-challenge.example.test", acct.Fulldomain)
	if err := rec.CheckTXT(t.Context(), r); !errors.As(err, &cerr) || cerr.Record != want || cerr.Found != "" {
		t.Fatalf("CheckTXT with only the dns-01 CNAME: %v, want the record %q demanded", err, want)
	}
	w.customer.SetCNAME(name, "somewhere-else.auth.detour.test")
	wantMsg := "_abc._acme-challenge.example.test points to somewhere-else.auth.detour.test., not to the acme-dns account; change the record to: " + want
	if err := rec.CheckTXT(t.Context(), r); !errors.As(err, &cerr) || cerr.Error() != wantMsg {
		t.Errorf("CheckTXT with a wrong CNAME: %v\nwant %s", err, wantMsg)
	}
	// Through a further CNAME, as for the wildcard too.
	w.customer.SetCNAME(name, "hop.example.test")
	w.customer.SetCNAME("hop.example.test", acct.Fulldomain)
	for _, id := range []string{"example.test", "*.example.test"} {
		r := r
		r.Challenge.Identifier = mustID(t, id)
		if err := rec.CheckTXT(t.Context(), r); err != nil {
			t.Errorf("CheckTXT(%s) with the CNAME in place: %v", id, err)
		}
	}
	if n := len(accountFiles(t, w)); n != 1 {
		t.Errorf("%d accounts stored, want the domain's one", n)
	}

	// The value is set and waited for at the account's name, and the CA's
	// resolver finds it through the CNAME at name.
	r.Value = solve.TXTValue("t.thumb")
	if err := rec.SetTXT(t.Context(), r); err != nil {
		t.Fatalf("SetTXT: %v", err)
	}
	if err := rec.WaitTXT(t.Context(), r); err != nil {
		t.Fatalf("WaitTXT: %v", err)
	}
	if got := txtAt(t, w.resolverAddr, name); !slices.Contains(got, r.Value) {
		t.Errorf("through the CNAME at %s the resolver sees %q, want %q", name, got, r.Value)
	}
	if err := rec.DeleteTXT(t.Context(), r); err != nil {
		t.Errorf("DeleteTXT: %v", err)
	}
}

// TestDNS01WrongCNAMEMessage pins dns-01's message for a CNAME that points
// elsewhere.
func TestDNS01WrongCNAMEMessage(t *testing.T) {
	w := newWorld(t)
	s := w.solver(t, acmedns.Options{})
	acct, _, err := s.Account(t.Context(), "example.test")
	if err != nil {
		t.Fatal(err)
	}
	w.customer.SetCNAME("_acme-challenge.example.test", "somewhere-else.auth.detour.test")
	want := "_acme-challenge.example.test points to somewhere-else.auth.detour.test., not to the acme-dns account; change the record to: " +
		"_acme-challenge.example.test. CNAME " + acct.Fulldomain + "."
	if err := s.Check(t.Context(), mustID(t, "example.test")); err == nil || err.Error() != want {
		t.Errorf("Check: %v\nwant %s", err, want)
	}
	// A CNAMEError built without Name, as before Name existed, reads the same.
	old := &acmedns.CNAMEError{Domain: "example.test", Record: acct.CNAMERecord("example.test"), Found: "somewhere-else.auth.detour.test."}
	if old.Error() != want {
		t.Errorf("CNAMEError without Name: %s\nwant %s", old.Error(), want)
	}
}

func TestNewChallenge(t *testing.T) {
	w := newWorld(t)
	if s := w.solver(t, acmedns.Options{Challenge: solve.DNS01}); s.Type() != solve.DNS01 {
		t.Errorf("type %q", s.Type())
	}
	_, err := acmedns.New(acmedns.Options{Server: w.apiURL, Storage: w.state, DNS: w.dnsClient(t), Challenge: solve.HTTP01})
	if err == nil || !strings.Contains(err.Error(), "not answered by a TXT record") {
		t.Errorf("New for http-01: %v, want a refusal", err)
	}
}
