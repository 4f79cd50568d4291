package acmedns_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/acmedns"
	"github.com/detour-acme/detour/internal/store"
)

// TestIssueThroughACMEDNS obtains a certificate for a name and its wildcard
// from an in-process Pebble CA through the acme-dns path: the customer's
// zone holds only the one CNAME, the CA's resolver follows it into the
// acme-dns zone, and both dns-01 values (one per authorization, same
// name) are served there at once.
func TestIssueThroughACMEDNS(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	ca, err := sandbox.StartCA(ctx, sandbox.CAOptions{DNSAddr: w.resolverAddr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close() })
	client, err := acme.New(acme.Options{Directory: ca.DirectoryURL(), RootsPEM: ca.TLSRootsPEM(), PollMin: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	mgr, err := renew.New(renew.Options{Store: w.state})
	if err != nil {
		t.Fatal(err)
	}
	s := w.solver(t, acmedns.Options{PropagationTimeout: 30 * time.Second})
	ids := []ident.Identifier{mustID(t, "example.test"), mustID(t, "*.example.test")}
	req := renew.Request{
		Name: "example.test", Identifiers: ids, Profile: ca.DefaultProfile(),
		CA:    renew.CA{Client: client, Name: "pebble", Email: "t@example.test", AgreeTOS: true},
		Paths: []solve.Path{{Name: "acme-dns", Solver: s}},
		Refs:  []store.PathRef{{Name: "acme-dns", Kind: "acme-dns"}},
	}

	// First attempt: the account is registered and the order stops before
	// the CA is asked anything, naming the CNAME to create.
	_, err = mgr.Obtain(ctx, req)
	var rerr *renew.Error
	if !errors.As(err, &rerr) || rerr.AskedCA || rerr.Stage != "preflight" {
		t.Fatalf("first Obtain: %v; want a preflight failure, before asking the CA", err)
	}
	acct, _, err := s.Account(ctx, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	if want := "_acme-challenge.example.test. CNAME " + acct.Fulldomain + "."; !strings.Contains(rerr.Error(), want) {
		t.Errorf("first Obtain: %v; want it to name the record %q", rerr, want)
	}
	// The user creates the record the error names.
	w.customer.SetCNAME("_acme-challenge.example.test", acct.Fulldomain)

	res, err := mgr.Obtain(ctx, req)
	if err != nil {
		t.Fatalf("Obtain with the CNAME in place: %v", err)
	}
	b, _, err := w.state.LoadCertificate(ctx, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b.CertPEM)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	names := slices.Sorted(slices.Values(leaf.DNSNames))
	if !slices.Equal(names, []string{"*.example.test", "example.test"}) {
		t.Errorf("certificate names %v, want example.test and *.example.test", names)
	}
	if res.PathUsed["example.test"] != "acme-dns" || res.PathUsed["*.example.test"] != "acme-dns" {
		t.Errorf("paths used %v", res.PathUsed)
	}
	if got := w.auth.TXT(acct.Fulldomain); len(got) != 2 {
		t.Errorf("acme-dns zone holds %q after issuance, want both values (they expire by themselves)", got)
	}
}
