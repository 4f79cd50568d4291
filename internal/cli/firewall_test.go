package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
