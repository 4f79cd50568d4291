package cli_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/detour-acme/detour/internal/store"
)

// TestDiskFullAfterIssuance: the state directory fills up after the CA has
// issued. The certificate is kept aside (small, written first), the
// partial archive version is removed, the live one is untouched; once
// there is room, the next run stores the kept certificate without ordering
// a new one. Needs root, for a tmpfs of a few pages.
func TestDiskFullAfterIssuance(t *testing.T) {
	t.Parallel()
	const name = "full.disk.detour.test"
	env := newEnv(t, name)
	state, cfg := t.TempDir(), emptyConfig(t)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", state).CombinedOutput(); err != nil {
		t.Fatalf("mounting a small tmpfs for the state directory (tests run as root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", state).Run() })
	base := []string{"--config", cfg, "--state-dir", state}
	mustRun(t, oneOff(env, cfg, state, "-d", name)...)

	// Leave 12 KiB: the note of the issued certificate fits (one page),
	// the four archive files of the new version do not.
	var fsStat syscall.Statfs_t
	if err := syscall.Statfs(state, &fsStat); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(state, "filler")
	if err := os.WriteFile(filler, make([]byte, int64(fsStat.Bavail)*fsStat.Bsize-12<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, append(base, "renew", "--force")...)
	if r.code != 1 {
		t.Fatalf("renew on a full disk: want exit 1: %v", r)
	}
	wantIn(t, "renew on a full disk", r.stderr, "no space left on device", "is kept in pending/"+name+".issued.key", "no new order is needed")
	if got := liveTarget(t, state, name); got != "cert1.pem" {
		t.Errorf("live -> %s, want the first version untouched", got)
	}
	if m, _ := filepath.Glob(filepath.Join(state, "archive", name, "*2.pem")); len(m) != 0 {
		t.Errorf("partial archive files stayed: %v", m)
	}
	if tmp := tempFiles(t, state); len(tmp) != 0 {
		t.Errorf("temporary files of the failed writes stayed: %v", tmp)
	}
	kept := filepath.Join(state, "pending", name+".issued.key")
	data, err := os.ReadFile(kept)
	if err != nil {
		t.Fatalf("the issued certificate was not kept: %v", err)
	}
	// It holds the private key: readable by its owner only.
	if fi, err := os.Stat(kept); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v (%v), want 0600", kept, fi.Mode().Perm(), err)
	}
	var note struct{ Bundle store.Bundle }
	if err := json.Unmarshal(data, &note); err != nil {
		t.Fatal(err)
	}
	leaf, err := note.Bundle.Leaf()
	if err != nil {
		t.Fatal(err)
	}

	// Room again: the next run (nothing is due by the dates) stores it,
	// also from the name earlier versions kept it under.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	legacy := filepath.Join(state, "pending", name+".issued.json")
	if err := os.Rename(kept, legacy); err != nil {
		t.Fatal(err)
	}
	r = mustRun(t, append(base, "renew")...)
	wantIn(t, "renew with room", r.stderr, "no new order was made")
	rec := loadRecord(t, state, name)
	if rec.Serial != leaf.SerialNumber.Text(16) || rec.Version != 2 {
		t.Errorf("record serial %s version %d, want the kept certificate %s as version 2", rec.Serial, rec.Version, leaf.SerialNumber.Text(16))
	}
	checkLive(t, state, name)
	if _, err := os.Stat(legacy); !os.IsNotExist(err) {
		t.Errorf("the note stayed after the certificate was stored: %v", err)
	}
}
