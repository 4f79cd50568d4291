package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestConfigFile drives issue, renew and config check from a configuration
// file alone: CA table, path table and certificate entry.
func TestConfigFile(t *testing.T) {
	t.Parallel()
	const host = "www.detour.test"
	env := newEnv(t, host)
	state := filepath.Join(t.TempDir(), "state")
	cfg := writeFile(t, "detour.toml", fmt.Sprintf(`
state_dir = %q
email = "cfg@detour.test"
agree_tos = true
default_ca = "sandbox"

[ca.sandbox]
directory = %q
root_bundle = %q

[path.web]
kind = "standalone"
challenge = "http-01"
listen = %q

[[certificate]]
name = "www"
domains = [%q, "127.0.0.1"]
profile = "tlsserver"
paths = ["web"]
`, state, env.CA.DirectoryURL(), env.RootsFile, env.HTTPAddr, host))

	r := mustRun(t, "--config", cfg, "config", "check")
	wantIn(t, "config check output", r.stdout, cfg, "ok", "1 certificates", "1 paths", "1 CAs")

	r = mustRun(t, "--config", cfg, "issue")
	wantIn(t, "issue output", r.stdout, "www: version 1", filepath.Join(state, "live", "www", "fullchain.pem"))
	checkCovers(t, checkLive(t, state, "www"), host, "127.0.0.1")
	rec := loadRecord(t, state, "www")
	if rec.CAName != "sandbox" || rec.Profile != "tlsserver" || rec.Email != "cfg@detour.test" {
		t.Errorf("record: ca_name %q, profile %q, email %q; want sandbox, tlsserver, cfg@detour.test", rec.CAName, rec.Profile, rec.Email)
	}

	r = mustRun(t, "--config", cfg, "renew", "www", "--force")
	wantIn(t, "renew output", r.stdout, "www: version 2")
	if got, want := archiveCerts(t, state, "www"), []string{"cert1.pem", "cert2.pem"}; !slices.Equal(got, want) {
		t.Errorf("archive holds %v, want %v", got, want)
	}
	checkLive(t, state, "www")

	r = mustRun(t, "--config", cfg, "status")
	wantIn(t, "status output", r.stdout, "www", host)
}

// TestConfigMissing checks what a named but missing configuration file
// does: commands that work from flags alone say which file is missing and
// how to run without one; commands that need a file say how to create one.
func TestConfigMissing(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "nosuch.toml")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"one-off issue", []string{"issue", "-d", "x.detour.test"}, []string{missing, "--config"}},
		{"list", []string{"list"}, []string{missing, "--config"}},
		{"config check", []string{"config", "check"}, []string{missing, "config example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, append([]string{"--config", missing, "--state-dir", t.TempDir()}, tt.args...)...)
			if r.code != 1 {
				t.Fatalf("want exit 1: %v", r)
			}
			wantIn(t, "stderr", r.stderr, tt.want...)
		})
	}
	// An empty file is the same as no file: defaults only.
	r := mustRun(t, "--config", emptyConfig(t), "--state-dir", t.TempDir(), "list")
	wantIn(t, "list output", r.stdout, "no certificates")
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("%s was created", missing)
	}
}
