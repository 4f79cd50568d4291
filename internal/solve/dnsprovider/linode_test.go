//go:build !detour_slim

package dnsprovider

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/testenv"
)

// TestLinodeFactory: the token and TTL come from the file only, a TTL
// under Linode's minimum is refused with the fix, and lego's variables
// in the environment change nothing.
func TestLinodeFactory(t *testing.T) {
	t.Setenv("LINODE_TOKEN", "from-env")
	t.Setenv("LINODE_TTL", "9999")
	t.Setenv("LINODE_URL", "http://from-env.invalid")
	p, err := build("linode", linodeFactory, NewCredentials("creds", map[string]string{"linode_token": "file-token"}), 0, &noNetwork{})
	if err != nil {
		t.Fatal(err)
	}
	lp := p.(*linodeProvider)
	if lp.token != "file-token" || lp.ttl != 300 || lp.base != linodeAPI {
		t.Errorf("provider = token %q, ttl %d, base %q; want file-token, 300, %s", lp.token, lp.ttl, lp.base, linodeAPI)
	}
	_, err = build("linode", linodeFactory, NewCredentials("creds", map[string]string{"LINODE_TOKEN": "t", "LINODE_TTL": "60"}), 0, &noNetwork{})
	if err == nil || !strings.Contains(err.Error(), "LINODE_TTL is 60") || !strings.Contains(err.Error(), "300") {
		t.Errorf("TTL 60: %v; want a refusal naming LINODE_TTL and 300", err)
	}
}

// TestLinodeErrors: Linode's error answers become messages with the fix.
func TestLinodeErrors(t *testing.T) {
	fake := newFakeLinode("detour.test.", "good")
	for _, tc := range []struct {
		token, fail, want string
	}{
		{"bad", "", "401 Unauthorized: Invalid Token (LINODE_TOKEN is not accepted"},
		{"good", "Your OAuth token is not authorized to use this endpoint.", "403 Forbidden: Your OAuth token is not authorized to use this endpoint. (the token may not change DNS: give it the Domains Read/Write scope)"},
	} {
		fake.z.failWith(tc.fail)
		p := &linodeProvider{token: tc.token, ttl: 300, base: "https://api.linode.com/v4", client: &http.Client{Transport: startFake(t, fake)}}
		err := p.do(context.Background(), http.MethodPost, "/domains/1234/records", nil, linodeRecord{Type: "TXT", Name: "x", Target: "v"}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("token %s: %v; want %q", tc.token, err, tc.want)
		}
	}
	nf := &linodeProvider{token: "good", base: "https://api.linode.com/v4", client: &http.Client{Transport: startFake(t, fake)}}
	type domain struct {
		ID int `json:"id"`
	}
	ds, err := linodeList[domain](context.Background(), nf, "/domains", `{"domain":"nowhere.test"}`)
	if err != nil || len(ds) != 0 {
		t.Errorf("filtered list = %v, %v; want none", ds, err)
	}
}

// TestIssueDNSAccount01ThroughLinodeFake obtains a name and its wildcard
// from in-process Pebble through dns-account-01 over the Linode fake: the
// records go to the account's _<label>._acme-challenge name (which only a
// provider whose client Detour writes can do), and are gone afterwards.
func TestIssueDNSAccount01ThroughLinodeFake(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	zdns := useDNS(t, env.DNS, env.DNSAddr, sandbox.Zone)
	fake := newFakeLinode(sandbox.Zone, "linode-token")
	fake.z.sink = zdns
	m := env.Manager(t)
	ca := env.RenewCA(t)
	acct, err := m.Account(t.Context(), ca)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Logger: env.Log, Provider: "linode", CredentialsFile: writeCreds(t, "LINODE_TOKEN = linode-token\n", 0o600),
		Transport: startFake(t, fake), DNS: zdns.client, PropagationTimeout: 10 * time.Second,
		Challenge: solve.DNSAccount01, AccountURL: func(context.Context) (string, error) { return acct.Location, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if s.Type() != solve.DNSAccount01 {
		t.Fatalf("Type() = %s", s.Type())
	}
	names := []string{"acct.detour.test", "*.acct.detour.test"}
	ids, err := ident.ParseAll(names)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Obtain(testCtx(t), renew.Request{Name: "acct", Identifiers: ids, CA: ca, Profile: env.CA.DefaultProfile(),
		Paths: []solve.Path{{Name: "linode", Solver: s}}}); err != nil {
		t.Fatalf("Obtain: %v (API calls %q)", err, fake.z.calls)
	}
	owner := "_" + solve.AccountLabel(acct.Location) + "._acme-challenge.acct"
	if got := fake.shape.matching("POST /v4/domains/1234/records type=TXT name=" + owner + " "); len(got) != 2 {
		t.Errorf("records created at %s: %q, want 2 (the name and its wildcard); all calls %q", owner, got, fake.shape.all())
	}
	if got := fake.z.TXT(owner + ".detour.test."); len(got) != 0 {
		t.Errorf("Linode still holds %q at %s", got, owner)
	}
	// Through lego's clients the same path is refused, naming the fix.
	_, err = New(Options{Provider: "vultr", CredentialsFile: writeCreds(t, "VULTR_API_KEY = k\n", 0o600), Challenge: solve.DNSAccount01})
	if err == nil || !strings.Contains(err.Error(), "can only write _acme-challenge.<name>") || !strings.Contains(err.Error(), "(linode)") {
		t.Errorf("vultr with dns-account-01: %v", err)
	}
}
