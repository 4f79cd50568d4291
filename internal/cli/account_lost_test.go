package cli_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

// TestLostAccountKey: the account key deleted (or replaced by another key)
// while account.json still names the account. Every order would fail with
// "JWS verification error"; instead Detour notices, says so, registers a
// new account and renews, dropping "replaces" (the old certificate was
// issued to the other account).
func TestLostAccountKey(t *testing.T) {
	t.Parallel()
	env := newEnv(t, "deleted.lost.detour.test", "replaced.lost.detour.test", "oldmeta.lost.detour.test")
	cfg := emptyConfig(t)
	accountFiles := func(state string) (key, meta string) {
		m, err := filepath.Glob(filepath.Join(state, "accounts", "*", "*", "account.json"))
		if err != nil || len(m) != 1 {
			t.Fatalf("account.json: %v %v", m, err)
		}
		return filepath.Join(filepath.Dir(m[0]), "account.key"), m[0]
	}
	otherKey := func() []byte {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalECPrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	accountURL := func(meta string) string {
		var m struct{ URL string }
		data, err := os.ReadFile(meta)
		if err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal(data, &m)
		return m.URL
	}
	cases := map[string]func(key, meta string){
		"deleted.lost.detour.test": func(key, _ string) {
			if err := os.Remove(key); err != nil {
				t.Fatal(err)
			}
		},
		"replaced.lost.detour.test": func(key, _ string) {
			if err := os.WriteFile(key, otherKey(), 0o600); err != nil {
				t.Fatal(err)
			}
		},
		// An account record written before thumbprints were kept: only
		// the CA can tell the key is not the account's.
		"oldmeta.lost.detour.test": func(key, meta string) {
			var m map[string]any
			data, _ := os.ReadFile(meta)
			_ = json.Unmarshal(data, &m)
			delete(m, "thumbprint")
			data, _ = json.Marshal(m)
			if err := os.WriteFile(meta, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(key, otherKey(), 0o600); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, breakIt := range cases {
		state := t.TempDir()
		mustRun(t, oneOff(env, cfg, state, "-d", name)...)
		key, meta := accountFiles(state)
		before := accountURL(meta)
		breakIt(key, meta)
		r := run(t, "--config", cfg, "--state-dir", state, "renew", "--force")
		if r.code != 0 {
			t.Fatalf("%s: renew: %v", name, r)
		}
		wantIn(t, name+" renew", r.stdout, name+": version 2")
		if after := accountURL(meta); after == before || after == "" {
			t.Errorf("%s: account %q after, %q before: want a new account", name, after, before)
		}
		if name != "oldmeta.lost.detour.test" {
			wantIn(t, name+" renew", r.stderr, "the ACME account key was lost", before)
		}
	}
}
