package persist_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/persist"
	"github.com/detour-acme/detour/internal/testenv"
)

// world is Pebble (draft-01, issuer pebble.letsencrypt.org) with Detour's
// DNS responder, authoritative for detour.test, as the only name server.
type world struct {
	env *testenv.Env
	m   *renew.Manager
	dns *dns.Client
}

func newWorld(t *testing.T) *world {
	t.Helper()
	env := testenv.New(t, testenv.Options{})
	// The zone's NS host must resolve for the authoritative check; the
	// sandbox answers on one port for everything.
	env.AddName("ns." + sandbox.Zone)
	_, port, _ := net.SplitHostPort(env.DNSAddr)
	n, _ := strconv.Atoi(port)
	c, err := dns.New(dns.Options{Resolver: env.DNSAddr, Port: n})
	if err != nil {
		t.Fatal(err)
	}
	return &world{env: env, m: env.Manager(t), dns: c}
}

// path returns a persist path bound to ca's account at the sandbox CA.
func (w *world) path(t *testing.T, ca renew.CA, policy string) solve.Path {
	t.Helper()
	s, err := persist.New(persist.Options{
		Logger: w.env.Log, Policy: policy, Lookup: persist.DNSLookup{Client: w.dns},
		Binding: func(ctx context.Context) (persist.Binding, error) {
			acct, err := w.m.Account(ctx, ca)
			if err != nil {
				return persist.Binding{}, err
			}
			tp, err := acme.Thumbprint(acct)
			if err != nil {
				return persist.Binding{}, err
			}
			meta, err := persist.FetchMeta(ctx, persist.MetaOptions{Directory: ca.Client.DirectoryURL(), RootBundle: ca.RootBundle})
			return persist.Binding{AccountURL: acct.Location, Thumbprint: tp, Meta: meta}, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return solve.Path{Name: "persist", Solver: s}
}

// txtSnapshot returns every TXT value a certificate for base could touch.
func (w *world) txtSnapshot(base string) map[string][]string {
	out := map[string][]string{}
	for _, n := range []string{"_validation-persist." + base, "_acme-challenge." + base} {
		out[n] = slices.Clone(w.env.DNS.TXT(n))
	}
	return out
}

func ids(t *testing.T, names ...string) []ident.Identifier {
	t.Helper()
	out, err := ident.ParseAll(names)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestPebble(t *testing.T) {
	w := newWorld(t)
	ca := w.env.RenewCA(t)
	acct, err := w.m.Account(testCtx(t), ca)
	if err != nil {
		t.Fatal(err)
	}
	// The record written out by hand from draft-01 §4.1, not by Record:
	// issuer from the directory's caaIdentities, the account URL as is.
	mine := sandbox.DefaultCAAIdentity + "; accounturi=" + acct.Location
	request := func(name string, p solve.Path, names ...string) renew.Request {
		return renew.Request{Name: name, Identifiers: ids(t, names...), Profile: sandbox.ProfileTLSServer, CA: ca, Paths: []solve.Path{p}}
	}

	t.Run("missing record fails at Check with the record and no order", func(t *testing.T) {
		start := time.Now()
		_, err := w.m.Obtain(testCtx(t), request("missing", w.path(t, ca, ""), "missing.detour.test"))
		t.Logf("preflight refused in %s", time.Since(start).Round(time.Microsecond))
		var re *renew.Error
		if !errors.As(err, &re) || re.Stage != "preflight" || re.AskedCA {
			t.Fatalf("Obtain = %v, want a preflight failure that asked the CA nothing", err)
		}
		for _, want := range []string{
			"ns.detour.test. (" + w.env.DNSAddr + "): no TXT record",
			`publish exactly this record: _validation-persist.missing.detour.test. IN TXT "` + mine + `"`,
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %s:\n%v", want, err)
			}
		}
	})

	t.Run("name and wildcard issue with no DNS change", func(t *testing.T) {
		const base = "shop.detour.test"
		w.env.DNS.AddTXT("_validation-persist."+base, mine+"; policy=wildcard", time.Time{}) // standing, never expires
		before := w.txtSnapshot(base)
		start := time.Now()
		res, err := w.m.Obtain(testCtx(t), request("shop", w.path(t, ca, persist.PolicyWildcard), base, "*."+base))
		if err != nil {
			t.Fatalf("Obtain: %v", err)
		}
		t.Logf("issued %s and *.%s through dns-persist-01 in %s", base, base, time.Since(start).Round(time.Millisecond))
		if after := w.txtSnapshot(base); !equalSnapshots(before, after) {
			t.Errorf("DNS changed during the order:\nbefore %v\nafter  %v", before, after)
		}
		if got := w.env.DNS.TXT("_acme-challenge." + base); len(got) != 0 {
			t.Errorf("a dns-01 record appeared: %v", got)
		}
		for n, p := range res.PathUsed {
			if p != "persist" {
				t.Errorf("%s validated by %s", n, p)
			}
		}
		leaf := liveLeaf(t, w, "shop")
		slices.Sort(leaf.DNSNames)
		if want := []string{"*." + base, base}; !slices.Equal(leaf.DNSNames, want) {
			t.Errorf("certificate names = %v, want %v", leaf.DNSNames, want)
		}
		// The record still answers the next renewal.
		if _, err := w.m.Obtain(testCtx(t), request("shop", w.path(t, ca, persist.PolicyWildcard), base, "*."+base)); err != nil {
			t.Fatalf("second Obtain with the same record: %v", err)
		}
	})

	t.Run("record for another account", func(t *testing.T) {
		const name = "other.detour.test"
		other := ca
		other.Client, other.Email = w.env.Client(t), "other@detour.test"
		otherAcct, err := w.m.Account(testCtx(t), other)
		if err != nil {
			t.Fatal(err)
		}
		if otherAcct.Location == acct.Location {
			t.Fatal("the second account has the first one's URL")
		}
		w.env.DNS.AddTXT("_validation-persist."+name, sandbox.DefaultCAAIdentity+"; accounturi="+otherAcct.Location, time.Time{})

		_, err = w.m.Obtain(testCtx(t), request("other", w.path(t, ca, ""), name))
		var re *renew.Error
		if !errors.As(err, &re) || re.Stage != "preflight" || re.AskedCA {
			t.Fatalf("Obtain = %v, want a preflight failure", err)
		}
		for _, s := range []string{"another account (accounturi=" + otherAcct.Location + ")", `IN TXT "` + mine + `"`} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error lacks %q:\n%v", s, err)
			}
		}

		// Without the preflight, the CA itself refuses the record: the
		// Check predicted the CA's verdict rather than inventing one.
		blind := w.path(t, ca, "")
		blind.Solver = noCheck{blind.Solver}
		_, err = w.m.Obtain(testCtx(t), request("other", blind, name))
		if !errors.As(err, &re) || re.Stage != "validation" || !re.AskedCA || !strings.Contains(err.Error(), "accounturi mismatch") {
			t.Fatalf("Obtain without Check = %v, want the CA's accounturi mismatch", err)
		}
	})
}

// noCheck hides a solver's Check, to show what the CA does without it.
type noCheck struct{ solve.Solver }

func (noCheck) Check(context.Context, ident.Identifier) error { return nil }

func equalSnapshots(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func liveLeaf(t *testing.T, w *world, name string) *x509.Certificate {
	t.Helper()
	b, _, err := w.env.Store.LoadCertificate(testCtx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b.CertPEM)
	if blk == nil {
		t.Fatal("no PEM in the live certificate")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}
