package migrate_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/store/etcdstore"
	"github.com/detour-acme/detour/internal/store/migrate"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

const prefix = "/detour"

// env is a single host's state directory and a fleet's etcd store.
type env struct {
	t    *testing.T
	from *store.FS
	to   *etcdstore.Store
	cli  *clientv3.Client
}

// newEnv starts a one-member etcd cluster and opens an empty state
// directory and the fleet's store on it.
func newEnv(t *testing.T) *env {
	t.Helper()
	cluster := etcdtest.New(t, etcdtest.Options{Members: 1})
	cli := cluster.Client(nil)
	keyFile := filepath.Join(t.TempDir(), "fleet.key")
	if err := etcdstore.NewKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	keys, err := etcdstore.LoadKeys(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	to, err := etcdstore.Open(ctx, etcdstore.Options{Client: cli, Prefix: prefix, FleetID: "web", Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = to.Close() })
	from, err := store.NewFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, from: from, to: to, cli: cli}
}

// run migrates and fails the test on an error that stops the run.
func (e *env) run(dryRun bool) migrate.Report {
	e.t.Helper()
	rep, err := migrate.Run(e.t.Context(), migrate.Options{From: e.from, To: e.to, Client: e.cli, DryRun: dryRun})
	if err != nil {
		e.t.Fatalf("Run: %v", err)
	}
	return rep
}

// revision returns etcd's current revision: it changes with every write.
func (e *env) revision() int64 {
	e.t.Helper()
	resp, err := e.cli.Get(e.t.Context(), "revision-probe")
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.Header.Revision
}

// newBundle returns a valid bundle for cn: a self-signed leaf, a
// self-signed "intermediate" as its chain, and the leaf's key.
func newBundle(t *testing.T, cn string) store.Bundle {
	t.Helper()
	selfSigned := func(cn string) ([]byte, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key
	}
	leaf, key := selfSigned(cn)
	chain, _ := selfSigned("Test Intermediate")
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return store.Bundle{CertPEM: leaf, ChainPEM: chain, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})}
}

// issue stores versions new versions of name in the state directory,
// the way a renewal does, and its record describing the last one.
func (e *env) issue(name string, versions int) store.Record {
	e.t.Helper()
	ctx := e.t.Context()
	var n int
	var b store.Bundle
	for range versions {
		b = newBundle(e.t, name+".example")
		var err error
		if n, err = e.from.PutCertificate(ctx, name, b); err != nil {
			e.t.Fatal(err)
		}
	}
	leaf, err := b.Leaf()
	if err != nil {
		e.t.Fatal(err)
	}
	rec := store.Record{Name: name, Identifiers: []string{name + ".example"}, CA: "https://ca.example/dir", Account: "https://ca.example/acct/1",
		KeyType: "ecdsa-p256", Paths: []store.PathRef{{Name: "web", Kind: "webroot", Settings: map[string]string{"root": "/var/www"}}},
		Version: n, Serial: leaf.SerialNumber.Text(16), LiveSum: b.LiveSum(), NotBefore: leaf.NotBefore.UTC(), NotAfter: leaf.NotAfter.UTC(),
		Issued: leaf.NotBefore.UTC(), Last: &store.Attempt{Time: time.Now().UTC().Truncate(time.Second), OK: true, Path: "web"}}
	if err := e.from.SaveRecord(ctx, rec); err != nil {
		e.t.Fatal(err)
	}
	return rec
}

// account stores an ACME account in the state directory, as the renewals
// do: its key (a secret) and its description.
func (e *env) account() []string {
	e.t.Helper()
	keys := []string{"accounts/ca.example/default/account.key", "accounts/ca.example/default/account.json"}
	values := [][]byte{newBundle(e.t, "account").KeyPEM, []byte(`{"location":"https://ca.example/acct/1"}`)}
	for i, k := range keys {
		if err := e.from.Store(e.t.Context(), k, values[i]); err != nil {
			e.t.Fatal(err)
		}
	}
	return keys
}

// snapshot describes every file of the state directory: its mode, and its
// content's hash or a link's target.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		desc := info.Mode().String()
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " " + hex.EncodeToString(sum[:])
		}
		out[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkSame fails unless the state directory is as snapshot before
// described it.
func checkSame(t *testing.T, dir string, before map[string]string) {
	t.Helper()
	after := snapshot(t, dir)
	for p, d := range before {
		if after[p] != d {
			t.Errorf("the state directory changed: %s was %q, is %q", p, d, after[p])
		}
	}
	for p, d := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("the state directory changed: %s (%s) is new", p, d)
		}
	}
}

// versionDoc is the part of a version's etcd document a test compares
// (the layout of package etcdstore; the key is encrypted).
type versionDoc struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	Cert    string `json:"cert"`
	Chain   string `json:"chain"`
}

// checkCert fails unless etcd holds exactly versions of name (each with
// the certificate and chain of the state directory's version of that
// number) and live is live, with the state directory's bundle.
func (e *env) checkCert(name string, versions []int, live int) {
	e.t.Helper()
	ctx := e.t.Context()
	got, err := e.to.ArchiveVersions(ctx, name)
	if err != nil || !slices.Equal(got, versions) {
		e.t.Errorf("%s: etcd versions %v (%v), want %v", name, got, err, versions)
	}
	b, n, err := e.to.LoadCertificate(ctx, name)
	if err != nil || n != live {
		e.t.Fatalf("%s: etcd live version %d (%v), want %d", name, n, err, live)
	}
	if want := e.fsVersion(name, live); string(b.CertPEM) != string(want.CertPEM) || string(b.ChainPEM) != string(want.ChainPEM) || string(b.KeyPEM) != string(want.KeyPEM) {
		e.t.Errorf("%s: etcd's live bundle differs from version %d of the state directory", name, live)
	}
	for _, v := range versions {
		resp, err := e.cli.Get(ctx, prefix+"/store/certs/"+name+"/versions/"+strconv.Itoa(v))
		if err != nil || len(resp.Kvs) != 1 {
			e.t.Fatalf("%s: version %d in etcd: %v", name, v, err)
		}
		var doc versionDoc
		if err := json.Unmarshal(resp.Kvs[0].Value, &doc); err != nil {
			e.t.Fatal(err)
		}
		want := e.fsVersion(name, v)
		if doc.Name != name || doc.Version != v || doc.Cert != string(want.CertPEM) || doc.Chain != string(want.ChainPEM) {
			e.t.Errorf("%s: etcd's version %d is not the state directory's", name, v)
		}
	}
}

// fsVersion reads version n of name from the state directory's archive.
func (e *env) fsVersion(name string, n int) store.Bundle {
	e.t.Helper()
	read := func(kind string) []byte {
		b, err := os.ReadFile(filepath.Join(e.from.Dir(), "archive", name, kind+strconv.Itoa(n)+".pem"))
		if err != nil {
			e.t.Fatal(err)
		}
		return b
	}
	return store.Bundle{CertPEM: read("cert"), ChainPEM: read("chain"), KeyPEM: read("privkey")}
}

// checkRecord fails unless etcd holds want as the record of its name.
func (e *env) checkRecord(want store.Record) {
	e.t.Helper()
	got, err := e.to.LoadRecord(e.t.Context(), want.Name)
	if err != nil {
		e.t.Fatalf("record of %s in etcd: %v", want.Name, err)
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		e.t.Errorf("record of %s in etcd:\n%s\nwant\n%s", want.Name, gj, wj)
	}
}

// checkKV fails unless etcd holds each key with the state directory's
// value.
func (e *env) checkKV(keys ...string) {
	e.t.Helper()
	for _, k := range keys {
		want, err := e.from.Load(e.t.Context(), k)
		if err != nil {
			e.t.Fatal(err)
		}
		got, err := e.to.Load(e.t.Context(), k)
		if err != nil || string(got) != string(want) {
			e.t.Errorf("%s in etcd: %q (%v), want the state directory's %q", k, got, err, want)
		}
	}
}

// notInEtcd fails unless etcd lacks certificate name.
func (e *env) notInEtcd(name string) {
	e.t.Helper()
	if vs, err := e.to.ArchiveVersions(e.t.Context(), name); !errors.Is(err, fs.ErrNotExist) {
		e.t.Errorf("%s: etcd holds versions %v (%v), want none", name, vs, err)
	}
}

// item returns the report's item of kind and name, failing when there is
// none.
func item(t *testing.T, rep migrate.Report, kind, name string) migrate.Item {
	t.Helper()
	for _, it := range rep.Items {
		if it.Kind == kind && it.Name == name {
			return it
		}
	}
	t.Fatalf("no %s item %q in the report:\n%s", kind, name, describe(rep))
	return migrate.Item{}
}

// counts returns the report's number of items per outcome.
func counts(rep migrate.Report) map[migrate.Outcome]int {
	out := map[migrate.Outcome]int{}
	for _, it := range rep.Items {
		out[it.Outcome]++
	}
	return out
}

// describe prints a report for failure messages.
func describe(rep migrate.Report) string {
	var b strings.Builder
	for _, it := range rep.Items {
		b.WriteString(it.Kind + " " + it.Name + ": " + string(it.Outcome))
		if it.Detail != "" {
			b.WriteString(" — " + it.Detail)
		}
		if it.Err != nil {
			b.WriteString(" [" + it.Err.Error() + "]")
		}
		b.WriteString("\n")
	}
	return b.String()
}
