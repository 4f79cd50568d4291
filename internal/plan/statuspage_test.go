package plan

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/agent"
	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/firewall"
	"github.com/detour-acme/detour/internal/statuspage"
	"github.com/detour-acme/detour/internal/store"
)

// statusPlanner is a planner on a fresh state directory with the
// configuration doc.
func statusPlanner(t *testing.T, doc string) *Planner {
	t.Helper()
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "detour.toml"), []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.NewFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &Planner{cfg: cfg, log: slog.New(slog.DiscardHandler), Store: st, shared: st}
}

// TestStatusPageSecrets: the secrets of the configuration are the EAB
// key, a path's secret settings and what its credential files hold.
func TestStatusPageSecrets(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "acme-dns.json")
	if err := os.WriteFile(creds, []byte(`{"a.example": {"username": "user-1234abcd", "password": "acme-dns-password-value", "fulldomain": "x.auth.example", "subdomain": "x", "allowfrom": []}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tsigFile := filepath.Join(dir, "tsig.secret")
	if err := os.WriteFile(tsigFile, []byte("dHNpZy1maWxlLXNlY3JldA==\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := statusPlanner(t, fmt.Sprintf(`
[ca.corp]
directory = "https://acme.corp.example/directory"
eab_kid = "kid-1"
eab_hmac_key = "c2VjcmV0LWhtYWMta2V5LWZyb20tdGhlLWNh"

[path.bind]
kind = "rfc2136"
server = "192.0.2.53:53"
tsig_key = "detour-key"
tsig_secret = "dHNpZy1zZWNyZXQtdmFsdWU="

[path.bind2]
kind = "rfc2136"
server = "192.0.2.53:53"
tsig_key = "detour-key"
tsig_secret_file = %q

[path.delegated]
kind = "acme-dns"
server = "https://auth.example.net"
credentials_file = %q
`, tsigFile, creds))
	got := p.secrets()
	for _, want := range []string{"c2VjcmV0LWhtYWMta2V5LWZyb20tdGhlLWNh", "dHNpZy1zZWNyZXQtdmFsdWU=", "dHNpZy1maWxlLXNlY3JldA==",
		"acme-dns-password-value", "user-1234abcd"} {
		if !slices.Contains(got, want) {
			t.Errorf("secrets lack %q", want)
		}
	}
	for _, not := range []string{"x.auth.example", "detour-key", "kid-1"} {
		if slices.Contains(got, not) {
			t.Errorf("secrets hold %q, which is no secret", not)
		}
	}
	// And the page takes them out of what it shows.
	d := statuspage.Detail{History: []statuspage.Attempt{{Error: "update refused for key dHNpZy1zZWNyZXQtdmFsdWU= (acme-dns-password-value)"}}}
	statuspage.Redact(&d, got)
	if e := d.History[0].Error; strings.Contains(e, "dHNpZy1zZWNyZXQ") || strings.Contains(e, "acme-dns-password-value") {
		t.Errorf("redacted error: %q", e)
	}
}

// TestOpenWindows: a window past its deadline on a firewall that closes
// it by itself is gone; on one that does not, it is overdue.
func TestOpenWindows(t *testing.T) {
	p := statusPlanner(t, "")
	now := time.Now()
	leases := []firewall.Lease{
		{ID: "1", Backend: "nftables", Port: 80, Family: "ipv4", PID: os.Getpid(), Opened: now.Add(-time.Minute), Until: now.Add(time.Minute)},
		{ID: "2", Backend: "nftables", Port: 443, Family: "ipv6", PID: 1 << 30, Opened: now.Add(-time.Hour), Until: now.Add(-50 * time.Minute)},
		{ID: "3", Backend: "ufw", Port: 80, Family: "ipv4", PID: 1 << 30, Opened: now.Add(-time.Hour), Until: now.Add(-50 * time.Minute)},
		{ID: "4", Backend: "hetzner", Port: 80, Family: "ipv6", PID: os.Getpid(), Opened: now.Add(-time.Hour), Until: now.Add(-time.Minute)},
	}
	for _, l := range leases {
		data, _ := json.Marshal(l)
		if err := p.Store.Store(t.Context(), "firewall/leases/"+l.ID+".json", data); err != nil {
			t.Fatal(err)
		}
	}
	ws, err := p.OpenWindows(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range ws {
		got = append(got, fmt.Sprintf("%s/%d/%s overdue=%v", w.Backend, w.Port, w.Family, w.Overdue))
	}
	want := []string{"ufw/80/ipv4 overdue=true", "hetzner/80/ipv6 overdue=true", "nftables/80/ipv4 overdue=false"}
	if !slices.Equal(got, want) {
		t.Errorf("open windows = %q, want %q", got, want)
	}
	mw, err := p.MetricsWindows(context.Background())
	if err != nil || len(mw) != 3 {
		t.Errorf("metrics windows = %v, %v", mw, err)
	}
}

// TestDeployTargets: each output, reload and hook of a certificate, with
// the result of the last renewal that deployed: the targets its deploy
// error names failed, the others succeeded.
func TestDeployTargets(t *testing.T) {
	p := statusPlanner(t, `
[[certificate]]
name = "shop"
domains = ["shop.example.com"]
deploy_hook = "systemctl reload myapp"
reload = ["nginx", "haproxy"]

[[certificate.output]]
path = "/etc/haproxy/certs/shop.pem"
format = "combined"

[[certificate.output]]
path = "/etc/app/shop.crt"
format = "fullchain"
`)
	if got := p.deployTargets("shop", nil); len(got) != 5 || got[0].Result != statuspage.DeployUnknown {
		t.Errorf("without history: %+v", got)
	}
	at := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	attempts := []agent.Attempt{
		{Time: at.Add(time.Hour), OK: false, Error: "validation failed"},
		{Time: at, OK: true, DeployError: "deploying shop: output /etc/haproxy/certs/shop.pem: creating the file: permission denied\n" +
			"reloading haproxy with `systemctl reload haproxy` failed (exit status 1): Job failed"},
	}
	got := p.deployTargets("shop", attempts)
	want := map[string]string{"/etc/haproxy/certs/shop.pem (combined)": "failed", "/etc/app/shop.crt (fullchain)": "ok",
		"nginx": "ok", "haproxy": "failed", "systemctl reload myapp": "ok"}
	if len(got) != len(want) {
		t.Fatalf("targets = %+v", got)
	}
	for _, tg := range got {
		if want[tg.Target] != tg.Result || !tg.At.Equal(at) {
			t.Errorf("%s %s: %s at %v, want %s at %v", tg.Kind, tg.Target, tg.Result, tg.At, want[tg.Target], at)
		}
		if tg.Result == "failed" && tg.Error == "" {
			t.Errorf("%s failed without its error", tg.Target)
		}
	}
}

func TestStageOf(t *testing.T) {
	for e, want := range map[string]string{
		`certificate "a.example": validation: the CA could not validate`: "validation",
		`certificate "a.example": self-check: no path`:                   "self-check",
		`reading the certificate's record: unexpected end`:               "",
		`certificate "a.example": something: else`:                       "",
	} {
		if got := stageOf(e); got != want {
			t.Errorf("stageOf(%q) = %q, want %q", e, got, want)
		}
	}
}
