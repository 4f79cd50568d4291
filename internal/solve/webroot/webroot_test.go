package webroot

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// bothWays runs f twice: with openDir forced to openat2(2), and to the
// component-by-component walk older kernels get.
func bothWays(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	for _, w := range []struct {
		name string
		open func(int, string) (int, error)
	}{{"openat2", openDirOpenat2}, {"walk", openDirWalk}} {
		t.Run(w.name, func(t *testing.T) {
			if w.name == "openat2" && !openat2Supported() {
				t.Skip("this kernel has no openat2(2) (Linux before 5.6, or a seccomp filter refuses it); the walk subtest covers the fallback Detour uses there")
			}
			openDir = w.open
			t.Cleanup(func() { openDir = openDirDefault })
			f(t)
		})
	}
}

func newSolver(t *testing.T, root string) *Solver {
	t.Helper()
	s, err := New(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func chal(name, token string) solve.Challenge {
	id, err := ident.Parse(name)
	if err != nil {
		panic(err)
	}
	return solve.Challenge{Type: solve.HTTP01, Identifier: id, Token: token, KeyAuthorization: token + ".thumb"}
}

func exists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Lstat(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func mode(t *testing.T, p string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// serve serves root over HTTP on 127.0.0.1, as a web server would, and
// returns its address.
func serve(t *testing.T, root string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(root))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func fetch(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestPresentCleanUp(t *testing.T) { bothWays(t, testPresentCleanUp) }

func testPresentCleanUp(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		existing []string // directories under the root before Present
	}{
		{"nothing exists", nil},
		{"well-known exists", []string{".well-known"}},
		{"both exist", []string{".well-known", ".well-known/acme-challenge"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for _, d := range tt.existing {
				if err := os.Mkdir(filepath.Join(root, d), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			// Modes are applied exactly, whatever the umask.
			old := syscall.Umask(0o077)
			defer syscall.Umask(old)
			s := newSolver(t, root)
			addr := serve(t, root)
			ch := chal("example.com", "tok-A_1")

			if err := s.Check(ctx, ch.Identifier); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if err := s.Present(ctx, ch); err != nil {
				t.Fatalf("Present: %v", err)
			}
			file := filepath.Join(root, ".well-known/acme-challenge/tok-A_1")
			if got := mode(t, file); got != DefaultFileMode {
				t.Errorf("file mode %o, want %o", got, DefaultFileMode)
			}
			for _, d := range []string{".well-known", ".well-known/acme-challenge"} {
				want := DefaultDirMode
				for _, e := range tt.existing {
					if e == d {
						want = 0o700 // untouched
					}
				}
				if got := mode(t, filepath.Join(root, d)); got != want {
					t.Errorf("%s mode %o, want %o", d, got, want)
				}
			}
			if status, body := fetch(t, addr, ch.HTTP01Path()); status != 200 || body != ch.KeyAuthorization {
				t.Errorf("GET %s: %d %q, want 200 %q", ch.HTTP01Path(), status, body, ch.KeyAuthorization)
			}
			// No temporary file is left behind.
			entries, _ := os.ReadDir(filepath.Dir(file))
			if len(entries) != 1 {
				t.Errorf("challenge directory holds %d entries, want 1", len(entries))
			}

			if err := s.CleanUp(ctx, ch); err != nil {
				t.Fatalf("CleanUp: %v", err)
			}
			if exists(t, file) {
				t.Error("answer file still there after CleanUp")
			}
			if status, _ := fetch(t, addr, ch.HTTP01Path()); status != 404 {
				t.Errorf("GET after CleanUp: %d, want 404", status)
			}
			for _, d := range []string{".well-known", ".well-known/acme-challenge"} {
				pre := false
				for _, e := range tt.existing {
					pre = pre || e == d
				}
				if got := exists(t, filepath.Join(root, d)); got != pre {
					t.Errorf("%s exists after CleanUp: %v, want %v (only created directories are removed)", d, got, pre)
				}
			}
			if !exists(t, root) {
				t.Error("the root was removed")
			}
		})
	}
}

func TestModes(t *testing.T) { bothWays(t, testModes) }

func testModes(t *testing.T) {
	root := t.TempDir()
	s, err := New(Options{Root: root, DirMode: 0o750, FileMode: 0o640})
	if err != nil {
		t.Fatal(err)
	}
	ch := chal("example.com", "tok")
	if err := s.Present(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, filepath.Join(root, ".well-known")); got != 0o750 {
		t.Errorf("dir mode %o, want 750", got)
	}
	if got := mode(t, filepath.Join(root, ".well-known/acme-challenge/tok")); got != 0o640 {
		t.Errorf("file mode %o, want 640", got)
	}
}

func TestConcurrentSharedDirectories(t *testing.T) { bothWays(t, testConcurrentSharedDirectories) }

func testConcurrentSharedDirectories(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := newSolver(t, root)
	var chs []solve.Challenge
	for _, tok := range []string{"t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"} {
		chs = append(chs, chal(tok+".example.com", tok))
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(chs))
	for _, ch := range chs {
		wg.Go(func() { errs <- s.Present(ctx, ch) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(root, ".well-known/acme-challenge")
	// The same token presented twice is held twice.
	if err := s.Present(ctx, chs[0]); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chs {
		if err := s.CleanUp(ctx, ch); err != nil {
			t.Fatal(err)
		}
		if i < len(chs)-1 && !exists(t, dir) {
			t.Fatalf("directory removed after %d of %d clean-ups", i+1, len(chs))
		}
	}
	if !exists(t, filepath.Join(dir, "t1")) {
		t.Fatal("t1 removed while still presented once more")
	}
	if err := s.CleanUp(ctx, chs[0]); err != nil {
		t.Fatal(err)
	}
	if exists(t, filepath.Join(root, ".well-known")) {
		t.Error(".well-known left behind after the last clean-up")
	}
	// Cleaning up again, or something never presented, is harmless.
	if err := s.CleanUp(ctx, chs[0]); err != nil {
		t.Error(err)
	}
}

func TestCreatedDirectoryKeptWhenNotEmpty(t *testing.T) {
	bothWays(t, testCreatedDirectoryKeptWhenNotEmpty)
}

func testCreatedDirectoryKeptWhenNotEmpty(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := newSolver(t, root)
	ch := chal("example.com", "tok")
	if err := s.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	// Someone else puts a file in .well-known meanwhile.
	other := filepath.Join(root, ".well-known/security.txt")
	if err := os.WriteFile(other, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.CleanUp(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if exists(t, filepath.Join(root, ".well-known/acme-challenge")) {
		t.Error("empty acme-challenge left behind")
	}
	if !exists(t, other) {
		t.Error("someone else's file was removed")
	}
}

func TestPresentFailsHalfway(t *testing.T) { bothWays(t, testPresentFailsHalfway) }

func testPresentFailsHalfway(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := newSolver(t, root)
	mkdirat = func(dirfd int, name string, mode uint32) error {
		if filepath.Base(name) == "acme-challenge" {
			return syscall.ENOSPC
		}
		return unix.Mkdirat(dirfd, name, mode)
	}
	t.Cleanup(func() { mkdirat = unix.Mkdirat })
	ch := chal("example.com", "tok")
	if err := s.Present(ctx, ch); err == nil {
		t.Fatal("Present succeeded")
	}
	if exists(t, filepath.Join(root, ".well-known")) {
		t.Error(".well-known created by the failed Present is left behind")
	}
	if err := s.CleanUp(ctx, ch); err != nil {
		t.Errorf("CleanUp after a failed Present: %v", err)
	}
}

func TestRefused(t *testing.T) { bothWays(t, testRefused) }

func testRefused(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		setup   func(t *testing.T, root, outside string)
		token   string
		wantErr string
	}{
		{"dot-dot token", nil, "../evil", "not base64url"},
		{"slash token", nil, "a/b", "not base64url"},
		{"empty token", nil, "", "not base64url"},
		{"well-known links outside", func(t *testing.T, root, outside string) {
			symlink(t, outside, filepath.Join(root, ".well-known"))
		}, "tok", "outside the webroot"},
		{"acme-challenge links outside", func(t *testing.T, root, outside string) {
			mkdirAll(t, filepath.Join(root, ".well-known"))
			symlink(t, outside, filepath.Join(root, ".well-known/acme-challenge"))
		}, "tok", "outside the webroot"},
		{"relative link escaping", func(t *testing.T, root, outside string) {
			rel, err := filepath.Rel(root, outside)
			if err != nil {
				t.Fatal(err)
			}
			symlink(t, rel, filepath.Join(root, ".well-known"))
		}, "tok", "outside the webroot"},
		{"dangling link", func(t *testing.T, root, outside string) {
			symlink(t, filepath.Join(outside, "missing"), filepath.Join(root, ".well-known"))
		}, "tok", "cannot be followed"},
		{"well-known is a file", func(t *testing.T, root, outside string) {
			if err := os.WriteFile(filepath.Join(root, ".well-known"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "tok", "exists but is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, outside := t.TempDir(), t.TempDir()
			if tt.setup != nil {
				tt.setup(t, root, outside)
			}
			s := newSolver(t, root)
			ch := chal("example.com", tt.token)
			err := s.Present(ctx, ch)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Present: %v, want an error containing %q", err, tt.wantErr)
			}
			if tt.setup != nil {
				if err := s.Check(ctx, ch.Identifier); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Check: %v, want an error containing %q", err, tt.wantErr)
				}
			}
			entries, err := os.ReadDir(outside)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 0 {
				t.Errorf("something was written outside the root: %v", entries)
			}
			if err := s.CleanUp(ctx, ch); err != nil {
				t.Errorf("CleanUp: %v", err)
			}
		})
	}
}

func TestSymlinkInsideRootAllowed(t *testing.T) { bothWays(t, testSymlinkInsideRootAllowed) }

func testSymlinkInsideRootAllowed(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	mkdirAll(t, filepath.Join(root, "shared/acme"))
	mkdirAll(t, filepath.Join(root, ".well-known"))
	symlink(t, "../shared/acme", filepath.Join(root, ".well-known/acme-challenge"))
	s := newSolver(t, root)
	ch := chal("example.com", "tok")
	if err := s.Check(ctx, ch.Identifier); err != nil {
		t.Fatal(err)
	}
	if err := s.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "shared/acme/tok")); err != nil || string(b) != ch.KeyAuthorization {
		t.Errorf("answer through the link: %q, %v", b, err)
	}
	if err := s.CleanUp(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if !exists(t, filepath.Join(root, ".well-known/acme-challenge")) {
		t.Error("the pre-existing link was removed")
	}
}

func TestCheck(t *testing.T) { bothWays(t, testCheck) }

func testCheck(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		root    string
		id      string
		wantErr []string
		notApp  bool
	}{
		{"ok", base, "example.com", nil, false},
		{"ip", base, "192.0.2.1", nil, false},
		{"wildcard", base, "*.example.com", []string{"wildcard"}, true},
		{"missing", filepath.Join(base, "nope"), "example.com", []string{"does not exist", "set root =", "example.com", "nginx: its `root` directive"}, false},
		{"a file", file, "example.com", []string{"is not a directory", "set root ="}, false},
		// Root cannot stop a root user writing; a path under a regular
		// file cannot be written by anyone.
		{"under a file", filepath.Join(file, "www"), "example.com", []string{"cannot be used", "not a directory", "set root ="}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSolver(t, tt.root)
			id, err := ident.Parse(tt.id)
			if err != nil {
				t.Fatal(err)
			}
			err = s.Check(ctx, id)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check passed")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if got := errors.Is(err, solve.ErrNotApplicable); got != tt.notApp {
				t.Errorf("errors.Is(ErrNotApplicable) = %v, want %v", got, tt.notApp)
			}
			if !tt.notApp {
				if err := s.Present(ctx, chal("example.com", "tok")); err == nil {
					t.Error("Present succeeded where Check failed")
				}
			}
		})
	}
	// Check leaves nothing behind.
	entries, _ := os.ReadDir(base)
	if len(entries) != 1 {
		t.Errorf("Check left files in the root: %v", entries)
	}
}

func TestNewRejectsEmptyRoot(t *testing.T) {
	if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), "set root =") {
		t.Errorf("New with empty root: %v", err)
	}
}

func TestWrongChallengeType(t *testing.T) {
	s := newSolver(t, t.TempDir())
	ch := chal("example.com", "tok")
	ch.Type = solve.DNS01
	if err := s.Present(context.Background(), ch); err == nil {
		t.Error("Present accepted a dns-01 challenge")
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func mkdirAll(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}
