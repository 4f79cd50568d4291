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

// wantLive fails the test unless live/<name> is the single link to
// version n, each live file resolves to version n's archive file, and no
// leftover of a switch remains (temporary links in live/, version
// directories newer than n, an old live directory).
func wantLive(t *testing.T, f *FS, name string, n int) {
	t.Helper()
	target, err := os.Readlink(f.liveDir(name))
	if err != nil {
		t.Fatalf("live/%s is not a symlink: %v", name, err)
	}
	if want := liveLinkTarget(name, n); target != want {
		t.Errorf("live/%s -> %q, want %q", name, target, want)
	}
	for _, kind := range certFiles {
		got, err := filepath.EvalSymlinks(f.LivePath(name, kind+".pem"))
		if err != nil {
			t.Fatal(err)
		}
		want, err := filepath.EvalSymlinks(f.archiveFile(name, kind, n))
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("live %s.pem resolves to %s, want %s", kind, got, want)
		}
	}
	wantTidy(t, f, name)
}

// wantTidy fails the test if a leftover of an interrupted switch remains:
// a temporary entry of name in live/, a version directory newer than the
// live version, or a dot-file showing in live/<name>/.
func wantTidy(t *testing.T, f *FS, name string) {
	t.Helper()
	temps, err := f.liveTemps(name)
	if err != nil || len(temps) != 0 {
		t.Errorf("temporary entries left in live/: %v (%v)", temps, err)
	}
	live := 0
	if target, err := os.Readlink(f.liveDir(name)); err == nil {
		live, _ = parseLiveTarget(name, target)
	}
	if scan, err := f.scanArchive(name); err == nil {
		for _, n := range scan.dirs {
			if n > live {
				t.Errorf("version directory .v%d left behind; live is %d", n, live)
			}
		}
	}
	ents, _ := os.ReadDir(f.liveDir(name))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("live/%s/%s left behind", name, e.Name())
		}
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

	// The live paths are certbot's: symlinks that lead to archive files.
	if target, err := os.Readlink(f.LivePath("example.com", "cert.pem")); err != nil || target != "../cert2.pem" {
		t.Errorf("live cert.pem -> %q (%v), want ../cert2.pem", target, err)
	}
	modes := map[string]fs.FileMode{
		"archive/example.com/.v2":            0o700,
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
	if err != nil || !strings.Contains(string(readme), "archive/example.com/") || !strings.Contains(string(readme), "version 2 ") {
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
			scan, err := f.scanArchive("example.com")
			if err != nil || len(scan.files) != 1 || !slices.Equal(scan.dirs, []int{1}) {
				t.Errorf("archive holds versions %v and directories %v (%v), want only 1", scan.files, scan.dirs, err)
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
	const name = "example.com"
	tests := []struct {
		name     string
		leave    func(t *testing.T, f *FS) // what the crash of version 2 left
		versions []int                     // complete versions afterwards
	}{
		{"partial archive file", func(t *testing.T, f *FS) {
			if err := os.WriteFile(f.archiveFile(name, "privkey", 2), []byte("-----BEGIN"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, []int{1, 3}},
		{"version directory that never went live", func(t *testing.T, f *FS) {
			writeArchive(t, f, name, 2, newBundle(t, name), certFiles[:]...)
			if err := os.Mkdir(f.versionDir(name, 2), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("../cert2.pem", filepath.Join(f.versionDir(name, 2), "cert.pem")); err != nil {
				t.Fatal(err)
			}
		}, []int{1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFS(t)
			if _, err := f.PutCertificate(ctx, name, newBundle(t, name)); err != nil {
				t.Fatal(err)
			}
			tt.leave(t, f)
			v, err := f.PutCertificate(ctx, name, newBundle(t, name))
			if err != nil {
				t.Fatal(err)
			}
			if v != 3 {
				t.Errorf("version = %d, want 3 (2 is taken by the crashed attempt)", v)
			}
			wantLive(t, f, name, 3)
			if _, err := os.Lstat(f.versionDir(name, 2)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("version directory .v2 not removed: %v", err)
			}
			vs, err := f.ArchiveVersions(ctx, name)
			if err != nil || !slices.Equal(vs, tt.versions) {
				t.Errorf("ArchiveVersions = %v, %v; want %v", vs, err, tt.versions)
			}
		})
	}
}

// writeArchive writes version n of b into the archive by hand, as a crashed
// PutCertificate would have. kinds limits which files are written.
func writeArchive(t *testing.T, f *FS, name string, n int, b Bundle, kinds ...string) {
	t.Helper()
	if err := os.MkdirAll(f.archiveDir(name), 0o700); err != nil {
		t.Fatal(err)
	}
	content := map[string][]byte{"cert": b.CertPEM, "chain": b.ChainPEM, "fullchain": b.FullchainPEM(), "privkey": b.KeyPEM}
	for _, kind := range kinds {
		if err := os.WriteFile(f.archiveFile(name, kind, n), content[kind], 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// makeLegacy builds by hand the layout earlier Detour versions and certbot
// write: version n of b in the archive and a live/<name> directory of four
// symlinks straight into it, with a README.
func makeLegacy(t *testing.T, f *FS, name string, n int, b Bundle) {
	t.Helper()
	writeArchive(t, f, name, n, b, certFiles[:]...)
	if err := os.MkdirAll(f.liveDir(name), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, kind := range certFiles {
		if err := os.Symlink(linkTarget(name, kind, n), f.LivePath(name, kind+".pem")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(f.LivePath(name, "README"), []byte("earlier README\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// switchLink points one link of a live/<name> directory of the earlier
// layout at version n by hand.
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

// wantLegacyLive fails the test unless live/<name> is still a directory of
// the earlier layout with all four links at version n and no intent.
func wantLegacyLive(t *testing.T, f *FS, name string, n int) {
	t.Helper()
	for _, kind := range certFiles {
		target, err := os.Readlink(f.LivePath(name, kind+".pem"))
		if err != nil {
			t.Fatal(err)
		}
		if want := linkTarget(name, kind, n); target != want {
			t.Errorf("live %s.pem -> %q, want %q", kind, target, want)
		}
	}
	if _, err := os.Lstat(f.LivePath(name, intentFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("intent file still present: %v", err)
	}
}

// TestRecoveryLegacy checks that a swap of the earlier layout's four links,
// interrupted by a crash of an earlier Detour version, is completed or
// dropped by the next call, and that PutCertificate then converts the
// directory to the single live link.
func TestRecoveryLegacy(t *testing.T) {
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
			makeLegacy(t, f, name, 1, b1)
			writeArchive(t, f, name, 2, b2, tt.archive...)
			if err := os.WriteFile(f.LivePath(name, intentFile), []byte(tt.intent), 0o644); err != nil {
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
				wantLegacyLive(t, f, name, tt.wantLive)
			case "recover":
				if err := f.Recover(ctx, name); err != nil {
					t.Fatalf("Recover: %v", err)
				}
				wantLegacyLive(t, f, name, tt.wantLive)
			case "put":
				v, err := f.PutCertificate(ctx, name, b3)
				if err != nil {
					t.Fatalf("PutCertificate: %v", err)
				}
				if v != 3 {
					t.Errorf("version = %d, want 3", v)
				}
				wantLive(t, f, name, 3)
			}
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
	const name = "example.com"
	tests := []struct {
		name     string
		setup    func(t *testing.T, f *FS)
		wantErr  string
		notExist bool
	}{
		{"never stored", func(t *testing.T, f *FS) {}, "", true},
		{"earlier layout with mixed links", func(t *testing.T, f *FS) {
			makeLegacy(t, f, name, 1, newBundle(t, name))
			writeArchive(t, f, name, 2, newBundle(t, name), certFiles[:]...)
			switchLink(t, f, name, "privkey", 2)
		}, "different versions", false},
		{"live link pointing elsewhere", func(t *testing.T, f *FS) {
			if _, err := f.PutCertificate(context.Background(), name, newBundle(t, name)); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(f.liveDir(name)); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("/etc/ssl/"+name, f.liveDir(name)); err != nil {
				t.Fatal(err)
			}
		}, "not ../archive/example.com/.vN", false},
		{"live is a regular file", func(t *testing.T, f *FS) {
			if err := os.MkdirAll(f.liveRoot(), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.liveDir(name), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "neither a symbolic link nor a directory", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFS(t)
			tt.setup(t, f)
			_, _, err := f.LoadCertificate(context.Background(), name)
			switch {
			case tt.notExist && !errors.Is(err, fs.ErrNotExist):
				t.Errorf("LoadCertificate: err = %v, want fs.ErrNotExist", err)
			case !tt.notExist && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("LoadCertificate: err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	if _, err := newFS(t).ArchiveVersions(context.Background(), "never.example"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ArchiveVersions of unknown name: err = %v, want fs.ErrNotExist", err)
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
