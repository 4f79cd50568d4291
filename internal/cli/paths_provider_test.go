package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/plan"
)

// TestPathsDNSProvider: `detour paths dns-provider` lists the providers
// with their keys, `detour paths dns-provider NAME` shows one (by an alias
// too), and a misspelt name gets "did you mean".
func TestPathsDNSProvider(t *testing.T) {
	r := mustRun(t, "paths", "dns-provider")
	wantIn(t, "detour paths dns-provider", r.stdout, "credentials_file", "Providers (", "cloudflare", "api_token*", "[path.")
	if strings.Contains(r.stdout, `"1and1", `) || strings.Contains(r.stdout, "(1and1, ") {
		t.Errorf("the provider setting's doc lists every provider name inline:\n%s", r.stdout)
	}
	// The slim build (-tags detour_slim) has Detour's own 6 providers.
	if slim := len(plan.DNSProviders()) <= 6; !slim {
		wantIn(t, "detour paths dns-provider", r.stdout, "linode (linodev4)", "LINODE_TOKEN*", "porkbun", "PORKBUN_SECRET_API_KEY*")
		var n int
		for _, line := range strings.Split(r.stdout[strings.Index(r.stdout, "PROVIDER "):], "\n")[1:] {
			if strings.TrimSpace(line) == "" {
				break
			}
			n++
		}
		if n < 200 {
			t.Errorf("detour paths dns-provider lists %d providers, want at least 200", n)
		}

		r = mustRun(t, "paths", "dns-provider", "linode")
		wantIn(t, "detour paths dns-provider linode", r.stdout, "Linode", "LINODE_TOKEN", "(required)", "[secret]", "LINODE_TTL", "300", "LINODE_TOKEN = ...")
		r = mustRun(t, "paths", "dns-provider", "powerdns", "--json")
		var doc struct {
			Name string `json:"name"`
			Keys []struct {
				Key      string `json:"key"`
				Required bool   `json:"required"`
			} `json:"keys"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || doc.Name != "pdns" || len(doc.Keys) == 0 || !doc.Keys[0].Required {
			t.Errorf("detour paths dns-provider powerdns --json = %v, %s", err, r.stdout)
		}
		r = run(t, "paths", "dns-provider", "linod")
		wantIn(t, "detour paths dns-provider linod", r.stderr, `did you mean "linode"?`, "detour paths dns-provider")
	}
	r = mustRun(t, "paths", "dns-provider", "hetzner")
	wantIn(t, "detour paths dns-provider hetzner", r.stdout, "api_token", "(required)", "Detour's own factory")
	if r = run(t, "paths", "dns-provider", "cloudfare"); r.code == 0 || !strings.Contains(r.stderr, `did you mean "cloudflare"?`) {
		t.Errorf("detour paths dns-provider cloudfare: %v", r)
	}
	if r = run(t, "paths", "rfc2136", "x"); r.code == 0 || !strings.Contains(r.stderr, "only dns-provider takes a second argument") {
		t.Errorf("detour paths rfc2136 x: %v", r)
	}
}
