package cli_test

import (
	"path/filepath"
	"testing"
	"time"
)

// TestBadInput checks that mistakes on the command line and in the config
// file exit with the right code and say what to change, before anything is
// asked of a CA.
func TestBadInput(t *testing.T) {
	t.Parallel()
	cfg := emptyConfig(t)
	typo := writeFile(t, "typo.toml", "email = \"ops@detour.test\"\nagre_tos = true\n")
	regular := writeFile(t, "regular", "")
	blocked := filepath.Join(regular, "state")
	tests := []struct {
		name     string
		args     []string
		stateDir string // default: a fresh directory
		code     int
		want     []string
	}{
		{"CA shortcut typo", []string{"--config", cfg, "issue", "-d", "x.detour.test", "--ca", "letsencryp"}, "", 2,
			[]string{"--ca", `"letsencryp"`, `did you mean "letsencrypt"`}},
		{"config key typo", []string{"--config", typo, "config", "check"}, "", 1,
			[]string{typo + ":2", "agre_tos", `did you mean "agree_tos"`}},
		{"config key typo on issue", []string{"--config", typo, "issue", "-d", "x.detour.test"}, "", 1,
			[]string{typo + ":2", `did you mean "agree_tos"`}},
		{"key type", []string{"--config", cfg, "issue", "-d", "x.detour.test", "--key-type", "rsa1024"}, "", 2,
			[]string{"--key-type", "rsa1024", "ecdsa-p256", "rsa2048"}},
		{"space in name", []string{"--config", cfg, "issue", "-d", "bad name"}, "", 2,
			[]string{"--domain", `"bad name"`, "spaces"}},
		{"bare wildcard", []string{"--config", cfg, "issue", "-d", "*"}, "", 2,
			[]string{"--domain", "*.example.com"}},
		{"underscore", []string{"--config", cfg, "issue", "-d", "under_score.example.com"}, "", 2,
			[]string{"--domain", "under_score.example.com", "underscore", "hyphen"}},
		{"EAB key ID alone", []string{"--config", cfg, "issue", "-d", "x.detour.test", "--eab-kid", "kid-1"}, "", 2,
			[]string{"--eab-kid", "--eab-hmac-key"}},
		{"one-off flag without -d", []string{"--config", cfg, "issue", "--profile", "shortlived"}, "", 2,
			[]string{"--profile", "-d/--domain"}},
		{"state dir below a file", []string{"--config", cfg, "issue", "-d", "x.detour.test", "--agree-tos", "--http-addr", "127.0.0.1:0"}, blocked, 1,
			[]string{blocked, "--state-dir"}},
		{"state dir below a file on renew", []string{"--config", cfg, "renew"}, blocked, 1,
			[]string{blocked, "--state-dir"}},
		{"renew unknown name", []string{"--config", cfg, "renew", "nosuch"}, "", 1,
			[]string{`"nosuch"`, "detour list"}},
		{"revoke without target", []string{"--config", cfg, "revoke"}, "", 2,
			[]string{"NAME", "--cert-file"}},
		{"revoke name and file", []string{"--config", cfg, "revoke", "www", "--cert-file", regular}, "", 2,
			[]string{"NAME", "--cert-file"}},
		{"revoke reason", []string{"--config", cfg, "revoke", "www", "--reason", "bored"}, "", 2,
			[]string{"--reason", "bored"}},
		{"unknown flag", []string{"--config", cfg, "issue", "--domian", "x.detour.test"}, "", 2,
			[]string{"--domian", "detour issue --help"}},
		{"log level", []string{"--config", cfg, "--log-level", "loud", "list"}, "", 2,
			[]string{"--log-level", "debug"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := tt.stateDir
			if state == "" {
				state = t.TempDir()
			}
			r := run(t, append([]string{"--state-dir", state}, tt.args...)...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d: %v", r.code, tt.code, r)
			}
			wantIn(t, "stderr", r.stderr, tt.want...)
			if r.stdout != "" {
				t.Errorf("stdout is not empty: %q", r.stdout)
			}
		})
	}
}

// TestUnreachableCA checks that a CA that cannot be reached fails quickly
// and names the URL.
func TestUnreachableCA(t *testing.T) {
	t.Parallel()
	const dir = "https://127.0.0.1:1/dir"
	start := time.Now()
	r := run(t, "--config", emptyConfig(t), "--state-dir", t.TempDir(), "issue", "-d", "x.detour.test",
		"--ca", dir, "--agree-tos", "--profile", "shortlived", "--http-addr", "127.0.0.1:0")
	if r.code != 1 {
		t.Fatalf("want exit 1: %v", r)
	}
	wantIn(t, "stderr", r.stderr, dir)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("failing took %v", d)
	}
}

// TestTermsNotAgreed checks that registering without --agree-tos fails and
// says to pass it, for issue and for account register.
func TestTermsNotAgreed(t *testing.T) {
	t.Parallel()
	env := newEnv(t, "tos.detour.test")
	cfg := emptyConfig(t)
	ca := []string{"--ca", env.CA.DirectoryURL(), "--ca-roots", env.RootsFile, "--email", "t@detour.test"}
	tests := []struct {
		name string
		args []string
	}{
		{"issue", append([]string{"issue", "-d", "tos.detour.test", "--profile", "shortlived", "--http-addr", env.HTTPAddr}, ca...)},
		{"account register", append([]string{"account", "register"}, ca...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := t.TempDir()
			r := run(t, append([]string{"--config", cfg, "--state-dir", state}, tt.args...)...)
			if r.code != 1 {
				t.Fatalf("want exit 1: %v", r)
			}
			wantIn(t, "stderr", r.stderr, "--agree-tos")
			if m, _ := filepath.Glob(filepath.Join(state, "live", "*")); len(m) > 0 {
				t.Errorf("certificates stored: %v", m)
			}
		})
	}
}
