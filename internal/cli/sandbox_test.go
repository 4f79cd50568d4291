package cli_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSandbox runs the offline rehearsal in-process and checks its table:
// one row per validation path plus the renewal, each with a version. Every
// row is a certificate the local CA issued after validating through that
// path (and Detour's self-check of it), so a broken path fails the run.
func TestSandbox(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	r := mustRun(t, "--config", emptyConfig(t), "--state-dir", state, "sandbox")
	lines := strings.Split(r.stdout, "\n")
	if len(lines) < 5 || !strings.HasPrefix(lines[0], "PATH") {
		t.Fatalf("no table in the output:\n%s", r.stdout)
	}
	var rows []string
	for _, l := range lines[1:] {
		if strings.TrimSpace(l) == "" {
			break
		}
		rows = append(rows, l)
	}
	want := []struct{ path, challenge, version string }{
		{"standalone-http", "http-01", "1"},
		{"standalone-http (renewal)", "http-01", "2"},
		{"webroot", "http-01", "1"},
		{"side-port", "http-01", "1"},
		{"stateless", "http-01", "1"},
		{"standalone-tls-alpn", "tls-alpn-01", "1"},
		{"front-door", "tls-alpn-01", "1"},
		{"alpn-forward", "tls-alpn-01", "1"},
		{"dns-embedded", "dns-01", "1"},
		{"persist", "dns-persist-01", "1"},
	}
	if len(rows) != len(want) {
		t.Fatalf("table has %d rows, want %d:\n%s", len(rows), len(want), r.stdout)
	}
	for i, w := range want {
		rest, ok := strings.CutPrefix(rows[i], w.path+" ")
		if !ok {
			t.Errorf("row %d is %q, want path %s", i, rows[i], w.path)
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 3 || f[0] != w.challenge || f[2] != w.version {
			t.Errorf("row %d is %q, want challenge %s and version %s", i, rows[i], w.challenge, w.version)
		}
	}
	wantIn(t, "sandbox output", r.stdout, "All certificates issued", state)
	for _, name := range []string{"http-demo", "webroot-demo", "side-demo", "stateless-demo", "alpn-demo", "door-demo", "forward-demo"} {
		checkLive(t, state, name)
	}
	checkCovers(t, checkLive(t, state, "dns-demo"), "dns.detour.test", "any.dns.detour.test")
	checkCovers(t, checkLive(t, state, "persist-demo"), "persist.detour.test", "any.persist.detour.test")
	if got := archiveCerts(t, state, "http-demo"); !slices.Equal(got, []string{"cert1.pem", "cert2.pem"}) {
		t.Errorf("http-demo archive holds %v, want cert1.pem and cert2.pem", got)
	}
	// The sandbox leaves its CA's roots next to the state for rehearsals.
	if m, _ := filepath.Glob(filepath.Join(state, "sandbox-ca-roots.pem")); len(m) != 1 {
		t.Errorf("no sandbox-ca-roots.pem in %s", state)
	}
}
