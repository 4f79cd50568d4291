package cli_test

import (
	"regexp"
	"testing"
)

// TestRevokeAndAccount revokes a certificate by name (twice), shows the
// account and rolls its key over, then issues with the new key.
func TestRevokeAndAccount(t *testing.T) {
	t.Parallel()
	env := newEnv(t, "r.detour.test", "after.detour.test")
	state, cfg := t.TempDir(), emptyConfig(t)
	mustRun(t, oneOff(env, cfg, state, "-d", "r.detour.test")...)
	serial := loadRecord(t, state, "r.detour.test").Serial

	r := mustRun(t, "--config", cfg, "--state-dir", state, "revoke", "r.detour.test", "--reason", "superseded")
	wantIn(t, "revoke output", r.stdout, "revoked certificate r.detour.test", serial, "superseded")
	r = run(t, "--config", cfg, "--state-dir", state, "revoke", "r.detour.test")
	if r.code != 1 {
		t.Fatalf("second revoke: want exit 1: %v", r)
	}
	wantIn(t, "second revoke stderr", r.stderr, "already revoked", serial, "r.detour.test")

	account := []string{"--config", cfg, "--state-dir", state, "account"}
	ca := []string{"--ca", env.CA.DirectoryURL(), "--ca-roots", env.RootsFile, "--email", "t@detour.test", "--agree-tos"}
	thumbprint := regexp.MustCompile(`(?m)^thumbprint: +([A-Za-z0-9_-]{43})$`)
	r = mustRun(t, append(append(account, "show"), ca...)...)
	before := thumbprint.FindStringSubmatch(r.stdout)
	if before == nil {
		t.Fatalf("account show prints no thumbprint:\n%s", r.stdout)
	}
	wantIn(t, "account show output", r.stdout, env.CA.DirectoryURL())

	r = mustRun(t, append(append(account, "rollover"), ca...)...)
	after := thumbprint.FindStringSubmatch(r.stdout)
	if after == nil || after[1] == before[1] {
		t.Fatalf("rollover: thumbprint %v, was %s:\n%s", after, before[1], r.stdout)
	}
	r = mustRun(t, append(append(account, "show"), ca...)...)
	if got := thumbprint.FindStringSubmatch(r.stdout); got == nil || got[1] != after[1] {
		t.Errorf("account show after rollover: %v, want thumbprint %s", got, after[1])
	}

	mustRun(t, oneOff(env, cfg, state, "-d", "after.detour.test")...)
	checkLive(t, state, "after.detour.test")
	mustRun(t, "--config", cfg, "--state-dir", state, "renew", "after.detour.test", "--force")
}
