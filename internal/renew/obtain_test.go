package renew_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/deploy"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/testenv"
)

func ids(t testing.TB, names ...string) []ident.Identifier {
	t.Helper()
	out, err := ident.ParseAll(names)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// checkLive asserts live/<name> holds a key pair that matches, for names.
func checkLive(t *testing.T, env *testenv.Env, name string, names ...string) *x509.Certificate {
	t.Helper()
	b, _, err := env.Store.LoadCertificate(ctx(t), name)
	if err != nil {
		t.Fatalf("loading live %s: %v", name, err)
	}
	if err := b.Verify(); err != nil {
		t.Fatalf("live %s: %v", name, err)
	}
	full, err := os.ReadFile(env.Store.LivePath(name, "fullchain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(full)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	got = append(got, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		got = append(got, ip.String())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("certificate names = %v, want %v", got, names)
	}
	return leaf
}

func TestObtainEveryPath(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	m := env.Manager(t)
	for _, n := range []string{"http.detour.test", "alpn.detour.test", "two.detour.test"} {
		env.AddName(n)
	}
	tests := []struct {
		name  string
		path  solve.Path
		names []string
	}{
		{"http", env.HTTPPath, []string{"http.detour.test", "127.0.0.1"}},
		{"alpn", env.TLSPath, []string{"alpn.detour.test"}},
		{"dns-wildcard", env.DNSPath, []string{"dns.detour.test", "*.dns.detour.test"}},
		{"ip-alpn", env.TLSPath, []string{"127.0.0.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := m.Obtain(ctx(t), renew.Request{
				Name: tc.name, Identifiers: ids(t, tc.names...), Profile: sandbox.ProfileShortLived,
				CA: env.RenewCA(t), Paths: []solve.Path{tc.path},
			})
			if err != nil {
				t.Fatalf("Obtain: %v", err)
			}
			if res.Version != 1 {
				t.Errorf("version = %d, want 1", res.Version)
			}
			leaf := checkLive(t, env, tc.name, tc.names...)
			if got := leaf.NotAfter.Sub(leaf.NotBefore).Round(time.Hour); got != 160*time.Hour {
				t.Errorf("lifetime = %v, want the shortlived profile's 160h", got)
			}
			rec, err := env.Store.LoadRecord(ctx(t), tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Profile != sandbox.ProfileShortLived || rec.Account == "" || rec.ARIID == "" || rec.Last == nil || !rec.Last.OK {
				t.Errorf("record incomplete: %+v", rec)
			}
		})
	}
}

func TestRenewKeepsPreviousVersion(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	m := env.Manager(t)
	env.AddName("www.detour.test")
	req := renew.Request{Name: "www", Identifiers: ids(t, "www.detour.test"), Profile: sandbox.ProfileTLSServer,
		CA: env.RenewCA(t), Paths: []solve.Path{env.HTTPPath}, KeyType: acme.ECDSAP384}
	if _, err := m.Obtain(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	first := checkLive(t, env, "www", "www.detour.test")
	rec, _ := env.Store.LoadRecord(ctx(t), "www")
	req.Replaces = rec.ARIID
	res, err := m.Obtain(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 2 {
		t.Fatalf("version = %d, want 2", res.Version)
	}
	second := checkLive(t, env, "www", "www.detour.test")
	if first.SerialNumber.Cmp(second.SerialNumber) == 0 {
		t.Error("renewal returned the same certificate")
	}
	versions, err := env.Store.ArchiveVersions(ctx(t), "www")
	if err != nil || len(versions) != 2 {
		t.Fatalf("archive versions = %v, %v; want [1 2]", versions, err)
	}
	old, err := os.ReadFile(filepath.Join(env.Store.Dir(), "archive", "www", "cert1.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(old)
	if c, _ := x509.ParseCertificate(blk.Bytes); c == nil || c.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Error("archive/www/cert1.pem is not the first certificate")
	}
	if kt, _ := acme.KeyTypeOf(second.PublicKey); kt != acme.ECDSAP384 {
		t.Errorf("key type = %v, want ecdsa-p384", kt)
	}
}

func TestPreflightFailsBeforeCA(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	m := env.Manager(t)
	_, err := m.Obtain(ctx(t), renew.Request{Name: "wild", Identifiers: ids(t, "*.detour.test"), Profile: sandbox.ProfileTLSServer,
		CA: env.RenewCA(t), Paths: []solve.Path{env.HTTPPath, env.TLSPath}})
	var rerr *renew.Error
	if !errors.As(err, &rerr) || rerr.Stage != "preflight" || rerr.AskedCA {
		t.Fatalf("err = %v, want a preflight error that did not ask the CA", err)
	}
	if !strings.Contains(err.Error(), "wildcard can only be validated with dns-01") {
		t.Errorf("error does not explain the wildcard rule: %v", err)
	}
	if _, err := env.Store.ListRecords(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := env.Store.LoadCertificate(ctx(t), "wild"); err == nil {
		t.Error("a certificate was stored after a failed preflight")
	}
}

func TestFailedRenewalKeepsLive(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	m := env.Manager(t)
	env.AddName("keep.detour.test")
	req := renew.Request{Name: "keep", Identifiers: ids(t, "keep.detour.test"), Profile: sandbox.ProfileTLSServer,
		CA: env.RenewCA(t), Paths: []solve.Path{env.HTTPPath}}
	if _, err := m.Obtain(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	before := checkLive(t, env, "keep", "keep.detour.test")
	// The renewal adds a name that does not resolve: the CA's validation
	// fails. (A new name, not the old one made unresolvable: Pebble
	// sometimes reuses the old name's valid authorization, and then
	// nothing is validated.)
	env.AddName("gone.detour.test")
	env.DNS.SetAddrs("gone.detour.test")
	req.Identifiers = ids(t, "keep.detour.test", "gone.detour.test")
	_, err := m.Obtain(ctx(t), req)
	var rerr *renew.Error
	if !errors.As(err, &rerr) || rerr.Stage != "validation" {
		t.Fatalf("err = %v, want a validation failure", err)
	}
	var verr *acme.ValidationError
	if !errors.As(err, &verr) || verr.Problem == nil {
		t.Errorf("err = %v, want the CA's problem document", err)
	}
	after := checkLive(t, env, "keep", "keep.detour.test")
	if before.SerialNumber.Cmp(after.SerialNumber) != 0 {
		t.Error("live certificate changed after a failed renewal")
	}
}

func TestFallbackToNextPath(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	m := env.Manager(t)
	env.AddName("fb.detour.test")
	broken := solve.Path{Name: "broken", Solver: failingSolver{typ: solve.HTTP01}}
	res, err := m.Obtain(ctx(t), renew.Request{Name: "fb", Identifiers: ids(t, "fb.detour.test"), Profile: sandbox.ProfileTLSServer,
		CA: env.RenewCA(t), Paths: []solve.Path{broken, env.TLSPath}})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.PathUsed["fb.detour.test"]; got != env.TLSPath.Name {
		t.Errorf("path used = %q, want %q", got, env.TLSPath.Name)
	}
}

func TestEABRequired(t *testing.T) {
	env := testenv.New(t, testenv.Options{CA: sandbox.CAOptions{RequireEAB: true, EABKeys: map[string]string{"kid-1": "c2FuZGJveC1lYWItaG1hYy1rZXktZm9yLXRlc3RzLW9ubHktMDEyMzQ1Njc4OQ"}}})
	m := env.Manager(t)
	env.AddName("eab.detour.test")
	req := renew.Request{Name: "eab", Identifiers: ids(t, "eab.detour.test"), Profile: sandbox.ProfileTLSServer,
		CA: env.RenewCA(t), Paths: []solve.Path{env.HTTPPath}}
	_, err := m.Obtain(ctx(t), req)
	if !errors.Is(err, acme.ErrEABRequired) || !strings.Contains(err.Error(), "eab_kid") {
		t.Fatalf("err = %v, want ErrEABRequired naming the settings", err)
	}
	req.CA.EAB = &acme.EAB{KeyID: "kid-1", HMACKey: "c2FuZGJveC1lYWItaG1hYy1rZXktZm9yLXRlc3RzLW9ubHktMDEyMzQ1Njc4OQ"}
	if _, err := m.Obtain(ctx(t), req); err != nil {
		t.Fatalf("with EAB: %v", err)
	}
}

func TestUnknownProfileListsOffered(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	m := env.Manager(t)
	_, err := m.Obtain(ctx(t), renew.Request{Name: "p", Identifiers: ids(t, "p.detour.test"), Profile: "nope",
		CA: env.RenewCA(t), Paths: []solve.Path{env.HTTPPath}})
	if err == nil || !strings.Contains(err.Error(), "shortlived") || !strings.Contains(err.Error(), "tlsserver") {
		t.Fatalf("err = %v, want the CA's profiles listed", err)
	}
}

func TestPreferredChain(t *testing.T) {
	env := testenv.New(t, testenv.Options{CA: sandbox.CAOptions{AlternateRoots: 1}})
	m := env.Manager(t)
	env.AddName("chain.detour.test")
	roots, err := env.CA.IssuerRootsPEM(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var rootNames []string
	for rest := roots; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, _ := x509.ParseCertificate(b.Bytes)
		rootNames = append(rootNames, c.Subject.CommonName)
	}
	if len(rootNames) != 2 {
		t.Fatalf("want 2 roots, got %v", rootNames)
	}
	for _, want := range rootNames {
		t.Run(want, func(t *testing.T) {
			_, err := m.Obtain(ctx(t), renew.Request{Name: "chain", Identifiers: ids(t, "chain.detour.test"), Profile: sandbox.ProfileTLSServer,
				CA: env.RenewCA(t), Paths: []solve.Path{env.HTTPPath}, PreferredChain: want})
			if err != nil {
				t.Fatal(err)
			}
			b, _, err := env.Store.LoadCertificate(ctx(t), "chain")
			if err != nil {
				t.Fatal(err)
			}
			var top *x509.Certificate
			for rest := b.ChainPEM; ; {
				var blk *pem.Block
				blk, rest = pem.Decode(rest)
				if blk == nil {
					break
				}
				top, _ = x509.ParseCertificate(blk.Bytes)
			}
			if top == nil || top.Issuer.CommonName != want {
				t.Errorf("chain tops out at %v, want issued by %q", top.Issuer.CommonName, want)
			}
		})
	}
}

func TestNonceRejection(t *testing.T) {
	env := testenv.New(t, testenv.Options{CA: sandbox.CAOptions{NonceRejectPercent: 30}})
	m := env.Manager(t)
	env.AddName("nonce.detour.test")
	for i := range 3 {
		if _, err := m.Obtain(ctx(t), renew.Request{Name: "nonce", Identifiers: ids(t, "nonce.detour.test"), Profile: sandbox.ProfileTLSServer,
			CA: env.RenewCA(t), Paths: []solve.Path{env.HTTPPath}}); err != nil {
			t.Fatalf("attempt %d with 30%% bad nonces: %v", i, err)
		}
	}
}

func TestRevokeAndARI(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	m := env.Manager(t)
	env.AddName("ari.detour.test")
	ca := env.RenewCA(t)
	if _, err := m.Obtain(ctx(t), renew.Request{Name: "ari", Identifiers: ids(t, "ari.detour.test"), Profile: sandbox.ProfileTLSServer,
		CA: ca, Paths: []solve.Path{env.HTTPPath}}); err != nil {
		t.Fatal(err)
	}
	b, _, _ := env.Store.LoadCertificate(ctx(t), "ari")
	start := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	end := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := env.CA.SetRenewalInfo(ctx(t), b.CertPEM, start, end); err != nil {
		t.Fatal(err)
	}
	leaf, _ := b.Leaf()
	ri, err := ca.Client.RenewalInfo(ctx(t), leaf)
	if err != nil {
		t.Fatal(err)
	}
	w := &store.ARIWindow{Start: ri.SuggestedWindow.Start, End: ri.SuggestedWindow.End}
	rec := store.Record{NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, ARI: w}
	if d := renew.Due(rec, time.Now(), 0.5); !d.Due {
		t.Errorf("a renewal window in the past must mean renew now; got %+v", d)
	}
	key, _ := acme.DecodeKey(b.KeyPEM)
	if err := ca.Client.Revoke(ctx(t), acme.Account{}, leaf, key, 4); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if err := ca.Client.Revoke(ctx(t), acme.Account{}, leaf, key, 4); !acme.IsProblem(err, "urn:ietf:params:acme:error:alreadyRevoked") {
		t.Errorf("second revoke: %v, want alreadyRevoked", err)
	}
}

func TestAccountRollover(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	m := env.Manager(t)
	ca := env.RenewCA(t)
	a1, err := m.Account(ctx(t), ca)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := m.RolloverAccount(ctx(t), ca)
	if err != nil {
		t.Fatal(err)
	}
	if a2.Location != a1.Location {
		t.Errorf("rollover changed the account URL: %s -> %s", a1.Location, a2.Location)
	}
	t1, _ := a1.Thumbprint()
	t2, _ := a2.Thumbprint()
	if t1 == t2 {
		t.Error("rollover kept the same key")
	}
	// The stored key is the new one and works.
	env.AddName("roll.detour.test")
	if _, err := m.Obtain(ctx(t), renew.Request{Name: "roll", Identifiers: ids(t, "roll.detour.test"), Profile: sandbox.ProfileTLSServer,
		CA: env.RenewCA(t), Paths: []solve.Path{env.HTTPPath}}); err != nil {
		t.Fatalf("issuing after rollover: %v", err)
	}
	rec, _ := env.Store.LoadRecord(ctx(t), "roll")
	if rec.Account != a1.Location {
		t.Errorf("account after rollover = %s, want %s", rec.Account, a1.Location)
	}
	if err := m.DeactivateAccount(ctx(t), env.RenewCA(t)); err != nil {
		t.Fatalf("deactivate: %v", err)
	}
}

// failingSolver is a path whose Present always fails.
type failingSolver struct{ typ string }

var _ solve.Solver = failingSolver{}

func (f failingSolver) Type() string                                  { return f.typ }
func (f failingSolver) Check(context.Context, ident.Identifier) error { return nil }
func (f failingSolver) Present(context.Context, solve.Challenge) error {
	return errors.New("forward missing")
}
func (f failingSolver) CleanUp(context.Context, solve.Challenge) error { return nil }

// BenchmarkIssue measures one complete issuance through Manager.Obtain
// (order, http-01 through the standalone path, finalize, download, and the
// fsynced store) against the in-process CA. Compare with the library floor,
// sandbox.BenchmarkIssuance (raw acmez, nothing stored), in the same run.
func BenchmarkIssue(b *testing.B) {
	env := testenv.New(b, testenv.Options{})
	m := env.Manager(b)
	env.AddName("bench.detour.test")
	ca := env.RenewCA(b)
	for _, bc := range []struct {
		name  string
		names []string
	}{
		{"one-name", []string{"bench.detour.test"}},
		{"two-names", []string{"bench.detour.test", "127.0.0.1"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := renew.Request{Name: "bench-" + bc.name, Identifiers: ids(b, bc.names...), Profile: sandbox.ProfileTLSServer,
				CA: ca, Paths: []solve.Path{env.HTTPPath}}
			if _, err := m.Obtain(context.Background(), req); err != nil { // account creation outside the loop
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := m.Obtain(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestSelfCheckPassesOverAndDeployRuns(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	m := env.Manager(t)
	env.AddName("sc.detour.test")
	var checked []string
	marker := filepath.Join(t.TempDir(), "deployed")
	res, err := m.Obtain(ctx(t), renew.Request{
		Name: "sc", Identifiers: ids(t, "sc.detour.test"), Profile: sandbox.ProfileTLSServer,
		CA: env.RenewCA(t), Paths: []solve.Path{env.HTTPPath, env.TLSPath},
		SelfCheck: func(_ context.Context, _ solve.Path, ch solve.Challenge) error {
			checked = append(checked, ch.Type)
			if ch.Type == solve.HTTP01 {
				return errors.New("nginx answered 404")
			}
			return nil
		},
		DeployHook: deploy.Hook{Command: `echo "$DETOUR_NAME $DETOUR_VERSION" > ` + marker},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.PathUsed["sc.detour.test"]; got != env.TLSPath.Name {
		t.Errorf("path used = %q, want the tls-alpn path after http-01's self-check failed", got)
	}
	// Before the order, a probe of Detour's own: http-01 fails, tls-alpn-01
	// passes; then the CA's real token on the path chosen.
	if strings.Join(checked, ",") != "http-01,tls-alpn-01,tls-alpn-01" {
		t.Errorf("self-checked %v", checked)
	}
	if got, _ := os.ReadFile(marker); strings.TrimSpace(string(got)) != "sc 1" {
		t.Errorf("deploy hook wrote %q", got)
	}
	// Every path failing its self-check stops before any validation. (A
	// name never validated: Pebble hands out an earlier valid authorization
	// about 1 % of the time even when told not to, and then nothing is
	// checked.)
	env.AddName("sc-fresh.detour.test")
	_, err = m.Obtain(ctx(t), renew.Request{
		Name: "sc", Identifiers: ids(t, "sc-fresh.detour.test"), Profile: sandbox.ProfileTLSServer,
		CA: env.RenewCA(t), Paths: []solve.Path{env.HTTPPath},
		SelfCheck: func(context.Context, solve.Path, solve.Challenge) error { return errors.New("forward missing") },
	})
	if err == nil || !strings.Contains(err.Error(), "self-check failed, so the CA was not asked: forward missing") {
		t.Fatalf("err = %v", err)
	}
	var rerr *renew.Error
	if !errors.As(err, &rerr) || rerr.Stage != "self-check" || rerr.AskedCA {
		t.Errorf("err = %#v, want stage self-check with the CA not asked", rerr)
	}
	if _, v, _ := env.Store.LoadCertificate(ctx(t), "sc"); v != 1 {
		t.Errorf("live version = %d after a failed self-check, want 1", v)
	}
}
