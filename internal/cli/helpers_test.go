package cli_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/cli"
	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/testenv"
)

// result is what one detour invocation produced.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// run executes detour in-process with args.
func run(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if env, ok := envs.Load(t); ok {
		args = append(args, selfCheckArgs(env.(*testenv.Env))...)
	}
	code := cli.Run(ctx, args, &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// mustRun runs detour and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := run(t, args...)
	if r.code != 0 {
		t.Fatalf("detour %s: %v", strings.Join(args, " "), r)
	}
	return r
}

// emptyConfig writes an empty configuration file, which means defaults
// only, like having no configuration at all.
func emptyConfig(t *testing.T) string {
	t.Helper()
	return writeFile(t, "detour.toml", "")
}

// writeFile writes text to a new file called name in a fresh directory.
func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// newEnv starts a CA whose validation ports are free for detour to bind,
// with names resolving to 127.0.0.1.
func newEnv(t *testing.T, names ...string) *testenv.Env {
	t.Helper()
	env := testenv.New(t, testenv.Options{KeepPorts: true})
	for _, n := range names {
		env.AddName(n)
	}
	envs.Store(t, env)
	t.Cleanup(func() { envs.Delete(t) })
	return env
}

// envs maps a test to its environment, so that every detour run of the test
// self-checks against the sandbox's DNS and validation ports, as the CA will.
var envs sync.Map

// selfCheckArgs points the self-check at env: its DNS server and the ports
// its CA validates on.
func selfCheckArgs(env *testenv.Env) []string {
	port := func(addr string) string {
		_, p, _ := net.SplitHostPort(addr)
		return p
	}
	return []string{"--resolver", env.DNSAddr, "--check-http-port", port(env.HTTPAddr), "--check-tls-port", port(env.TLSAddr)}
}

// oneOff returns the arguments of a one-off issue against env through
// standalone http-01, followed by extra.
func oneOff(env *testenv.Env, cfg, state string, extra ...string) []string {
	args := []string{"--config", cfg, "--state-dir", state, "issue",
		"--ca", env.CA.DirectoryURL(), "--ca-roots", env.RootsFile,
		"--agree-tos", "--email", "t@detour.test", "--profile", "shortlived",
		"--http-addr", env.HTTPAddr}
	return append(args, extra...)
}

// checkLive loads live/<name>/{fullchain,privkey}.pem the way a web server
// would, fails unless the key matches the leaf, and returns the leaf.
func checkLive(t *testing.T, stateDir, name string) *x509.Certificate {
	t.Helper()
	leaf, err := loadLive(stateDir, name)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// loadLive is checkLive returning the error.
func loadLive(stateDir, name string) (*x509.Certificate, error) {
	live := filepath.Join(stateDir, "live", name)
	pair, err := tls.LoadX509KeyPair(filepath.Join(live, "fullchain.pem"), filepath.Join(live, "privkey.pem"))
	if err != nil {
		return nil, fmt.Errorf("live certificate of %s does not load: %w", name, err)
	}
	return x509.ParseCertificate(pair.Certificate[0])
}

// checkCovers fails unless leaf is valid for every name.
func checkCovers(t *testing.T, leaf *x509.Certificate, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := leaf.VerifyHostname(n); err != nil {
			t.Errorf("certificate does not cover %s: %v (DNS %v, IP %v)", n, err, leaf.DNSNames, leaf.IPAddresses)
		}
	}
}

// liveTarget returns the archive file live/<name>/cert.pem points at.
func liveTarget(t *testing.T, stateDir, name string) string {
	t.Helper()
	target, err := os.Readlink(filepath.Join(stateDir, "live", name, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Base(target)
}

// archiveCerts lists archive/<name>/cert*.pem, sorted.
func archiveCerts(t *testing.T, stateDir, name string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(stateDir, "archive", name, "cert[0-9]*.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	slices.Sort(m)
	return m
}

// loadRecord reads the renewal record of name from stateDir.
func loadRecord(t *testing.T, stateDir, name string) store.Record {
	t.Helper()
	st, err := store.NewFS(stateDir, store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := st.LoadRecord(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// wantIn fails unless s contains every one of subs.
func wantIn(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not mention %q:\n%s", what, sub, s)
		}
	}
}

// writeSandboxConfig writes a config file for env: its CA as the default,
// the path tables paths (TOML fragments keyed by path name) and the
// certificates certs (TOML fragments).
func writeSandboxConfig(t *testing.T, env *testenv.Env, state, file string, paths map[string]string, certs ...string) {
	t.Helper()
	doc := fmt.Sprintf(`state_dir = %q
email = "t@detour.test"
agree_tos = true
default_ca = "sandbox"

[ca.sandbox]
directory = %q
root_bundle = %q
`, state, env.CA.DirectoryURL(), env.RootsFile)
	for _, name := range slices.Sorted(maps.Keys(paths)) {
		doc += fmt.Sprintf("\n[path.%s]\n%s\n", name, paths[name])
	}
	for _, c := range certs {
		doc += "\n[[certificate]]\n" + c + "\n"
	}
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
}
