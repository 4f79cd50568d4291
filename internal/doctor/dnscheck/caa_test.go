package dnscheck_test

import (
	"maps"
	"slices"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/doctor/dnscheck"
)

func TestParseCAAIssue(t *testing.T) {
	tests := []struct {
		value  string
		issuer string
		params map[string]string
		err    bool
	}{
		{value: "letsencrypt.org", issuer: "letsencrypt.org"},
		{value: "LetsEncrypt.ORG", issuer: "letsencrypt.org"},
		{value: ";", issuer: ""},
		{value: "", issuer: ""},
		{value: "letsencrypt.org;", issuer: "letsencrypt.org"},
		{value: " letsencrypt.org ; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/1 ; validationmethods=dns-01,http-01",
			issuer: "letsencrypt.org", params: map[string]string{"accounturi": "https://acme-v02.api.letsencrypt.org/acme/acct/1", "validationmethods": "dns-01,http-01"}},
		{value: "ca.example; AccountURI=x", issuer: "ca.example", params: map[string]string{"accounturi": "x"}},
		{value: "ca.example; accounturi=a; accounturi=b", err: true},
		{value: "ca.example; noequals", err: true},
		{value: "ca.example;; x=y", err: true},
		{value: "ca.example; x=has space", err: true},
		{value: "not a domain", err: true},
		{value: "-bad-.example", err: true},
	}
	for _, tc := range tests {
		c := dnscheck.ParseCAAIssue("issue", tc.value)
		if (c.Err != "") != tc.err {
			t.Errorf("ParseCAAIssue(%q) error %q, want error %v", tc.value, c.Err, tc.err)
			continue
		}
		if tc.err {
			continue
		}
		if tc.params == nil {
			tc.params = map[string]string{}
		}
		if c.Issuer != tc.issuer || !maps.Equal(c.Params, tc.params) {
			t.Errorf("ParseCAAIssue(%q) = %q %v, want %q %v", tc.value, c.Issuer, c.Params, tc.issuer, tc.params)
		}
	}
}

func caa(flag uint8, tag, value string) *mdns.CAA {
	return &mdns.CAA{Hdr: mdns.RR_Header{Name: "example.com.", Rrtype: mdns.TypeCAA, Class: mdns.ClassINET}, Flag: flag, Tag: tag, Value: value}
}

const le = "letsencrypt.org"

func TestEvaluateCAA(t *testing.T) {
	const a1, a2 = "https://ca/acct/1", "https://ca/acct/2"
	tests := []struct {
		name     string
		rrs      []*mdns.CAA
		wildcard bool
		issuers  []string
		allows   bool
		unknown  bool
		acct     string
		methods  []string
		critical int
		// method -> account -> AllowsMethod
		allowed map[string]map[string]bool
	}{
		{name: "no CAA", issuers: []string{le}, allows: true,
			allowed: map[string]map[string]bool{"http-01": {a1: true, "": true}}},
		{name: "names the CA", rrs: []*mdns.CAA{caa(0, "issue", le)}, issuers: []string{le}, allows: true},
		{name: "tag and issuer in other case", rrs: []*mdns.CAA{caa(0, "ISSUE", "LetsEncrypt.org")}, issuers: []string{"letsencrypt.org."}, allows: true},
		{name: "another CA", rrs: []*mdns.CAA{caa(0, "issue", "digicert.com")}, issuers: []string{le}, allows: false},
		{name: "one of two", rrs: []*mdns.CAA{caa(0, "issue", "digicert.com"), caa(0, "issue", le)}, issuers: []string{le}, allows: true},
		{name: "second issuer domain of the CA", rrs: []*mdns.CAA{caa(0, "issue", "ca2.example")}, issuers: []string{"ca1.example", "ca2.example"}, allows: true},
		{name: "no CA at all", rrs: []*mdns.CAA{caa(0, "issue", ";")}, issuers: []string{le}, allows: false},
		{name: "malformed value authorizes nobody", rrs: []*mdns.CAA{caa(0, "issue", "letsencrypt.org; bad")}, issuers: []string{le}, allows: false},
		{name: "only iodef: no restriction", rrs: []*mdns.CAA{caa(0, "iodef", "mailto:x@example.com")}, issuers: []string{le}, allows: true},
		{name: "iodef critical is known", rrs: []*mdns.CAA{caa(128, "iodef", "mailto:x@example.com")}, issuers: []string{le}, allows: true},
		{name: "unknown critical tag", rrs: []*mdns.CAA{caa(0, "issue", le), caa(128, "tbs", "x")}, issuers: []string{le}, allows: false, critical: 1},
		{name: "unknown tag not critical", rrs: []*mdns.CAA{caa(0, "issue", le), caa(0, "tbs", "x")}, issuers: []string{le}, allows: true},
		{name: "issuewild ignored for a plain name", rrs: []*mdns.CAA{caa(0, "issuewild", ";")}, issuers: []string{le}, allows: true},
		{name: "issuewild forbids a wildcard", rrs: []*mdns.CAA{caa(0, "issue", le), caa(0, "issuewild", ";")}, wildcard: true, issuers: []string{le}, allows: false},
		{name: "issuewild allows a wildcard issue forbids", rrs: []*mdns.CAA{caa(0, "issue", ";"), caa(0, "issuewild", le)}, wildcard: true, issuers: []string{le}, allows: true},
		{name: "issue applies to a wildcard without issuewild", rrs: []*mdns.CAA{caa(0, "issue", "digicert.com")}, wildcard: true, issuers: []string{le}, allows: false},
		{name: "issuer unknown", rrs: []*mdns.CAA{caa(0, "issue", "digicert.com")}, allows: true, unknown: true},
		{name: "issuer unknown, no CA at all", rrs: []*mdns.CAA{caa(0, "issue", ";")}, allows: false},
		{name: "accounturi", rrs: []*mdns.CAA{caa(0, "issue", le+"; accounturi="+a1)}, issuers: []string{le}, allows: true, acct: a1,
			allowed: map[string]map[string]bool{"http-01": {a1: true, a2: false, "": true}, "dns-01": {a1: true, a2: false}}},
		{name: "validationmethods", rrs: []*mdns.CAA{caa(0, "issue", le+"; validationmethods=dns-01,dns-persist-01")}, issuers: []string{le}, allows: true,
			methods: []string{"dns-01", "dns-persist-01"},
			allowed: map[string]map[string]bool{"http-01": {a1: false}, "tls-alpn-01": {a1: false}, "dns-01": {a1: true}, "dns-persist-01": {a1: true}, "dns-account-01": {a1: false}}},
		{name: "empty validationmethods allows none", rrs: []*mdns.CAA{caa(0, "issue", le+"; validationmethods=")}, issuers: []string{le}, allows: true,
			methods: []string{}, allowed: map[string]map[string]bool{"dns-01": {a1: false}}},
		{name: "either record may allow", rrs: []*mdns.CAA{caa(0, "issue", le+"; accounturi="+a1+"; validationmethods=http-01"), caa(0, "issue", le+"; accounturi="+a2)},
			issuers: []string{le}, allows: true, acct: a1, methods: []string{"http-01"},
			allowed: map[string]map[string]bool{"http-01": {a1: true, a2: true}, "dns-01": {a1: false, a2: true}}},
		{name: "restrictions of another CA do not apply", rrs: []*mdns.CAA{caa(0, "issue", le), caa(0, "issue", "digicert.com; validationmethods=dns-01")},
			issuers: []string{le}, allows: true, allowed: map[string]map[string]bool{"http-01": {a1: true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dnscheck.EvaluateCAA(tc.rrs, "example.com.", tc.wildcard, tc.issuers)
			if c.AllowsIssuer != tc.allows || c.IssuerUnknown != tc.unknown || c.AccountURI != tc.acct || len(c.Critical) != tc.critical {
				t.Errorf("EvaluateCAA = %+v; want allows %v unknown %v accounturi %q critical %d", c, tc.allows, tc.unknown, tc.acct, tc.critical)
			}
			if !slices.Equal(c.Methods, tc.methods) || (c.Methods == nil) != (tc.methods == nil) {
				t.Errorf("Methods = %#v, want %#v", c.Methods, tc.methods)
			}
			if len(c.Records) != len(tc.rrs) {
				t.Errorf("Records = %v", c.Records)
			}
			for m, byAcct := range tc.allowed {
				for a, want := range byAcct {
					if got := c.AllowsMethod(m, a); got != want {
						t.Errorf("AllowsMethod(%s, %q) = %v, want %v", m, a, got, want)
					}
				}
			}
		})
	}
}
