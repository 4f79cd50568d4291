package dnscheck_test

import (
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/doctor/check"
	"github.com/detour-acme/detour/internal/doctor/dnscheck"
	"github.com/detour-acme/detour/internal/solve/persist"
)

func TestEvaluatePersist(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	const a1, a2, tp = "https://ca/acct/1", "https://ca/acct/2", "thumbprint-of-key-1"
	in := dnscheck.PersistInputs{Name: "example.com", AccountURIs: []string{a1}, IssuerDomains: []string{le}, Now: now}
	_, hashed := persist.Record(persist.Params{Identifier: "example.com", IssuerDomainName: le, AccountURI: a1,
		Draft: persist.Draft02, HashPrefix: "https://ca/hash/", Thumbprint: tp})
	_, hashedAny := persist.Record(persist.Params{Identifier: "example.com", IssuerDomainName: le, AccountURI: a1,
		Draft: persist.Draft02, HashPrefix: "https://ca/hash/", Thumbprint: tp, AnyDomain: true})
	withTP := in
	withTP.Thumbprints = map[string]string{a1: tp}
	wild := in
	wild.Wildcard = true
	noAcct := in
	noAcct.AccountURIs = nil

	tests := []struct {
		name    string
		values  []string
		in      dnscheck.PersistInputs
		status  check.Status
		found   bool
		matches bool
		acct    string
		says    string
	}{
		{name: "none", in: in, status: check.Info, says: "no dns-persist-01 record"},
		{name: "other TXT only", values: []string{"v=spf1 -all"}, in: in, status: check.Info, says: "ignored"},
		{name: "ours", values: []string{le + "; accounturi=" + a1}, in: in, status: check.OK, found: true, matches: true, acct: a1},
		{name: "ours among others", values: []string{"v=spf1 -all", "other.ca; accounturi=" + a1, le + "; accounturi=" + a1},
			in: in, status: check.OK, found: true, matches: true, acct: a1},
		{name: "another account", values: []string{le + "; accounturi=" + a2}, in: in, status: check.Warning, found: true, acct: a2,
			says: "for another account (accounturi=" + a2 + ")"},
		{name: "another CA", values: []string{"other.ca; accounturi=" + a1}, in: in, status: check.Warning, found: true, acct: a1,
			says: "for another CA (issuer other.ca"},
		{name: "issuer in other case", values: []string{"LetsEncrypt.org; accounturi=" + a1}, in: in, status: check.OK, found: true, matches: true, acct: a1},
		{name: "expired", values: []string{le + "; accounturi=" + a1 + "; persistUntil=" + "1700000000"}, in: in, status: check.Warning, found: true, acct: a1,
			says: "expired (persistUntil 2023-11-14T22:13:20Z)"},
		{name: "not expired", values: []string{le + "; accounturi=" + a1 + "; persistUntil=" + "1900000000"}, in: in, status: check.OK, found: true, matches: true, acct: a1,
			says: "until 2030-03-17"},
		{name: "wildcard needs the policy", values: []string{le + "; accounturi=" + a1}, in: wild, status: check.Warning, found: true, acct: a1,
			says: "without policy=wildcard"},
		{name: "wildcard with the policy", values: []string{le + "; accounturi=" + a1 + "; policy=wildcard"}, in: wild, status: check.OK, found: true, matches: true, acct: a1},
		{name: "draft-02 hashed, thumbprint known", values: []string{hashed}, in: withTP, status: check.OK, found: true, matches: true},
		{name: "draft-02 hashed over *, thumbprint known", values: []string{hashedAny}, in: withTP, status: check.OK, found: true, matches: true},
		{name: "draft-02 hashed, thumbprint unknown", values: []string{hashed}, in: in, status: check.Warning, found: true,
			says: "cannot be compared without the account key's thumbprint"},
		{name: "account unknown", values: []string{le + "; accounturi=" + a2}, in: noAcct, status: check.Info, found: true, acct: a2,
			says: "not compared"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := dnscheck.EvaluatePersist(tc.values, tc.in)
			all := v.Summary + "\n" + strings.Join(v.Lines, "\n") + "\n" + v.Fix
			if v.Status != tc.status || v.Result.Found != tc.found || v.Result.MatchesAccount != tc.matches {
				t.Errorf("status %s found %v matches %v, want %s %v %v:\n%s", v.Status, v.Result.Found, v.Result.MatchesAccount, tc.status, tc.found, tc.matches, all)
			}
			if tc.acct != "" && v.Result.AccountURI != tc.acct {
				t.Errorf("AccountURI = %q, want %q", v.Result.AccountURI, tc.acct)
			}
			if !strings.Contains(all, tc.says) {
				t.Errorf("does not say %q:\n%s", tc.says, all)
			}
			if v.Status == check.Warning && v.Fix == "" {
				t.Errorf("warning without a fix")
			}
		})
	}
}
