package cli

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/rfc2136"
)

func TestRFC2136PathWiring(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "tsig.secret")
	if err := os.WriteFile(secret, []byte("c2VjcmV0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.secret")
	if err := os.WriteFile(bad, []byte("not base64!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		settings map[string]string
		wantErr  string
	}{
		{"secret file", map[string]string{"server": "192.0.2.53:53", "tsig_key": "detour-key", "tsig_secret_file": secret, "propagation_timeout": "90s"}, ""},
		{"inline secret", map[string]string{"tsig_key": "detour-key", "tsig_secret": "c2VjcmV0", "tsig_algorithm": "hmac-sha512", "zone": "example.com"}, ""},
		{"missing secret file", map[string]string{"tsig_key": "detour-key", "tsig_secret_file": secret + ".missing"}, "reading tsig_secret_file"},
		{"secret file not base64", map[string]string{"tsig_key": "detour-key", "tsig_secret_file": bad}, "not valid base64"},
		{"bad timeout", map[string]string{"tsig_key": "detour-key", "tsig_secret": "c2VjcmV0", "propagation_timeout": "soon"}, `propagation_timeout "soon"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps := &pathSet{log: slog.New(slog.DiscardHandler), kinds: map[string]config.Path{}, resolver: "127.0.0.1:53"}
			p := config.Path{Name: "bind", Kind: config.KindRFC2136, Challenge: config.ChallengeDNS01, Settings: tc.settings}
			sp, _, err := ps.build(p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "path bind") {
					t.Fatalf("build = %v; want an error naming the path and containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := sp.Solver.(*rfc2136.Solver); !ok || sp.Solver.Type() != solve.DNS01 {
				t.Errorf("solver = %T (%s), want a dns-01 *rfc2136.Solver", sp.Solver, sp.Solver.Type())
			}
		})
	}
}
