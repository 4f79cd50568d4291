package cli_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/detour-acme/detour/internal/testenv"
)

// TestIssueDNSAccount01 issues a name and its wildcard through
// dns-account-01 answered by Detour's embedded DNS responder, the way a
// user does: once with --challenge on the command line, once with
// challenge = "dns-account-01" in a [path.NAME] table; the CA's validation
// authority asks the responder directly, as a delegated zone's resolver
// would. The record goes under the account's label, and renewing from the
// record keeps the challenge.
func TestIssueDNSAccount01(t *testing.T) {
	t.Parallel()
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	env := testenv.New(t, testenv.Options{KeepPorts: true, VADNSAddr: dnsAddr})
	t.Run("flag", func(t *testing.T) {
		state, cfg := t.TempDir(), emptyConfig(t)
		r := mustRun(t, oneOff(env, cfg, state, "-d", "flag.acct.test", "-d", "*.flag.acct.test",
			"--path", "dns-embedded", "--dns-addr", dnsAddr, "--challenge", "dns-account-01")...)
		wantIn(t, "issue output", r.stdout, "version 1")
		checkCovers(t, checkLive(t, state, "flag.acct.test"), "flag.acct.test", "x.flag.acct.test")
		rec := loadRecord(t, state, "flag.acct.test")
		if len(rec.Paths) != 1 || rec.Paths[0].Settings["challenge"] != "dns-account-01" || rec.Paths[0].Settings["listen"] != dnsAddr {
			t.Fatalf("record paths = %+v, want dns-embedded answering dns-account-01 on %s", rec.Paths, dnsAddr)
		}
		r = mustRun(t, "--config", cfg, "--state-dir", state, "renew", "--force")
		wantIn(t, "renew output", r.stdout, "version 2")
	})
	t.Run("config", func(t *testing.T) {
		state := t.TempDir()
		cfg := filepath.Join(t.TempDir(), "detour.toml")
		writeSandboxConfig(t, env, state, cfg,
			map[string]string{"delegated": fmt.Sprintf("kind = \"dns-embedded\"\nchallenge = \"dns-account-01\"\nlisten = %q", dnsAddr)},
			"domains = [\"conf.acct.test\", \"*.conf.acct.test\"]\npaths = [\"delegated\"]\nprofile = \"shortlived\"")
		mustRun(t, "--config", cfg, "config", "check")
		r := mustRun(t, "--config", cfg, "issue")
		wantIn(t, "issue output", r.stdout, "conf.acct.test: version 1")
		checkCovers(t, checkLive(t, state, "conf.acct.test"), "conf.acct.test", "x.conf.acct.test")
	})
	t.Run("not every kind answers it", func(t *testing.T) {
		cfg := writeFile(t, "detour.toml", "[path.p]\nkind = \"dns-provider\"\nchallenge = \"dns-account-01\"\nprovider = \"cloudflare\"\ncredentials_file = \"/etc/detour/cf.ini\"\n")
		r := run(t, "--config", cfg, "config", "check")
		if r.code != 1 {
			t.Fatalf("config check: want exit 1: %v", r)
		}
		wantIn(t, "config check", r.stderr, "detour.toml:3: path.p.challenge", "DNS provider cloudflare cannot answer dns-account-01", `set challenge = "dns-01"`)
		r = run(t, "--config", emptyConfig(t), "--state-dir", t.TempDir(), "issue", "-d", "x.acct.test",
			"--path", "standalone-http", "--challenge", "dns-account-01", "--ca", "https://127.0.0.1:1/dir")
		if r.code != 2 {
			t.Fatalf("issue: want exit 2: %v", r)
		}
		wantIn(t, "issue", r.stderr, "--challenge", "dns-embedded", "rfc2136", "acme-dns")
	})
}
