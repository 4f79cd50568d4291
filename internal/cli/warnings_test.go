package cli_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// warningsConfig has two warnings: metrics on every interface (line 1) and
// a world-readable private key (line 9).
const warningsConfig = `metrics_listen = ":9464"

[[certificate]]
domains = ["warn.detour.test"]

[[certificate.output]]
path = "/etc/haproxy/certs/warn.pem"
format = "combined"
mode = "0644"
`

// TestConfigCheckWarnings checks that config check prints each warning with
// its file, line and key, and still succeeds.
func TestConfigCheckWarnings(t *testing.T) {
	t.Parallel()
	cfg := writeFile(t, "detour.toml", warningsConfig)
	r := mustRun(t, "--config", cfg, "config", "check")
	wantIn(t, "config check output", r.stdout,
		"warning: "+cfg+`:1: metrics_listen: ":9464" serves /metrics and /status on every interface`,
		"warning: "+cfg+`:9: certificate[0].output[0].mode: mode "0644" lets every user on this host read the private key (format combined)`,
		cfg+": ok (1 certificates, 0 paths, 0 CAs, 2 warnings)")
	if r.stderr != "" {
		t.Errorf("config check also logged: %s", r.stderr)
	}

	one := writeFile(t, "detour.toml", "metrics_listen = \"[::]:9464\"\n")
	wantIn(t, "config check output", mustRun(t, "--config", one, "config", "check").stdout, one+": ok (0 certificates, 0 paths, 0 CAs, 1 warning)\n")

	r = mustRun(t, "--config", writeFile(t, "detour.toml", "metrics_listen = \"127.0.0.1:9464\"\n"), "config", "check")
	if strings.Contains(r.stdout, "warning") {
		t.Errorf("loopback metrics_listen warned: %s", r.stdout)
	}
}

// TestConfigWarningsLogged checks that a command loading the config logs
// its warnings.
func TestConfigWarningsLogged(t *testing.T) {
	t.Parallel()
	cfg := writeFile(t, "detour.toml", warningsConfig)
	for _, format := range []string{"text", "json"} {
		r := mustRun(t, "--config", cfg, "--state-dir", t.TempDir(), "--log-format", format, "list")
		want := []string{`level=WARN msg="configuration warning" warning.file=` + cfg + " warning.line=1 warning.key=metrics_listen",
			"warning.line=9 warning.key=certificate[0].output[0].mode", "lets every user on this host read the private key"}
		if format == "json" {
			want = []string{`"level":"WARN","msg":"configuration warning","warning":{"file":"` + cfg + `","line":1,"key":"metrics_listen","message":`,
				`"line":9,"key":"certificate[0].output[0].mode"`}
		}
		wantIn(t, format+" log", r.stderr, want...)
		if n := strings.Count(r.stderr, "configuration warning"); n != 2 {
			t.Errorf("%s log has %d warnings, want 2:\n%s", format, n, r.stderr)
		}
	}
}

// TestVersion checks detour --version and detour version: the same line
// with the version, the commit and the Go version and platform.
func TestVersion(t *testing.T) {
	t.Parallel()
	flag := mustRun(t, "--version")
	cmd := mustRun(t, "version")
	if flag.stdout != cmd.stdout {
		t.Errorf("--version printed %q, version printed %q", flag.stdout, cmd.stdout)
	}
	// A test binary has no VCS stamp, so the commit is unknown.
	want := fmt.Sprintf(" (commit unknown) %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if !strings.HasPrefix(cmd.stdout, "detour ") || !strings.HasSuffix(cmd.stdout, want) || strings.Count(cmd.stdout, "\n") != 1 {
		t.Errorf("version printed %q, want \"detour VERSION%s\"", cmd.stdout, want)
	}
	if r := run(t, "version", "extra"); r.code == 0 {
		t.Errorf("version with an argument: %v", r)
	}
}
