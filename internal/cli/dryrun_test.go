package cli_test

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestDryRun: --dry-run goes through the whole flow against the CA and
// stores nothing: no certificate, no record, no failure, and the live
// certificate of an existing one untouched.
func TestDryRun(t *testing.T) {
	t.Parallel()
	env := newEnv(t, "new.dry.detour.test", "old.dry.detour.test")
	state, cfg := t.TempDir(), emptyConfig(t)
	base := []string{"--config", cfg, "--state-dir", state}

	r := mustRun(t, oneOff(env, cfg, state, "-d", "new.dry.detour.test", "--dry-run")...)
	wantIn(t, "issue --dry-run", r.stdout, "dry run: new.dry.detour.test would be issued", "nothing stored")
	for _, dir := range []string{"live", "archive", "renewal"} {
		if m, _ := filepath.Glob(filepath.Join(state, dir, "new.dry.detour.test*")); len(m) > 0 {
			t.Errorf("a dry run stored %v", m)
		}
	}

	mustRun(t, oneOff(env, cfg, state, "-d", "old.dry.detour.test")...)
	recFile := filepath.Join(state, "renewal", "old.dry.detour.test.json")
	before, err := os.ReadFile(recFile)
	if err != nil {
		t.Fatal(err)
	}
	target := liveTarget(t, state, "old.dry.detour.test")
	r = mustRun(t, append(base, "renew", "--dry-run")...)
	wantIn(t, "renew --dry-run", r.stdout, "dry run: old.dry.detour.test would be issued", "nothing stored")
	if got := liveTarget(t, state, "old.dry.detour.test"); got != target {
		t.Errorf("live after a dry run: %s, was %s", got, target)
	}
	if after, _ := os.ReadFile(recFile); string(after) != string(before) {
		t.Errorf("the record changed in a dry run:\n%s\nwas\n%s", after, before)
	}
	if got := archiveCerts(t, state, "old.dry.detour.test"); len(got) != 1 {
		t.Errorf("archive after a dry run: %v, want one version", got)
	}

	// A failing dry run records no failure either: another program holds
	// the address the path binds.
	busy, err := net.Listen("tcp", env.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	r = run(t, append(base, "renew", "--dry-run")...)
	if r.code != 1 {
		t.Fatalf("renew --dry-run against a refusing CA: want exit 1: %v", r)
	}
	if after, _ := os.ReadFile(recFile); string(after) != string(before) {
		t.Errorf("a failed dry run changed the record:\n%s", after)
	}
}
