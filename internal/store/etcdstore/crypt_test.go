package etcdstore

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadKeys(t *testing.T) {
	a, b := keyLine("a"), keyLine("b")
	short := "s:" + base64.StdEncoding.EncodeToString(make([]byte, 16))
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    []string // in the error, "" for none
		ids     []string
	}{
		{"one key", a + "\n", 0o600, nil, []string{"a"}},
		{"two keys, comments, blank lines, CRLF", "# fleet keys\r\n\r\n" + b + "\r\n" + a + "\r\n", 0o600, nil, []string{"b", "a"}},
		{"owner read-only", a + "\n", 0o400, nil, []string{"a"}},
		{"group-readable", a + "\n", 0o640, []string{"mode 0640", "chmod 600 FILE"}, nil},
		{"world-readable", a + "\n", 0o604, []string{"mode 0604", "chmod 600 FILE"}, nil},
		{"wrong length", a + "\n" + short + "\n", 0o600, []string{"FILE, line 2", "16 bytes", "32"}, nil},
		{"bad base64", "x:not*base64\n", 0o600, []string{"FILE, line 1", "base64"}, nil},
		{"duplicate id", a + "\n" + "a" + b[1:] + "\n", 0o600, []string{"FILE, line 2", `"a"`, "line 1"}, nil},
		{"no colon", "justakey\n", 0o600, []string{"FILE, line 1", "ID:BASE64KEY"}, nil},
		{"bad id", "a b:" + a[2:] + "\n", 0o600, []string{"FILE, line 1", "key id"}, nil},
		{"empty", "# nothing\n", 0o600, []string{"FILE holds no key", "init-key"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "fleet.key")
			if err := os.WriteFile(file, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(file, tt.mode); err != nil {
				t.Fatal(err)
			}
			k, err := LoadKeys(file)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if got := k.IDs(); strings.Join(got, ",") != strings.Join(tt.ids, ",") || k.Current() != tt.ids[0] {
					t.Errorf("ids = %v (current %q), want %v", got, k.Current(), tt.ids)
				}
				return
			}
			if err == nil {
				t.Fatal("LoadKeys accepted the file")
			}
			for _, w := range tt.want {
				w = strings.ReplaceAll(w, "FILE", file)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			// No key material in errors.
			for _, line := range []string{a, b} {
				if _, secret, _ := strings.Cut(line, ":"); strings.Contains(err.Error(), secret) {
					t.Error("the error shows a key")
				}
			}
		})
	}
	if _, err := LoadKeys(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v, want fs.ErrNotExist", err)
	}
}

func TestNewKeyFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "fleet.key")
	if err := NewKeyFile(file); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, %v; want 0600", fi.Mode(), err)
	}
	k, err := LoadKeys(file)
	if err != nil || len(k.IDs()) != 1 || !strings.HasPrefix(k.Current(), "k") {
		t.Fatalf("LoadKeys of a new key file = %v, %v", k.IDs(), err)
	}
	before, _ := os.ReadFile(file)
	if err := NewKeyFile(file); err == nil || !strings.Contains(err.Error(), "never overwritten") {
		t.Errorf("NewKeyFile over an existing file: err = %v, want a refusal", err)
	}
	if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
		t.Error("NewKeyFile changed an existing key file")
	}
	// Two key files get different keys and ids.
	other := filepath.Join(t.TempDir(), "other.key")
	if err := NewKeyFile(other); err != nil {
		t.Fatal(err)
	}
	k2, _ := LoadKeys(other)
	if k2.Current() == k.Current() {
		t.Errorf("two new key files share the id %q", k.Current())
	}
}

// TestEnvelope: sealed values open under the same etcd key only, with any
// key of the file; tampering and truncation are caught.
func TestEnvelope(t *testing.T) {
	oldK := mustKeys(t, keyLine("old"))
	both := Keys{list: append(mustKeys(t, keyLine("new")).list, oldK.list...)}
	env, err := oldK.seal("/p/store/kv/a.key", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(env, []byte("secret")) {
		t.Error("the envelope holds the plaintext")
	}
	if got, err := both.open("/p/store/kv/a.key", env); err != nil || string(got) != "secret" {
		t.Errorf("open with a file holding the key second = %q, %v", got, err)
	}
	if _, err := both.open("/p/store/kv/b.key", env); err == nil {
		t.Error("opened under another etcd key")
	}
	bad := bytes.Clone(env)
	bad[len(bad)-1] ^= 1
	if _, err := oldK.open("/p/store/kv/a.key", bad); err == nil {
		t.Error("opened a tampered envelope")
	}
	// A changed key id in the header fails too (the header is bound).
	renamed := bytes.Replace(env, []byte("old"), []byte("new"), 1)
	if _, err := both.open("/p/store/kv/a.key", renamed); err == nil {
		t.Error("opened an envelope whose key id was changed")
	}
	for _, cut := range []int{0, 3, 5, 8, 20} {
		if _, err := oldK.open("/p/store/kv/a.key", env[:cut]); err == nil {
			t.Errorf("opened an envelope cut to %d bytes", cut)
		}
	}
	if _, err := oldK.open("/p/store/kv/a.key", []byte("-----BEGIN PRIVATE KEY-----")); err == nil || !strings.Contains(err.Error(), "not encrypted") {
		t.Errorf("a clear value: err = %v, want one saying it is not encrypted", err)
	}
}
