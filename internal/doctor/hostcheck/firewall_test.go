package hostcheck

import (
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/doctor/check"
	"github.com/detour-acme/detour/internal/firewall"
	"github.com/detour-acme/detour/internal/firewall/nstest"
)

// hostRuleset is a typical host firewall: established, loopback and ssh
// accepted, everything else dropped by the input chain's policy.
const hostRuleset = `table inet filter {
	chain input {
		type filter hook input priority 0; policy drop;
		ct state established,related accept
		iif lo accept
		tcp dport 22 accept
		@OPEN@
	}
}
`

// TestFirewallInbound reads real nftables rulesets in a network namespace
// the test creates, through the namespace's descriptor and from a thread
// inside it: a policy-drop input chain is a Problem naming the policy and
// the nftables window setting; with 80 and 443 accepted it is OK.
func TestFirewallInbound(t *testing.T) {
	t.Parallel()
	nstest.RequireCommand(t, "nft", "nftables")
	tests := []struct {
		name   string
		open   string
		want   string
		status check.Status
		fix    string
		inside bool
	}{
		{"policy drop", "", FirewallDrop, check.Problem, `firewall = "nftables"`, false},
		{"policy drop, read from inside", "", FirewallDrop, check.Problem, `firewall = "nftables"`, true},
		{"open", "tcp dport { 80, 443 } accept", FirewallAccept, check.OK, "", false},
		{"open, read from inside", "tcp dport { 80, 443 } accept", FirewallAccept, check.OK, "", true},
		{"reject", "tcp dport { 80, 443 } reject with tcp reset", FirewallDrop, check.Problem, `firewall = "nftables"`, false},
		{"rate limit", "tcp dport { 80, 443 } limit rate 10/second accept", FirewallUnknown, check.Warning, "by hand", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := nstest.New(t)
			ns.LoadRuleset(t, strings.Replace(hostRuleset, "@OPEN@", tc.open, 1))
			proc, dmi := fakeProc(t, nil), t.TempDir()
			var facts Facts
			var rs []check.Result
			if tc.inside {
				// Check on a thread inside the namespace with the zero
				// InboundOptions, as doctor reads its own host.
				ns.Do(t, func(tb testing.TB) {
					facts, rs = Check(tb.Context(), Options{Ports: []int{80, 443}, ProcRoot: proc, DMIRoot: dmi})
				})
			} else {
				facts, rs = Check(t.Context(), Options{Ports: []int{80, 443}, ProcRoot: proc, DMIRoot: dmi,
					Firewall: firewall.InboundOptions{NetNS: ns.FD}})
			}
			if len(facts.Firewall) != 2 {
				t.Fatalf("firewall facts %+v", facts.Firewall)
			}
			for _, fp := range facts.Firewall {
				if fp.V4 != tc.want || fp.V6 != tc.want || fp.Backend != firewall.NameNftables {
					t.Errorf("port %d: %+v, want %s from nftables", fp.Port, fp, tc.want)
				}
				if tc.want == FirewallDrop && tc.open == "" && fp.Rule != "chain input policy drop in table inet filter" {
					t.Errorf("port %d: rule %q", fp.Port, fp.Rule)
				}
			}
			r := result(t, rs, "firewall.inbound", "")
			if r.Status != tc.status || !strings.Contains(r.Fix, tc.fix) || len(r.Evidence) != 2 {
				t.Errorf("result:\n%s", r)
			}
			if tc.status == check.Problem && !strings.Contains(r.Summary, "a firewall window is needed") {
				t.Errorf("summary %q", r.Summary)
			}
		})
	}
}

func TestWindowSetting(t *testing.T) {
	for backend, want := range map[string]string{
		firewall.NameNftables: "nftables", firewall.NameIptablesNft: "iptables", firewall.NameIp6tablesLegacy: "iptables",
		firewall.NameUfw: "ufw", firewall.NameFirewalld: "firewalld", "": "nftables",
	} {
		if got := windowSetting(backend); got != want {
			t.Errorf("%q: %q, want %q", backend, got, want)
		}
	}
}
