package cli_test

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIssueWebroot issues through --webroot while a file server (standing in
// for the site's web server) owns the validation port and serves the root.
func TestIssueWebroot(t *testing.T) {
	t.Parallel()
	const name, fresh = "files.detour.test", "fresh-files.detour.test"
	env := newEnv(t, name, fresh)
	root := t.TempDir()
	ln, err := net.Listen("tcp", env.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(root))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	state, cfg := t.TempDir(), emptyConfig(t)
	r := mustRun(t, oneOff(env, cfg, state, "-d", name, "--webroot", root)...)
	wantIn(t, "issue output", r.stdout, name+": version 1")
	checkLive(t, state, name)
	if rec := loadRecord(t, state, name); len(rec.Paths) != 1 || rec.Paths[0].Kind != "webroot" || rec.Paths[0].Settings["root"] != root {
		t.Errorf("recorded paths = %+v, want the webroot", rec.Paths)
	}
	// Nothing is left behind in the web server's root.
	if entries, _ := os.ReadDir(filepath.Join(root, ".well-known", "acme-challenge")); len(entries) != 0 {
		t.Errorf("tokens left in the webroot: %v", entries)
	}
	// A root the server does not serve fails at the self-check, before the
	// CA is asked to validate. (A name never validated: Pebble sometimes
	// hands out an earlier valid authorization, and then nothing is
	// checked.)
	other := t.TempDir()
	r = run(t, oneOff(env, cfg, state, "-d", fresh, "--webroot", other, "--name", "wrongroot")...)
	if r.code != 1 || !strings.Contains(r.stderr, "answered 404") || !strings.Contains(r.stderr, "self-check failed") || !strings.Contains(r.stderr, "set root to the document root") {
		t.Errorf("wrong webroot: %v", r)
	}
}

// TestDeployHookFailureFailsTheCommand: the certificate is stored, but the
// command says the hook failed and exits 1.
func TestDeployHookFailureFailsTheCommand(t *testing.T) {
	t.Parallel()
	const name = "hook.detour.test"
	env := newEnv(t, name)
	state, cfg := t.TempDir(), emptyConfig(t)
	r := run(t, oneOff(env, cfg, state, "-d", name, "--deploy-hook", "echo nginx: reload refused >&2; exit 7")...)
	if r.code != 1 || !strings.Contains(r.stderr, "the new certificate is live (version 1)") || !strings.Contains(r.stderr, "reload refused") {
		t.Fatalf("failing hook: %v", r)
	}
	checkLive(t, state, name)
	// The hook is recorded and runs again on renewal.
	if rec := loadRecord(t, state, name); rec.DeployHook == "" {
		t.Error("deploy hook not recorded")
	}
	r = run(t, "--config", cfg, "--state-dir", state, "renew", "--force")
	if r.code != 1 || !strings.Contains(r.stderr, "version 2") {
		t.Errorf("renew with failing hook: %v", r)
	}
}
