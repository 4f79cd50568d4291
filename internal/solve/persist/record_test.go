package persist

import (
	"strings"
	"testing"
	"time"
)

// The drafts' own examples. Draft-01 text: draft-ietf-acme-dns-persist-01
// (24 March 2026) §4.1 Figure 2 and §10.1-10.4, as built in
// github.com/ietf-wg-acme/draft-ietf-acme-dns-persist (ietf-125-preso, the
// text of -01). Draft-02 text: draft-ietf-acme-dns-persist-02 (20 September
// 2026) §10.2 (the hashed-URI test vector) and §10.1, §10.4-10.6, same
// repository, draft-ietf-acme-dns-persist-02/draft-ietf-acme-dns-persist.txt.
// In the zone-file figures the value is split over character-strings; the
// values below are those strings joined.
const (
	exIssuer     = "authority.example"
	exAccount    = "https://ca.example/acct/123"
	exThumbprint = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" // RFC 7638 §3.1, per draft-02 §10.2
	exPrefix     = "https://ca.example/account-hash/"
	exUntil      = 1721952000 // 2024-07-26T00:00:00Z, §10.3 (-01) / §10.5 (-02)
)

func TestRecordDraftExamples(t *testing.T) {
	until := time.Unix(exUntil, 0)
	d01 := Params{Identifier: "example.com", IssuerDomainName: exIssuer, AccountURI: exAccount, Draft: Draft01}
	d02 := Params{Identifier: "example.com", IssuerDomainName: exIssuer, AccountURI: exAccount, Draft: Draft02,
		HashPrefix: exPrefix, Thumbprint: exThumbprint}
	with := func(p Params, f func(*Params)) Params { f(&p); return p }
	tests := []struct {
		name   string
		source string
		p      Params
		value  string
	}{
		{"draft-01 basic", `-01 §4.1 Figure 2 / §10.1: _validation-persist.example.com. IN TXT ("authority.example;" " accounturi=https://ca.example/acct/123")`,
			d01, "authority.example; accounturi=https://ca.example/acct/123"},
		{"draft-01 wildcard", `-01 §10.2 Figure 4: ("authority.example;" " accounturi=https://ca.example/acct/123;" " policy=wildcard")`,
			with(d01, func(p *Params) { p.Identifier, p.Wildcard = "*.example.com", true }),
			"authority.example; accounturi=https://ca.example/acct/123; policy=wildcard"},
		{"draft-01 persistUntil", `-01 §10.3 Figure 5: ("authority.example;" " accounturi=https://ca.example/acct/123;" " persistUntil=1721952000")`,
			with(d01, func(p *Params) { p.PersistUntil = until }),
			"authority.example; accounturi=https://ca.example/acct/123; persistUntil=1721952000"},
		{"draft-01 wildcard persistUntil", `-01 §10.4 Figure 6: (... " policy=wildcard;" " persistUntil=1721952000")`,
			with(d01, func(p *Params) { p.Identifier, p.Wildcard, p.PersistUntil = "*.example.com", true, until }),
			"authority.example; accounturi=https://ca.example/acct/123; policy=wildcard; persistUntil=1721952000"},
		{"draft-02 hashed URI", `-02 §10.2 Figure 5: ("authority.example;" " accounturi=https://ca.example/account-hash/" "sha-256/5SQm7n6tPh2-PlLbCKGnViTXX5z19SCN4cPGQHSk-kw")`,
			d02, "authority.example; accounturi=https://ca.example/account-hash/sha-256/5SQm7n6tPh2-PlLbCKGnViTXX5z19SCN4cPGQHSk-kw"},
		{"draft-02 domain-omitted", `-02 §10.2: SHA-256(0x01 || "*" || key || account_URL) yields NpDnSwUthQK8zCgFdefYxAdAVPnygMLbs9US6oO-5ug`,
			with(d02, func(p *Params) { p.AnyDomain = true }),
			"authority.example; accounturi=https://ca.example/account-hash/sha-256/NpDnSwUthQK8zCgFdefYxAdAVPnygMLbs9US6oO-5ug"},
		{"draft-02 wildcard", `-02 §10.4 Figure 8: (... "sha-256/5SQm7n6tPh2-PlLbCKGnViTXX5z19SCN4cPGQHSk-kw;" " policy=wildcard")`,
			with(d02, func(p *Params) { p.Identifier, p.Wildcard = "*.example.com", true }),
			"authority.example; accounturi=https://ca.example/account-hash/sha-256/5SQm7n6tPh2-PlLbCKGnViTXX5z19SCN4cPGQHSk-kw; policy=wildcard"},
		{"draft-02 persistUntil", `-02 §10.5 Figure 9: (... " persistUntil=1721952000")`,
			with(d02, func(p *Params) { p.PersistUntil = until }),
			"authority.example; accounturi=https://ca.example/account-hash/sha-256/5SQm7n6tPh2-PlLbCKGnViTXX5z19SCN4cPGQHSk-kw; persistUntil=1721952000"},
		{"draft-02 wildcard persistUntil", `-02 §10.6 Figure 10: (... " policy=wildcard;" " persistUntil=1721952000")`,
			with(d02, func(p *Params) { p.Identifier, p.Wildcard, p.PersistUntil = "*.example.com", true, until }),
			"authority.example; accounturi=https://ca.example/account-hash/sha-256/5SQm7n6tPh2-PlLbCKGnViTXX5z19SCN4cPGQHSk-kw; policy=wildcard; persistUntil=1721952000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, value := Record(tt.p)
			if name != "_validation-persist.example.com." {
				t.Errorf("name = %q, want _validation-persist.example.com. (%s)", name, tt.source)
			}
			if value != tt.value {
				t.Errorf("value =\n  %q\nwant (%s)\n  %q", value, tt.source, tt.value)
			}
			iv, err := ParseIssueValue(value)
			if err != nil {
				t.Fatalf("our own value does not parse: %v", err)
			}
			if iv.IssuerDomainName != exIssuer || (iv.Policy == PolicyWildcard) != tt.p.Wildcard || !iv.PersistUntil.Equal(tt.p.PersistUntil) {
				t.Errorf("ParseIssueValue(%q) = %+v", value, iv)
			}
		})
	}
}

func TestHashedAccountURIBindsEveryInput(t *testing.T) {
	// Change any one input of the -02 §10.2 vector and it no longer comes
	// out: the digest binds domain, key and account URL (§7.2.3).
	want := "https://ca.example/account-hash/sha-256/5SQm7n6tPh2-PlLbCKGnViTXX5z19SCN4cPGQHSk-kw"
	if got := HashedAccountURI(exPrefix, "example.com", exThumbprint, exAccount); got != want {
		t.Fatalf("HashedAccountURI = %q, want %q", got, want)
	}
	for _, in := range [][3]string{
		{"example.org", exThumbprint, exAccount},
		{"example.com", strings.Replace(exThumbprint, "N", "M", 1), exAccount},
		{"example.com", exThumbprint, exAccount + "4"},
	} {
		if got := HashedAccountURI(exPrefix, in[0], in[1], in[2]); got == want {
			t.Errorf("HashedAccountURI(%q) ignores an input", in)
		}
	}
}

func TestZoneLine(t *testing.T) {
	long := strings.Repeat("a", 300)
	tests := []struct {
		name, value, want string
	}{
		{"short", "authority.example; accounturi=https://ca.example/acct/123",
			`_validation-persist.example.com. IN TXT "authority.example; accounturi=https://ca.example/acct/123"`},
		{"quotes escaped", `x"y\z`, `_validation-persist.example.com. IN TXT "x\"y\\z"`},
		{"split at 255 octets (RFC 1035 §3.3.14, draft §9.1)", long,
			`_validation-persist.example.com. IN TXT ( "` + long[:255] + `" "` + long[255:] + `" )`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ZoneLine("_validation-persist.example.com.", tt.value); got != tt.want {
				t.Errorf("ZoneLine = %s\nwant        %s", got, tt.want)
			}
		})
	}
}

func TestParseIssueValue(t *testing.T) {
	tests := []struct {
		in      string
		want    IssueValue
		wantErr string
	}{
		{"authority.example; accounturi=https://ca.example/acct/123", IssueValue{IssuerDomainName: exIssuer, AccountURI: exAccount}, ""},
		{"\tAuthority.Example ;AccountURI = https://ca.example/acct/123 ; Policy=WILDCARD;persistuntil=1721952000;future=x",
			IssueValue{IssuerDomainName: exIssuer, AccountURI: exAccount, Policy: PolicyWildcard, PersistUntil: time.Unix(exUntil, 0).UTC()}, ""},
		{"authority.example; accounturi=u; policy=subdomains", IssueValue{IssuerDomainName: exIssuer, AccountURI: "u"}, ""},
		{"authority.example", IssueValue{}, "no accounturi"},
		{"; accounturi=u", IssueValue{}, "no issuer domain name"},
		{"authority.example; policy=wildcard", IssueValue{}, "no accounturi"},
		{"authority.example; accounturi=u;", IssueValue{}, "empty parameter"},
		{"authority.example; accounturi=u; accounturi=v", IssueValue{}, "appears twice"},
		{"authority.example; accounturi", IssueValue{}, "not tag=value"},
		{"authority.example; accounturi=u; persistUntil=tomorrow", IssueValue{}, "not a base-10 UNIX time"},
		{"authority.example; accounturi=a b", IssueValue{}, "space or non-ASCII"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseIssueValue(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAuthorizes(t *testing.T) {
	now := time.Unix(exUntil, 0).Add(-time.Hour)
	d01 := Params{Identifier: "example.com", IssuerDomainName: exIssuer, AccountURI: exAccount, Draft: Draft01}
	d02 := Params{Identifier: "example.com", IssuerDomainName: exIssuer, AccountURI: exAccount, Draft: Draft02, HashPrefix: exPrefix, Thumbprint: exThumbprint}
	wild := d01
	wild.Wildcard = true
	hashed := "authority.example; accounturi=https://ca.example/account-hash/sha-256/5SQm7n6tPh2-PlLbCKGnViTXX5z19SCN4cPGQHSk-kw"
	tests := []struct {
		name  string
		value string
		p     Params
		ok    bool
		why   string
	}{
		{"exact", "authority.example; accounturi=https://ca.example/acct/123", d01, true, ""},
		{"extra policy is fine without a wildcard", "authority.example; accounturi=https://ca.example/acct/123; policy=wildcard", d01, true, ""},
		{"other CA", "ca2.example; accounturi=https://ca.example/acct/123", d01, false, "another CA"},
		{"other account", "authority.example; accounturi=https://ca.example/acct/124", d01, false, "another account"},
		{"account URL compared exactly (RFC 3986 §6.2.1)", "authority.example; accounturi=https://CA.example/acct/123", d01, false, "another account"},
		{"wildcard needs the policy", "authority.example; accounturi=https://ca.example/acct/123", wild, false, "policy=wildcard"},
		{"wildcard with policy", "authority.example; accounturi=https://ca.example/acct/123; policy=Wildcard", wild, true, ""},
		{"persistUntil in the future", "authority.example; accounturi=https://ca.example/acct/123; persistUntil=1721952000", d01, true, ""},
		{"persistUntil passed", "authority.example; accounturi=https://ca.example/acct/123; persistUntil=1721948400", d01, false, "expired"},
		{"draft-02 hashed", hashed, d02, true, ""},
		{"draft-02 domain-omitted form", "authority.example; accounturi=https://ca.example/account-hash/sha-256/NpDnSwUthQK8zCgFdefYxAdAVPnygMLbs9US6oO-5ug", d02, true, ""},
		{"draft-02 CA, draft-01 record", "authority.example; accounturi=https://ca.example/acct/123", d02, false, "another account"},
		{"draft-01 CA, draft-02 record", hashed, d01, false, "another account"},
		{"malformed", "authority.example", d01, false, "no accounturi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, why := Authorizes(tt.value, tt.p, now)
			if ok != tt.ok || !strings.Contains(why, tt.why) {
				t.Errorf("Authorizes = %v, %q; want %v, %q", ok, why, tt.ok, tt.why)
			}
		})
	}
}

func TestMetaDraftAndIssuer(t *testing.T) {
	tests := []struct {
		name    string
		meta    Meta
		draft   Draft
		issuer  string
		wantErr bool
	}{
		{"pebble (draft-01)", Meta{CAAIdentities: []string{"pebble.letsencrypt.org"}}, Draft01, "pebble.letsencrypt.org", false},
		{"normalised", Meta{CAAIdentities: []string{"LetsEncrypt.org."}}, Draft01, "letsencrypt.org", false},
		{"draft-02 §10.3 Figure 6", Meta{AccountHashPrefix: exPrefix, IssuerDomainNames: []string{"authority.example", "ca.example.net"}, CAAIdentities: []string{"other.example"}},
			Draft02, "authority.example", false},
		{"draft-02 without issuerDomainNames cannot pre-provision (-02 §3.2)", Meta{AccountHashPrefix: exPrefix, CAAIdentities: []string{"authority.example"}}, Draft02, "", true},
		{"nothing to name the CA", Meta{}, Draft01, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := tt.meta.Draft(); d != tt.draft {
				t.Errorf("Draft = %v, want %v", d, tt.draft)
			}
			got, err := tt.meta.Issuer()
			if (err != nil) != tt.wantErr || got != tt.issuer {
				t.Errorf("Issuer = %q, %v; want %q (error %v)", got, err, tt.issuer, tt.wantErr)
			}
		})
	}
}
