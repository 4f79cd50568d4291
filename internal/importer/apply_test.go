package importer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
)

// importFixture is a certbot directory with two lineages, mapped.
func importFixture(t *testing.T) (*certbotDir, ImportPlan, *store.FS) {
	t.Helper()
	d := newCertbotDir(t)
	d.lineage("www", 2, []string{"www.example.com"}, "authenticator = webroot", "webroot_path = /var/www,")
	d.lineage("api", 1, []string{"api.example.com"}, "authenticator = standalone")
	src, err := ReadCertbot(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.NewFS(filepath.Join(t.TempDir(), "state"), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d, Plan(src, PlanOptions{StateDir: st.Dir()}), st
}

// TestImportAccountIsRenewals: the account Apply stores is the one
// renewals use, with no request to the CA (the directory of the fixture
// has nothing listening): renew's account record and the importer's agree.
func TestImportAccountIsRenewals(t *testing.T) {
	d, p, st := importFixture(t)
	rep, err := Apply(t.Context(), st, p, false)
	if err != nil || rep.Err() != nil {
		t.Fatalf("apply: %v %v %+v", err, rep.Err(), rep.Items)
	}
	m, err := renew.New(renew.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	client, err := acme.New(acme.Options{Directory: testServer, HTTPClient: &http.Client{Transport: failTransport{t}}})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	acct, err := m.Account(t.Context(), renew.CA{Client: client})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := acme.Thumbprint(acme.Account{PrivateKey: d.key})
	got, _ := acme.Thumbprint(acct)
	if acct.Location != d.acct || got != want {
		t.Errorf("renewals use account %s (key %s), want the imported %s (key %s)", acct.Location, got, d.acct, want)
	}
	rec, err := st.LoadRecord(t.Context(), "www")
	if err != nil {
		t.Fatal(err)
	}
	versions, _ := st.ArchiveVersions(t.Context(), "www")
	live, _, _ := st.LoadCertificate(t.Context(), "www")
	leaf, _ := live.Leaf()
	ari, _ := acme.ARIID(leaf)
	if len(versions) != 2 || rec.Version != 2 || rec.ARIID != ari || rec.Account != d.acct || rec.CA != testServer || rec.Serial != leaf.SerialNumber.Text(16) {
		t.Errorf("record %+v, versions %v", rec, versions)
	}
}

type failTransport struct{ t *testing.T }

func (f failTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	f.t.Errorf("unexpected request to the CA: %s %s", r.Method, r.URL)
	return nil, fmt.Errorf("no network in this test")
}

// TestImportIdempotent: a second run writes nothing; a run interrupted
// before the record is finished by the next without storing a version
// twice; a dry run writes nothing, also without a state directory.
func TestImportIdempotent(t *testing.T) {
	_, p, st := importFixture(t)
	ctx := t.Context()
	if _, err := Apply(ctx, nil, p, true); err != nil {
		t.Fatal(err)
	}
	sum := stateSum(t, st.Dir())
	rep, err := Apply(ctx, st, p, true)
	if err != nil || rep.Count(Imported) != 3 || stateSum(t, st.Dir()) != sum {
		t.Fatalf("dry run: %v %+v, or it wrote", err, rep.Items)
	}
	if rep, err := Apply(ctx, st, p, false); err != nil || rep.Count(Imported) != 3 {
		t.Fatalf("first run: %v %+v", err, rep.Items)
	}
	sum = stateSum(t, st.Dir())
	rep, err = Apply(ctx, st, p, false)
	if err != nil || rep.Count(Already) != 3 || stateSum(t, st.Dir()) != sum {
		t.Errorf("second run: %v %+v, or it wrote", err, rep.Items)
	}
	// As if the first run had died before the record of www.
	if err := os.Remove(filepath.Join(st.Dir(), "renewal", "www.json")); err != nil {
		t.Fatal(err)
	}
	rep, err = Apply(ctx, st, p, false)
	it, _ := rep.Item(KindCertificate, "www")
	versions, _ := st.ArchiveVersions(ctx, "www")
	if err != nil || it.Outcome != Imported || len(versions) != 2 {
		t.Errorf("resumed run: %v %+v, versions %v", err, it, versions)
	}
	if rec, err := st.LoadRecord(ctx, "www"); err != nil || rec.Version != 2 {
		t.Errorf("resumed run: record %+v, %v", rec, err)
	}
}

// TestImportConflicts: what Detour holds under the same names is never
// overwritten, and a conflict of one certificate stops no other.
func TestImportConflicts(t *testing.T) {
	_, p, st := importFixture(t)
	ctx := context.Background()
	other := newIssuer(t)
	cert, key := other.issue(t, "www.example.com")
	if _, err := st.PutCertificate(ctx, "www", store.Bundle{CertPEM: cert, ChainPEM: other.pem, KeyPEM: key}); err != nil {
		t.Fatal(err)
	}
	rep, err := Apply(ctx, st, p, false)
	if err != nil {
		t.Fatal(err)
	}
	www, _ := rep.Item(KindCertificate, "www")
	api, _ := rep.Item(KindCertificate, "api")
	if www.Outcome != Conflict || api.Outcome != Imported {
		t.Errorf("www %+v, api %+v; want a conflict for www only", www, api)
	}
	wantIn(t, "the conflict", www.Detail, `Detour already has a certificate named "www"`)
	if versions, _ := st.ArchiveVersions(ctx, "www"); len(versions) != 1 {
		t.Errorf("Detour's www has versions %v, want its own one only", versions)
	}
	if live, _, err := st.LoadCertificate(ctx, "www"); err != nil || string(live.CertPEM) != string(cert) {
		t.Errorf("Detour's live www changed (%v)", err)
	}

	// Another account under the prefix: it stays, nothing of its
	// certificates is imported.
	_, p2, st2 := importFixture(t)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kp, _ := acme.EncodeKey(k)
	prefix := p2.Accounts[0].Prefix
	if err := st2.Store(ctx, prefix+"/account.key", kp); err != nil {
		t.Fatal(err)
	}
	sum := stateSum(t, st2.Dir())
	rep, err = Apply(ctx, st2, p2, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Count(Conflict) != 3 || stateSum(t, st2.Dir()) != sum {
		t.Errorf("with another account at %s: %+v, or it wrote", prefix, rep.Items)
	}
	acct, _ := rep.Item(KindAccount, prefix)
	wantIn(t, "the account conflict", acct.Detail, "holds another account key", "move that directory away")
}

// stateSum hashes the files of a state directory, locks left out.
func stateSum(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "locks" {
			return filepath.SkipDir
		}
		fmt.Fprintln(h, p, d.Type())
		if d.Type().IsRegular() {
			raw, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(raw)
		} else if d.Type()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			fmt.Fprintln(h, target)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
