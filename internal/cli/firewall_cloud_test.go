package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall/cloud"
	"github.com/detour-acme/detour/internal/firewall/cloud/digitalocean/dofake"
	"github.com/detour-acme/detour/internal/store"
)

// The agent, when it starts, removes the cloud firewall rule a killed run
// left open past its timeout (the rule and its journal entry are laid
// down as that run left them), and leaves a rule whose window has time
// left, and the user's rules, alone. The API is a local fake of
// DigitalOcean's.
func TestRunSweepsStaleCloudRule(t *testing.T) {
	t.Parallel()
	bin := buildDetour(t)
	api := dofake.New()
	t.Cleanup(api.Close)
	api.AddFirewall("fw-1", "web", []int{7}, nil)
	api.AddInboundRule("fw-1", "tcp", "22", "10.0.0.0/8")
	api.AddInboundRule("fw-1", "tcp", "80", "0.0.0.0/0") // a killed run's, past its timeout
	api.AddInboundRule("fw-1", "tcp", "443", "::/0")     // another run's, still open
	state := t.TempDir()
	st, err := store.NewFS(state, store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, e := range []struct {
		port  int
		ipv6  bool
		until time.Time
	}{{80, false, now.Add(-time.Minute)}, {443, true, now.Add(time.Hour)}} {
		doc, _ := json.Marshal(map[string]any{"provider": "digitalocean", "target": "fw-1", "port": e.port, "ipv6": e.ipv6,
			"rule": cloud.Rule{FromPort: e.port, ToPort: e.port, IPv6: e.ipv6}, "state": "open",
			"opened": e.until.Add(-10 * time.Minute), "until": e.until})
		fam := map[bool]string{false: "4", true: "6"}[e.ipv6]
		if err := st.Store(context.Background(), fmt.Sprintf("firewall/cloud/digitalocean/fw-1/%d-%s.json", e.port, fam), doc); err != nil {
			t.Fatal(err)
		}
	}
	token := filepath.Join(t.TempDir(), "do-token")
	if err := os.WriteFile(token, []byte(api.Token()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "detour.toml")
	doc := fmt.Sprintf(`state_dir = %q

[path.web]
kind = "standalone"
listen = "127.0.0.1:18480"
firewall = "digitalocean"
firewall_id = "fw-1"
firewall_credentials = %q
firewall_endpoint = %q
`, state, token, api.URL)
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startAgent(t, bin, "--config", cfg, "run")
	p.waitLog(t, "removing a cloud firewall rule left open past its timeout", 30*time.Second)
	want := []string{"tcp/22 [10.0.0.0/8]", "tcp/443 [::/0]"}
	var got []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		got = got[:0]
		for _, r := range api.InboundRules("fw-1") {
			got = append(got, fmt.Sprintf("%s/%s %v", r.Protocol, r.Ports, r.Addresses))
		}
		if slices.Equal(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling the fake: the agent is another process
	}
	if !slices.Equal(got, want) {
		t.Errorf("rules after the agent started: %q, want %q\n%s", got, want, p.stderr)
	}
	p.waitLog(t, "agent started", 30*time.Second)
	stopProcess(t, p)
}
