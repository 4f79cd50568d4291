package cli

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/dnsprovider"
)

func TestDNSProviderPathWiring(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "hetzner.credentials")
	if err := os.WriteFile(creds, []byte("api_token = x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		settings map[string]string
		wantErr  string
	}{
		{"built", map[string]string{"provider": "hetzner", "credentials_file": creds, "propagation_timeout": "3m"}, ""},
		{"unknown provider", map[string]string{"provider": "bind", "credentials_file": creds}, `unknown DNS provider "bind"`},
		{"missing file", map[string]string{"provider": "hetzner", "credentials_file": creds + ".missing"}, "no such file"},
		{"bad timeout", map[string]string{"provider": "hetzner", "credentials_file": creds, "propagation_timeout": "soon"}, `propagation_timeout "soon"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps := &pathSet{log: slog.New(slog.DiscardHandler), kinds: map[string]config.Path{}}
			p := config.Path{Name: "dns", Kind: config.KindDNSProvider, Challenge: config.ChallengeDNS01, Settings: tc.settings}
			sp, _, err := ps.build(p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "path dns") {
					t.Fatalf("build = %v; want an error naming the path and containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := sp.Solver.(*dnsprovider.Solver); !ok || sp.Solver.Type() != solve.DNS01 {
				t.Errorf("solver = %T (%s), want a dns-01 *dnsprovider.Solver", sp.Solver, sp.Solver.Type())
			}
		})
	}
}
