//go:build !detour_slim

package dnsprovider

import (
	"context"
	"net/http"
	"strings"
	"testing"
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
