package dnscheck

import (
	"net/netip"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/doctor/check"
)

func ips(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestAddrVerdict(t *testing.T) {
	tests := []struct {
		name   string
		facts  addrFacts
		local  bool
		status check.Status
		says   []string
		notSay []string
	}{
		{name: "local", facts: addrFacts{A: ips("93.184.216.34"), Local: ips("93.184.216.34")}, local: true, status: check.OK,
			says: []string{"on this host's interfaces"}},
		{name: "host addresses unknown", facts: addrFacts{A: ips("93.184.216.34")}, status: check.OK, notSay: []string{"on this host's interfaces"}},
		{name: "NAT", facts: addrFacts{A: ips("93.184.216.35"), NotLocal: ips("93.184.216.35")}, local: true, status: check.Warning,
			says: []string{"NAT or a load balancer", "forwarded to this host"}},
		{name: "disagree", facts: addrFacts{A: ips("93.184.216.34"), Local: ips("93.184.216.34"), Disagree: true}, local: true, status: check.Warning,
			says: []string{"answer different addresses", "lags"}},
		{name: "nothing", local: true, status: check.Problem, says: []string{"no A or AAAA record", "only the DNS paths"}},
		{name: "private", facts: addrFacts{A: ips("10.0.0.1"), NotLocal: ips("10.0.0.1"), Private: ips("10.0.0.1")}, local: true, status: check.Problem,
			says: []string{"10.0.0.1 is private (RFC 1918), unreachable from the CA", "publish the host's public address"}, notSay: []string{"NAT"}},
		{name: "AAAA trap", facts: addrFacts{A: ips("93.184.216.34"), AAAA: ips("2606:2800:220:1::1"), Local: ips("93.184.216.34"), NotLocal: ips("2606:2800:220:1::1")},
			local: true, status: check.Problem, says: []string{"the AAAA trap", "remove the AAAA record"}, notSay: []string{"NAT"}},
		{name: "AAAA not local but the host has IPv6", facts: addrFacts{AAAA: ips("2606:2800:220:1::1"), NotLocal: ips("2606:2800:220:1::1"), HostIPv6: true},
			local: true, status: check.Warning, says: []string{"2606:2800:220:1::1 is on no interface"}, notSay: []string{"AAAA trap"}},
		{name: "AAAA trap and NAT", facts: addrFacts{A: ips("93.184.216.35"), AAAA: ips("2606:2800:220:1::1"), NotLocal: ips("93.184.216.35", "2606:2800:220:1::1")},
			local: true, status: check.Problem, says: []string{"the AAAA trap", "93.184.216.35 is on no interface"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := check.New(CheckAddresses, "x.example", check.OK, "")
			addrVerdict(&res, "x.example", tc.facts, tc.local)
			all := res.String()
			if res.Status != tc.status {
				t.Errorf("status %s, want %s:\n%s", res.Status, tc.status, all)
			}
			for _, s := range tc.says {
				if !strings.Contains(all, s) {
					t.Errorf("does not say %q:\n%s", s, all)
				}
			}
			for _, s := range tc.notSay {
				if strings.Contains(all, s) {
					t.Errorf("says %q:\n%s", s, all)
				}
			}
			if (res.Status == check.Problem || res.Status == check.Warning) != (res.Fix != "") {
				t.Errorf("fix %q with status %s", res.Fix, res.Status)
			}
		})
	}
}

func TestCAAVerdict(t *testing.T) {
	rr := func(flag uint8, tag, value string) *mdns.CAA {
		return &mdns.CAA{Hdr: mdns.RR_Header{Name: "example.com.", Rrtype: mdns.TypeCAA}, Flag: flag, Tag: tag, Value: value}
	}
	const le, a1, a2 = "letsencrypt.org", "https://ca/acct/1", "https://ca/acct/2"
	tests := []struct {
		name     string
		rrs      []*mdns.CAA
		wildcard bool
		issuers  []string
		accounts []string
		status   check.Status
		says     []string
	}{
		{name: "none", issuers: []string{le}, status: check.OK, says: []string{"every CA may issue"}},
		{name: "allowed", rrs: []*mdns.CAA{rr(0, "issue", le)}, issuers: []string{le}, status: check.OK, says: []string{"allows letsencrypt.org"}},
		{name: "forbidden", rrs: []*mdns.CAA{rr(0, "issue", "digicert.com")}, issuers: []string{le}, status: check.Problem,
			says: []string{"allows only digicert.com, not letsencrypt.org", `example.com. CAA 0 issue "letsencrypt.org"`}},
		{name: "wildcard forbidden", rrs: []*mdns.CAA{rr(0, "issue", le), rr(0, "issuewild", ";")}, wildcard: true, issuers: []string{le}, status: check.Problem,
			says: []string{`allows only ";" (no CA)`, `CAA 0 issuewild "letsencrypt.org"`}},
		{name: "malformed", rrs: []*mdns.CAA{rr(0, "issue", "letsencrypt.org; x")}, issuers: []string{le}, status: check.Problem,
			says: []string{"is malformed", "authorizes no CA"}},
		{name: "critical", rrs: []*mdns.CAA{rr(128, "tbs", "x")}, issuers: []string{le}, status: check.Problem,
			says: []string{"critical property", "clear the critical flag"}},
		{name: "unknown issuer", rrs: []*mdns.CAA{rr(0, "issue", "digicert.com")}, status: check.Warning, says: []string{"issuer domain names are unknown"}},
		{name: "foreign accounturi", rrs: []*mdns.CAA{rr(0, "issue", le+"; accounturi="+a2)}, issuers: []string{le}, accounts: []string{a1}, status: check.Problem,
			says: []string{"only for account " + a2, "accounturi=" + a1}},
		{name: "accounturi, no account yet", rrs: []*mdns.CAA{rr(0, "issue", le+"; accounturi="+a2)}, issuers: []string{le}, status: check.Warning,
			says: []string{"no account at the CA yet"}},
		{name: "our accounturi", rrs: []*mdns.CAA{rr(0, "issue", le+"; accounturi="+a1)}, issuers: []string{le}, accounts: []string{a1}, status: check.OK,
			says: []string{"for account " + a1}},
		{name: "methods", rrs: []*mdns.CAA{rr(0, "issue", le+"; validationmethods=http-01")}, issuers: []string{le}, accounts: []string{a1}, status: check.OK,
			says: []string{"with http-01 only", "refused tls-alpn-01, dns-01, dns-account-01, dns-persist-01"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := EvaluateCAA(tc.rrs, "example.com.", tc.wildcard, tc.issuers)
			v := caaVerdict(c, "www.example.com", tc.wildcard, tc.accounts)
			all := v.summary + "\n" + strings.Join(v.lines, "\n") + "\n" + v.fix
			if v.status != tc.status {
				t.Errorf("status %s, want %s:\n%s", v.status, tc.status, all)
			}
			for _, s := range tc.says {
				if !strings.Contains(all, s) {
					t.Errorf("does not say %q:\n%s", s, all)
				}
			}
			if (v.status == check.Problem || v.status == check.Warning) && v.fix == "" {
				t.Errorf("no fix:\n%s", all)
			}
		})
	}
}
