package cli

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/firewall"
	"github.com/detour-acme/detour/internal/store"
)

// TestFirewallPathWiring: a path with firewall settings is built as a
// firewall window around its solver, and its settings survive the
// certificate's record, so a renewal without the config file opens the
// same window.
func TestFirewallPathWiring(t *testing.T) {
	st, err := store.NewFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ps := &pathSet{log: slog.New(slog.DiscardHandler), store: st, kinds: map[string]config.Path{}}
	defer ps.Close()
	p := config.Path{Name: "fw", Kind: config.KindStandalone, Challenge: "http-01", Listen: "127.0.0.1:0", Settings: map[string]string{
		config.SettingFirewall: "exec", config.SettingFirewallTimeout: "2m", config.SettingFirewallPort: "80",
		config.SettingFirewallOpen: "/o", config.SettingFirewallClose: "/c",
	}}
	sp, ref, err := ps.build(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sp.Solver.(*firewall.Solver); !ok {
		t.Errorf("solver is %T, want a firewall window", sp.Solver)
	}
	want, err := config.FirewallOf(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := config.FirewallOf(pathFromRef(ref))
	if err != nil || got != want {
		t.Errorf("from the record: %+v, %v; want %+v", got, err, want)
	}
}

// TestFirewallCommandUsage: the commands say what to do when they do not
// know which firewall to look at.
func TestFirewallCommandUsage(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "detour.toml")
	if err := os.WriteFile(cfg, []byte("state_dir = \""+dir+"/state\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"firewall", "status"}, 2, "no path of the config file uses a firewall window"},
		{[]string{"firewall", "close", "--firewall", "pf"}, 2, `unknown firewall "pf"`},
		{[]string{"firewall", "status", "--firewall", "exec"}, 2, "commands come from a path"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			code := Run(context.Background(), append([]string{"--config", cfg}, tc.args...), &out, &out)
			if code != tc.code || !strings.Contains(out.String(), tc.want) {
				t.Errorf("exit %d, output:\n%s\nwant exit %d and %q", code, out.String(), tc.code, tc.want)
			}
		})
	}
}
