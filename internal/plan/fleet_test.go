package plan

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/store/etcdstore"
	"github.com/detour-acme/detour/internal/store/storetest"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// fleetConfig returns a configuration sharing its state in etcd at
// endpoints, with a fresh encryption key.
func fleetConfig(t *testing.T, endpoints string, node string) *config.Config {
	t.Helper()
	key := filepath.Join(t.TempDir(), "fleet.key")
	if err := etcdstore.NewKeyFile(key); err != nil {
		t.Fatal(err)
	}
	doc := fmt.Sprintf("[store]\nkind = \"etcd\"\nendpoints = [%s]\nencryption_key_file = %q\nfleet = \"web\"\nnode = %q\nprefix = \"/detour/%s\"\n",
		endpoints, key, node, strings.ReplaceAll(t.Name(), "/", "-"))
	cfg, err := config.Parse("/etc/detour/detour.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestFleetOpen: a fleet's planner keeps records and locks in etcd and
// this node's files in its state directory; problems name the [store]
// table's file and line.
func TestFleetOpen(t *testing.T) {
	c := etcdtest.New(t, etcdtest.Options{})
	var eps []string
	for _, e := range c.Endpoints() {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	cfg := fleetConfig(t, strings.Join(eps, ", "), "web1")
	p, err := Open(Options{Config: cfg, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !p.Fleet() {
		t.Fatal("not a fleet")
	}
	if _, ok := p.SharedStore().(fleetShared); !ok {
		t.Errorf("shared store is %T, want etcd", p.SharedStore())
	}
	rows, err := p.Status(t.Context(), nil)
	if err != nil || len(rows) != 0 {
		t.Errorf("status of an empty fleet: %v, %v", rows, err)
	}

	// Another fleet on the same prefix is refused.
	other := fleetConfig(t, strings.Join(eps, ", "), "web2")
	other.Store.Prefix = cfg.Store.Prefix
	other.Store.Fleet = "another"
	other.Store.EncryptionKeyFile = cfg.Store.EncryptionKeyFile
	if _, err := Open(Options{Config: other, StateDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "/etc/detour/detour.toml:1: [store]") ||
		!strings.Contains(err.Error(), "another") {
		t.Errorf("another fleet on the prefix: %v", err)
	}
}

// TestFleetBadTLS: wrong TLS material for etcd is refused with an error
// naming the [store] table, the endpoints and the material to check.
func TestFleetBadTLS(t *testing.T) {
	m := etcdtest.NewTLS(t)
	other := etcdtest.NewTLS(t) // another CA: its certificates are strangers to the cluster
	c := etcdtest.New(t, etcdtest.Options{TLS: m, Members: 1})
	ep := fmt.Sprintf("%q", c.Endpoints()[0])
	notPEM := filepath.Join(t.TempDir(), "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := func(t *testing.T) *config.Config {
		cfg := fleetConfig(t, ep, "web1")
		cfg.Store.CAFile, cfg.Store.CertFile, cfg.Store.KeyFile = m.CA, m.ClientCert, m.ClientKey
		return cfg
	}
	cfg := good(t)
	p, err := Open(Options{Config: cfg, StateDir: t.TempDir()})
	if err != nil {
		t.Fatalf("the right material: %v", err)
	}
	p.Close()
	for _, tc := range []struct {
		name string
		edit func(*config.Store)
		want []string
	}{
		{"CA file not PEM", func(s *config.Store) { s.CAFile = notPEM }, []string{"ca_file " + notPEM + " holds no PEM certificate"}},
		{"another CA", func(s *config.Store) { s.CAFile = other.CA },
			[]string{"etcd did not answer at " + c.Endpoints()[0], "TLS material", "TLS: tls: failed to verify certificate: x509: certificate signed by unknown authority"}},
		{"client certificate of another CA", func(s *config.Store) { s.CertFile, s.KeyFile = other.ClientCert, other.ClientKey },
			[]string{"etcd did not answer at " + c.Endpoints()[0], "TLS material", "TLS: remote error: tls: "}},
		{"no client certificate", func(s *config.Store) { s.CertFile, s.KeyFile = "", "" },
			[]string{"etcd did not answer at", "TLS material", "TLS: remote error: tls: certificate required"}},
		{"key of another certificate", func(s *config.Store) { s.KeyFile = other.ClientKey }, []string{"cert_file and key_file", "private key does not match public key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := good(t)
			tc.edit(&cfg.Store)
			_, err := Open(Options{Config: cfg, StateDir: t.TempDir()})
			if err == nil {
				t.Fatal("opened")
			}
			for _, w := range append(tc.want, "/etc/detour/detour.toml:1: [store]") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
}

// TestFleetKeyRotation: the documented rotation. A secret written under the
// first key is read after a new key is put on top of the file; reencrypt
// rewrites it under the new key (once); then the old line goes and the
// secret still reads.
func TestFleetKeyRotation(t *testing.T) {
	c := etcdtest.New(t, etcdtest.Options{Members: 1})
	cfg := fleetConfig(t, fmt.Sprintf("%q", c.Endpoints()[0]), "web1")
	open := func() *Planner {
		p, err := Open(Options{Config: cfg, StateDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	ctx := t.Context()
	secret := []byte("-----BEGIN EC PRIVATE KEY-----\nsecret\n-----END EC PRIVATE KEY-----\n")
	p := open()
	if err := p.SharedStore().Store(ctx, "accounts/ca/ops/account.key", secret); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(cfg.Store.EncryptionKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(t.TempDir(), "new.key")
	if err := NewFleetKey(fresh); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(fresh)
	var newLine string
	for l := range strings.Lines(string(b)) {
		if !strings.HasPrefix(l, "#") {
			newLine = l
		}
	}
	if err := os.WriteFile(cfg.Store.EncryptionKeyFile, append([]byte(newLine), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	p = open()
	if got, err := p.SharedStore().Load(ctx, "accounts/ca/ops/account.key"); err != nil || string(got) != string(secret) {
		t.Fatalf("with both keys: %q, %v", got, err)
	}
	if n, err := p.FleetReencrypt(ctx); err != nil || n != 1 {
		t.Fatalf("reencrypt: %d, %v; want 1 rewritten", n, err)
	}
	if n, err := p.FleetReencrypt(ctx); err != nil || n != 0 {
		t.Fatalf("reencrypt again: %d, %v; want none", n, err)
	}
	if err := os.WriteFile(cfg.Store.EncryptionKeyFile, []byte(newLine), 0o600); err != nil {
		t.Fatal(err)
	}
	p = open()
	if got, err := p.SharedStore().Load(ctx, "accounts/ca/ops/account.key"); err != nil || string(got) != string(secret) {
		t.Fatalf("with the new key only: %q, %v", got, err)
	}
}

// TestFleetStatusLocalLive: on a node of a fleet, status checks this
// node's live pair against the record its deployer keeps; a damaged pair is
// broken, with the node's own fix (not a renewal of the fleet's
// certificate).
func TestFleetStatusLocalLive(t *testing.T) {
	c := etcdtest.New(t, etcdtest.Options{Members: 1})
	cfg := fleetConfig(t, fmt.Sprintf("%q", c.Endpoints()[0]), "web1")
	p, err := Open(Options{Config: cfg, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := t.Context()
	b := storetest.NewBundle(t, "www.example.com")
	leaf, err := b.Leaf()
	if err != nil {
		t.Fatal(err)
	}
	rec := store.Record{Name: "www", Identifiers: []string{"www.example.com"}, Version: 1, Serial: leaf.SerialNumber.Text(16),
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, LiveSum: b.LiveSum()}
	if err := p.SharedStore().SaveRecord(ctx, rec); err != nil {
		t.Fatal(err)
	}
	state := func() CertStatus {
		t.Helper()
		rows, err := p.Status(ctx, nil)
		if err != nil || len(rows) != 1 {
			t.Fatalf("status: %v, %v", rows, err)
		}
		return rows[0]
	}
	if s := state(); s.State != StateOK {
		t.Errorf("not deployed on this node yet: %s (%s)", s.State, s.Problem)
	}
	if _, err := p.Store.PutCertificate(ctx, "www", b); err != nil {
		t.Fatal(err)
	}
	if err := p.Store.SaveRecord(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if s := state(); s.State != StateOK {
		t.Errorf("deployed: %s (%s)", s.State, s.Problem)
	}
	if err := os.WriteFile(p.Store.LivePath("www", "cert.pem"), []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s := state(); s.State != StateBroken || !strings.Contains(s.Fix, "restart this node's agent") || !s.Alert {
		t.Errorf("damaged live pair: %s, problem %q, fix %q", s.State, s.Problem, s.Fix)
	}
}
