package store

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// sameBundle fails the test unless got equals want.
func sameBundle(t *testing.T, got, want Bundle) {
	t.Helper()
	if !bytes.Equal(got.CertPEM, want.CertPEM) || !bytes.Equal(got.ChainPEM, want.ChainPEM) || !bytes.Equal(got.KeyPEM, want.KeyPEM) {
		t.Error("loaded bundle differs from the stored one")
	}
}

// liveTargets returns the symlink targets of the four live files.
func liveTargets(t *testing.T, f *FS, name string) []string {
	t.Helper()
	var out []string
	for _, kind := range certFiles {
		target, err := os.Readlink(f.LivePath(name, kind+".pem"))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, target)
	}
	return out
}

// wantLive fails the test unless every live link points at version n.
func wantLive(t *testing.T, f *FS, name string, n int) {
	t.Helper()
	got := liveTargets(t, f, name)
	for i, kind := range certFiles {
		want := "../../archive/" + name + "/" + kind + strconv.Itoa(n) + ".pem"
		if got[i] != want {
			t.Errorf("live %s.pem -> %q, want %q", kind, got[i], want)
		}
	}
	if _, err := os.Lstat(filepath.Join(f.LivePath(name, intentFile))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("intent file still present: %v", err)
	}
}

func modeOf(t *testing.T, p string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestPutCertificateVersions(t *testing.T) {
	ctx := context.Background()
	f := newFS(t)
	b1, b2 := newBundle(t, "example.com"), newBundle(t, "example.com")
	for i, b := range []Bundle{b1, b2} {
		v, err := f.PutCertificate(ctx, "example.com", b)
		if err != nil {
			t.Fatalf("PutCertificate %d: %v", i+1, err)
		}
		if v != i+1 {
			t.Errorf("version = %d, want %d", v, i+1)
		}
	}
	got, v, err := f.LoadCertificate(ctx, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	if v != 2 {
		t.Errorf("live version = %d, want 2", v)
	}
	sameBundle(t, got, b2)
	wantLive(t, f, "example.com", 2)

	// Version 1 is kept in the archive.
	old, err := os.ReadFile(filepath.Join(f.Dir(), "archive", "example.com", "cert1.pem"))
	if err != nil || !bytes.Equal(old, b1.CertPEM) {
		t.Errorf("archive cert1.pem = %v, want version 1's certificate", err)
	}
	full, err := os.ReadFile(f.LivePath("example.com", "fullchain.pem"))
	if err != nil || !bytes.Equal(full, b2.FullchainPEM()) {
		t.Errorf("live fullchain.pem is not cert+chain (%v)", err)
	}
	vs, err := f.ArchiveVersions(ctx, "example.com")
	if err != nil || !slices.Equal(vs, []int{1, 2}) {
		t.Errorf("ArchiveVersions = %v, %v; want [1 2]", vs, err)
	}

	modes := map[string]fs.FileMode{
		"archive":                            0o700,
		"live":                               0o700,
		"archive/example.com":                0o700,
		"archive/example.com/privkey1.pem":   0o600,
		"archive/example.com/privkey2.pem":   0o600,
		"archive/example.com/cert2.pem":      0o644,
		"archive/example.com/fullchain2.pem": 0o644,
		"live/example.com/README":            0o644,
	}
	for p, want := range modes {
		if got := modeOf(t, filepath.Join(f.Dir(), p)); got != want {
			t.Errorf("mode of %s = %v, want %v", p, got, want)
		}
	}
	readme, err := os.ReadFile(f.LivePath("example.com", "README"))
	if err != nil || !strings.Contains(string(readme), "archive/example.com/") {
		t.Errorf("README = %q, %v", readme, err)
	}
}

// TestPutCertificateConcurrent checks that concurrent stores get distinct
// versions, and that PutCertificate works while the caller holds
// Lock(name) for the whole renewal.
func TestPutCertificateConcurrent(t *testing.T) {
	ctx := context.Background()
	f := newFS(t)
	other, err := NewFS(f.Dir(), FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := f.Lock(ctx, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unlock() }()
	bundles := []Bundle{newBundle(t, "example.com"), newBundle(t, "example.com"), newBundle(t, "example.com"), newBundle(t, "example.com")}
	versions := make(chan int, len(bundles))
	var wg sync.WaitGroup
	for i, b := range bundles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := []*FS{f, other}[i%2].PutCertificate(ctx, "example.com", b)
			if err != nil {
				t.Error(err)
			}
			versions <- v
		}()
	}
	wg.Wait()
	close(versions)
	var got []int
	for v := range versions {
		got = append(got, v)
	}
	slices.Sort(got)
	if !slices.Equal(got, []int{1, 2, 3, 4}) {
		t.Errorf("versions = %v, want 1-4 once each", got)
	}
	_, v, err := f.LoadCertificate(ctx, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	if v != 4 {
		t.Errorf("live version = %d, want 4 (the last swap wins)", v)
	}
	wantLive(t, f, "example.com", v)
}

func TestPutCertificateRefusesBadBundle(t *testing.T) {
	ctx := context.Background()
	good := newBundle(t, "example.com")
	other := newBundle(t, "example.com")
	tests := []struct {
		name    string
		b       Bundle
		wantErr string
	}{
		{"mismatched key", Bundle{CertPEM: other.CertPEM, ChainPEM: other.ChainPEM, KeyPEM: good.KeyPEM}, "does not match"},
		{"no certificate", Bundle{KeyPEM: good.KeyPEM}, "no PEM data"},
		{"garbage certificate", Bundle{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}), KeyPEM: good.KeyPEM}, "parsing leaf"},
		{"key as certificate", Bundle{CertPEM: good.KeyPEM, KeyPEM: good.KeyPEM}, "want CERTIFICATE"},
		{"no key", Bundle{CertPEM: good.CertPEM}, "no PEM data in the key"},
		{"garbage key", Bundle{CertPEM: good.CertPEM, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")})}, "parsing private key"},
		{"chain holds a key", Bundle{CertPEM: good.CertPEM, ChainPEM: good.KeyPEM, KeyPEM: good.KeyPEM}, "parsing chain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFS(t)
			if _, err := f.PutCertificate(ctx, "example.com", good); err != nil {
				t.Fatal(err)
			}
			_, err := f.PutCertificate(ctx, "example.com", tt.b)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("PutCertificate: err = %v, want one containing %q", err, tt.wantErr)
			}
			got, v, err := f.LoadCertificate(ctx, "example.com")
			if err != nil {
				t.Fatal(err)
			}
			if v != 1 {
				t.Errorf("live version = %d, want 1", v)
			}
			sameBundle(t, got, good)
			wantLive(t, f, "example.com", 1)
			counts, err := f.scanArchive("example.com")
			if err != nil || len(counts) != 1 {
				t.Errorf("archive holds versions %v (%v), want only 1", counts, err)
			}
		})
	}
}

func TestBundleVerifyKeyFormats(t *testing.T) {
	key := testKey(t)
	cert := selfSigned(t, "example.com", key)
	sec1, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		key  []byte
	}{
		{"PKCS#8", pkcs8PEM(t, key)},
		{"SEC 1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := (Bundle{CertPEM: cert, KeyPEM: tt.key}).Verify(); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func TestPutCertificateSkipsHalfWrittenVersion(t *testing.T) {
	ctx := context.Background()
	f := newFS(t)
	if _, err := f.PutCertificate(ctx, "example.com", newBundle(t, "example.com")); err != nil {
		t.Fatal(err)
	}
	// A crash left part of version 2 behind, with no intent.
	partial := filepath.Join(f.Dir(), "archive", "example.com", "privkey2.pem")
	if err := os.WriteFile(partial, []byte("-----BEGIN"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := newBundle(t, "example.com")
	v, err := f.PutCertificate(ctx, "example.com", b)
	if err != nil {
		t.Fatal(err)
	}
	if v != 3 {
		t.Errorf("version = %d, want 3 (2 is taken by the partial file)", v)
	}
	wantLive(t, f, "example.com", 3)
	vs, err := f.ArchiveVersions(ctx, "example.com")
	if err != nil || !slices.Equal(vs, []int{1, 3}) {
		t.Errorf("ArchiveVersions = %v, %v; want [1 3]", vs, err)
	}
}

// writeArchive writes version n of b into the archive by hand, as a crashed
// PutCertificate would have. kinds limits which files are written.
func writeArchive(t *testing.T, f *FS, name string, n int, b Bundle, kinds ...string) {
	t.Helper()
	content := map[string][]byte{"cert": b.CertPEM, "chain": b.ChainPEM, "fullchain": b.FullchainPEM(), "privkey": b.KeyPEM}
	for _, kind := range kinds {
		if err := os.WriteFile(f.archiveFile(name, kind, n), content[kind], 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// switchLink points one live link at version n by hand.
func switchLink(t *testing.T, f *FS, name, kind string, n int) {
	t.Helper()
	p := f.LivePath(name, kind+".pem")
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(linkTarget(name, kind, n), p); err != nil {
		t.Fatal(err)
	}
}

func TestRecovery(t *testing.T) {
	all := certFiles[:]
	tests := []struct {
		name     string
		intent   string
		archive  []string // files of version 2 present
		switched []string // live links already pointing at 2
		via      string   // "load", "recover" or "put"
		wantLive int
	}{
		{"half switched, load rolls forward", "2\n", all, []string{"cert", "chain"}, "load", 2},
		{"half switched, recover rolls forward", "2\n", all, []string{"cert", "chain", "fullchain"}, "recover", 2},
		{"none switched, load rolls forward", "2", all, nil, "load", 2},
		{"half switched, put rolls forward first", "2\n", all, []string{"cert"}, "put", 3},
		{"archive incomplete, intent dropped", "2\n", []string{"cert", "chain"}, nil, "load", 1},
		{"archive missing, intent dropped", "2\n", nil, nil, "recover", 1},
		{"garbage intent dropped", "two\n", all, nil, "load", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFS(t)
			const name = "example.com"
			b1, b2, b3 := newBundle(t, name), newBundle(t, name), newBundle(t, name)
			if _, err := f.PutCertificate(ctx, name, b1); err != nil {
				t.Fatal(err)
			}
			writeArchive(t, f, name, 2, b2, tt.archive...)
			intent := f.LivePath(name, intentFile)
			if err := os.WriteFile(intent, []byte(tt.intent), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, kind := range tt.switched {
				switchLink(t, f, name, kind, 2)
			}
			// A temporary symlink left by the crash is cleaned up.
			stale := f.LivePath(name, tmpPrefix+"cert.pem-dead")
			if err := os.Symlink("../../archive/"+name+"/cert2.pem", stale); err != nil {
				t.Fatal(err)
			}

			switch tt.via {
			case "load":
				if _, _, err := f.LoadCertificate(ctx, name); err != nil {
					t.Fatalf("LoadCertificate: %v", err)
				}
			case "recover":
				if err := f.Recover(ctx, name); err != nil {
					t.Fatalf("Recover: %v", err)
				}
			case "put":
				v, err := f.PutCertificate(ctx, name, b3)
				if err != nil {
					t.Fatalf("PutCertificate: %v", err)
				}
				if v != 3 {
					t.Errorf("version = %d, want 3", v)
				}
			}

			wantLive(t, f, name, tt.wantLive)
			if _, err := os.Lstat(stale); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("stale temporary link still present: %v", err)
			}
			got, v, err := f.LoadCertificate(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if v != tt.wantLive {
				t.Errorf("LoadCertificate version = %d, want %d", v, tt.wantLive)
			}
			sameBundle(t, got, []Bundle{b1, b2, b3}[tt.wantLive-1])
		})
	}
}

func TestLoadCertificateErrors(t *testing.T) {
	ctx := context.Background()
	f := newFS(t)
	if _, _, err := f.LoadCertificate(ctx, "never.example"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadCertificate of unknown name: err = %v, want fs.ErrNotExist", err)
	}
	if _, err := f.ArchiveVersions(ctx, "never.example"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ArchiveVersions of unknown name: err = %v, want fs.ErrNotExist", err)
	}
	if _, err := f.PutCertificate(ctx, "example.com", newBundle(t, "example.com")); err != nil {
		t.Fatal(err)
	}
	// Links pointing at different versions with no intent are refused, not
	// mixed.
	if _, err := f.PutCertificate(ctx, "example.com", newBundle(t, "example.com")); err != nil {
		t.Fatal(err)
	}
	switchLink(t, f, "example.com", "privkey", 1)
	if _, _, err := f.LoadCertificate(ctx, "example.com"); err == nil || !strings.Contains(err.Error(), "different versions") {
		t.Errorf("LoadCertificate of mixed links: err = %v, want a \"different versions\" error", err)
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"example.com", true},
		{"a", true},
		{"www_example-1.org", true},
		{"0start", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{".hidden", false},
		{"-dash", false},
		{"Upper.com", false},
		{"a/b", false},
		{"..", false},
		{"a b", false},
		{"*.example.com", false},
		{"é.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidName(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && len(tt.name) > 0 && len(tt.name) <= 64 && tt.name[0] != '.' && tt.name[0] != '-' &&
				!strings.Contains(err.Error(), "a-z, digits 0-9, '.', '-' and '_'") {
				t.Errorf("error %q does not say which characters are allowed", err)
			}
		})
	}
	f := newFS(t)
	if _, err := f.PutCertificate(context.Background(), "../escape", newBundle(t, "x")); err == nil {
		t.Error("PutCertificate accepted an invalid name")
	}
}

func TestLivePath(t *testing.T) {
	f := newFS(t)
	want := filepath.Join(f.Dir(), "live", "example.com", "fullchain.pem")
	if got := f.LivePath("example.com", "fullchain.pem"); got != want {
		t.Errorf("LivePath = %q, want %q", got, want)
	}
}
