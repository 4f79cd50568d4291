package store

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func TestStoreLoadDelete(t *testing.T) {
	ctx := context.Background()
	f := newFS(t)
	tests := []struct {
		key      string
		value    string
		wantMode fs.FileMode
	}{
		{"accounts/ca.example/acct1/privkey.pem", "secret", 0o600},
		{"accounts/ca.example/acct1/account.key", "secret", 0o600},
		{"accounts/ca.example/acct1/meta.json", "{}", 0o644},
		{"top.txt", "top", 0o644},
		{"renewal/x.json", "{}", 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if err := f.Store(ctx, tt.key, []byte("old")); err != nil {
				t.Fatalf("Store: %v", err)
			}
			if err := f.Store(ctx, tt.key, []byte(tt.value)); err != nil {
				t.Fatalf("Store: %v", err)
			}
			got, err := f.Load(ctx, tt.key)
			if err != nil || string(got) != tt.value {
				t.Fatalf("Load = %q, %v; want %q", got, err, tt.value)
			}
			fi, err := os.Stat(filepath.Join(f.Dir(), filepath.FromSlash(tt.key)))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != tt.wantMode {
				t.Errorf("mode = %v, want %v", fi.Mode().Perm(), tt.wantMode)
			}
			if err := f.Delete(ctx, tt.key); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if _, err := f.Load(ctx, tt.key); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Load after Delete: err = %v, want fs.ErrNotExist", err)
			}
			if err := f.Delete(ctx, tt.key); err != nil {
				t.Errorf("Delete of missing key: %v", err)
			}
		})
	}

	// Directory modes: secret-bearing trees are 0700, the rest 0755.
	dirModes := map[string]fs.FileMode{
		"accounts":                  0o700,
		"accounts/ca.example/acct1": 0o700,
		"renewal":                   0o755,
	}
	for dir, want := range dirModes {
		fi, err := os.Stat(filepath.Join(f.Dir(), dir))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("mode of %q = %v, want %v", dir, fi.Mode().Perm(), want)
		}
	}

	// No temporary files are left behind.
	err := filepath.WalkDir(f.Dir(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tmpPrefix) {
			t.Errorf("temporary file left: %s", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLoadMissing(t *testing.T) {
	f := newFS(t)
	for _, key := range []string{"nope", "accounts/none/key.pem"} {
		t.Run(key, func(t *testing.T) {
			_, err := f.Load(context.Background(), key)
			if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrNotExist) {
				t.Errorf("err = %v, want fs.ErrNotExist", err)
			}
		})
	}
}

// TestStoreAtomic checks that a concurrent reader only ever sees a whole
// old or new value, never a truncated or mixed one.
func TestStoreAtomic(t *testing.T) {
	ctx := context.Background()
	f := newFS(t)
	a := bytes.Repeat([]byte("a"), 1<<20)
	b := bytes.Repeat([]byte("b"), 1<<19)
	if err := f.Store(ctx, "big", a); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			got, err := f.Load(ctx, "big")
			if err != nil {
				t.Errorf("Load: %v", err)
				return
			}
			if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
				t.Errorf("read a torn value of %d bytes", len(got))
				return
			}
		}
	}()
	for i := range 40 {
		v := a
		if i%2 == 0 {
			v = b
		}
		if err := f.Store(ctx, "big", v); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
}

func TestBadKeys(t *testing.T) {
	ctx := context.Background()
	f := newFS(t)
	keys := []string{"", "/etc/passwd", "..", "../x", "a/../../b", "a//b", "a/", "./a", "a/./b", `a\b`, "a\x00b", ".tmp-x", "a/.tmp-y"}
	for _, key := range keys {
		t.Run(key, func(t *testing.T) {
			if err := f.Store(ctx, key, []byte("x")); err == nil {
				t.Error("Store accepted the key")
			}
			if _, err := f.Load(ctx, key); err == nil || errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Load: err = %v, want a key error", err)
			}
			if err := f.Delete(ctx, key); err == nil {
				t.Error("Delete accepted the key")
			}
		})
	}
	for _, prefix := range []string{"/abs", "../up", "a//b", `a\b`} {
		t.Run("list "+prefix, func(t *testing.T) {
			if _, err := f.List(ctx, prefix); err == nil {
				t.Error("List accepted the prefix")
			}
		})
	}
	// Nothing escaped the state directory.
	if _, err := os.Stat(filepath.Join(filepath.Dir(f.Dir()), "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file was written outside the state directory: %v", err)
	}
}

func TestList(t *testing.T) {
	ctx := context.Background()
	f := newFS(t)
	for _, k := range []string{"b/2", "a/x/1", "a/y", "a-b", "a/x/0", "c"} {
		if err := f.Store(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	// A stray temporary file is not a key.
	if err := os.WriteFile(filepath.Join(f.Dir(), "a", tmpPrefix+"junk"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a-b", "a/x/0", "a/x/1", "a/y", "b/2", "c"}},
		{"a", []string{"a/x/0", "a/x/1", "a/y"}},
		{"a/", []string{"a/x/0", "a/x/1", "a/y"}},
		{"a/x", []string{"a/x/0", "a/x/1"}},
		{"c", []string{"c"}},
		{"missing", nil},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			got, err := f.List(ctx, tt.prefix)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("List(%q) = %q, want %q", tt.prefix, got, tt.want)
			}
		})
	}
}

func TestContextCancelled(t *testing.T) {
	f := newFS(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.Store(ctx, "k", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Store: %v", err)
	}
	if _, err := f.Load(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Load: %v", err)
	}
	if _, err := f.List(ctx, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("List: %v", err)
	}
}

func TestNewFSUnwritable(t *testing.T) {
	type tc struct {
		name   string
		setup  func(t *testing.T) string
		reason error
	}
	tests := []tc{{
		// Fails for every user, root included.
		name: "under a regular file",
		setup: func(t *testing.T) string {
			file := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(file, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(file, "state")
		},
		reason: syscall.ENOTDIR,
	}}
	// Permission bits do not stop root, so these cases only run for other
	// users; the case above covers root.
	if os.Geteuid() != 0 {
		tests = append(tests,
			tc{
				name: "read-only parent",
				setup: func(t *testing.T) string {
					parent := t.TempDir()
					if err := os.Chmod(parent, 0o500); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = os.Chmod(parent, 0o700) })
					return filepath.Join(parent, "state")
				},
				reason: syscall.EACCES,
			},
			tc{
				name: "read-only directory",
				setup: func(t *testing.T) string {
					dir := t.TempDir()
					if err := os.Chmod(dir, 0o500); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
					return dir
				},
				reason: syscall.EACCES,
			})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.setup(t)
			_, err := NewFS(dir, FSOptions{})
			if err == nil {
				t.Fatal("NewFS succeeded")
			}
			if !errors.Is(err, tt.reason) {
				t.Errorf("err = %v, want it to wrap %v", err, tt.reason)
			}
			msg := err.Error()
			for _, want := range []string{dir, tt.reason.Error(), "--state-dir", "run as a user who can write it"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
		})
	}
}

func TestNewFSCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "state")
	f, err := NewFS(dir, FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if f.Dir() != dir {
		t.Errorf("Dir = %q, want %q", f.Dir(), dir)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode = %v, want drwx------", fi.Mode())
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 0 {
		t.Errorf("state dir has %d entries after the probe (%v), want 0", len(ents), err)
	}
}
