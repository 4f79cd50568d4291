package acmedns

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-acme/lego/v5/challenge/dns01"
	legoacmedns "github.com/go-acme/lego/v5/providers/dns/acmedns"
)

// TestLegoProvider drives Detour's API with lego's acme-dns provider, a real
// client that lego, Traefik and Caddy users run: registration on first use
// (with the CNAME it asks for), then TXT updates through its own HTTP
// client, which Detour's responder must serve.
func TestLegoProvider(t *testing.T) {
	e := start(t, envOptions{})
	// lego computes an effective FQDN by following CNAMEs through its
	// process-wide DNS client; point it at our responder instead of the
	// host's resolver, and put it back afterwards.
	prev := dns01.DefaultClient()
	dns01.SetDefaultClient(dns01.NewClient(&dns01.Options{RecursiveNameservers: []string{e.dnsAddr}, Timeout: 2 * time.Second}))
	t.Cleanup(func() { dns01.SetDefaultClient(prev) })

	credFile := filepath.Join(t.TempDir(), "acme-dns.json")
	p, err := legoacmedns.NewDNSProviderConfig(&legoacmedns.Config{APIBase: e.url, StoragePath: credFile, AllowList: []string{"127.0.0.0/8"}})
	if err != nil {
		t.Fatal(err)
	}
	const domain = "example.test"
	keyAuths := []string{"token1.thumbprint", "token2.thumbprint"} // the base name and its wildcard

	// First use: lego registers, stores the account and stops with the
	// record the user must create.
	err = p.Present(t.Context(), domain, "token1", keyAuths[0])
	var need legoacmedns.ErrCNAMERequired
	if !errors.As(err, &need) {
		t.Fatalf("first Present: %v, want lego's ErrCNAMERequired", err)
	}
	var stored map[string]struct {
		Fulldomain string   `json:"fulldomain"`
		Subdomain  string   `json:"subdomain"`
		Username   string   `json:"username"`
		AllowFrom  []string `json:"allowfrom"`
	}
	raw, err := os.ReadFile(credFile)
	if err != nil {
		t.Fatalf("lego did not save the account: %v", err)
	}
	if err := json.Unmarshal(raw, &stored); err != nil {
		t.Fatal(err)
	}
	acct, ok := stored[domain]
	if !ok || need.Target != acct.Fulldomain || need.FQDN != "_acme-challenge."+domain+"." {
		t.Fatalf("lego asks for %s CNAME %s; stored account %+v", need.FQDN, need.Target, acct)
	}
	if !validUUID(acct.Subdomain) || acct.Fulldomain != acct.Subdomain+".auth.detour.test" {
		t.Errorf("lego parsed fulldomain %q, subdomain %q", acct.Fulldomain, acct.Subdomain)
	}

	// Later runs: lego updates; both values are served at once.
	var want []string
	for i, ka := range keyAuths {
		if err := p.Present(t.Context(), domain, "token", ka); err != nil {
			t.Fatalf("Present %d: %v", i, err)
		}
		sum := sha256.Sum256([]byte(ka))
		want = append(want, base64.RawURLEncoding.EncodeToString(sum[:]))
	}
	slices.Sort(want)
	if got := e.txt(acct.Fulldomain); !slices.Equal(got, want) {
		t.Errorf("DNS serves %q at %s after lego's updates, want %q", got, acct.Fulldomain, want)
	}
	if err := p.CleanUp(t.Context(), domain, "token", keyAuths[0]); err != nil {
		t.Errorf("lego CleanUp: %v", err)
	}
}
