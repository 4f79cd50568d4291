package cli_test

import (
	"os"
	"strings"
	"testing"
)

// An unsupported --server is a usage error given before anything else: no
// account is registered and no CA contacted. The CA here is a closed port,
// which would fail with "connection refused" (exit 1) if it were reached.
func TestSnippetRefusesServerFirst(t *testing.T) {
	const closedCA = "http://127.0.0.1:1/directory"
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"stateless", []string{"snippet", "stateless", "--server", "lighttpd", "--ca", closedCA, "--email", "t@detour.test", "--agree-tos"},
			`--server: unknown web server "lighttpd": supported are nginx, apache, haproxy`},
		{"http", []string{"snippet", "http", "--server", "iis"},
			`--server: unknown web server "iis": supported are nginx, apache, haproxy, caddy, traefik, lighttpd`},
		{"tls-alpn", []string{"snippet", "tls-alpn", "--server", "caddy"},
			`--server: unknown web server "caddy": supported are nginx, haproxy`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := t.TempDir()
			args := append([]string{"--config", emptyConfig(t), "--state-dir", state}, tt.args...)
			r := run(t, args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2 (usage error)\n%v", r.code, r)
			}
			wantIn(t, "stderr", r.stderr, tt.want)
			for _, bad := range []string{"127.0.0.1:1", "refused", "directory"} {
				if strings.Contains(r.stderr, bad) {
					t.Errorf("stderr mentions %q: the CA was contacted\n%v", bad, r)
				}
			}
			if entries, err := os.ReadDir(state); err != nil || len(entries) > 0 {
				t.Errorf("the state directory holds %v (%v), want nothing: no account key made", entries, err)
			}
			if r.stdout != "" {
				t.Errorf("stdout is not empty:\n%s", r.stdout)
			}
		})
	}
}
