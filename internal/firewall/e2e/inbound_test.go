package e2e

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall"
	"github.com/detour-acme/detour/internal/firewall/nstest"
)

// nsRunner runs the window backends' commands in a namespace.
type nsRunner struct{ ns string }

func (r nsRunner) Run(ctx context.Context, c firewall.Command) ([]byte, error) {
	out, err := firewall.ExecRunner{}.Run(ctx, firewall.Command{Name: "ip", Args: append([]string{"netns", "exec", r.ns, c.Name}, c.Args...), Env: c.Env})
	var ce *firewall.CommandError
	if errors.As(err, &ce) {
		ce.Command = c
	}
	return out, err
}

// inboundFirewall is one kind of firewall the user may have: how to set
// up each case in the web namespace, and how to open a Detour window in
// it.
type inboundFirewall struct {
	name     string // the firewall setting and the Backend Inbound names for IPv4
	backend6 string // the Backend Inbound names for IPv6
	setup    func(t *testing.T, web *nstest.NS, c inboundCase)
}

// inboundCase is a user's ruleset and what Inbound must say of port 80.
type inboundCase struct {
	name   string
	policy string // "drop" or "accept"
	rule   string // "", "drop" or "reject": a rule for port 80
	window bool   // Detour opens a window for port 80
	want   firewall.Action
	rule80 string // a word Inbound's description must hold
}

func nftSetup(t *testing.T, web *nstest.NS, c inboundCase) {
	nstest.RequireCommand(t, "nft", "nftables")
	rule := ""
	switch c.rule {
	case "drop":
		rule = "tcp dport 80 drop"
	case "reject":
		rule = "tcp dport 80 reject with tcp reset"
	}
	web.LoadRuleset(t, `table inet filter {
	chain input {
		type filter hook input priority filter; policy `+c.policy+`;
		ct state established,related accept
		iif "lo" accept
		meta l4proto { icmp, ipv6-icmp } accept
		tcp dport 22 accept
		`+rule+`
	}
}
`)
}

func iptSetup(bin4, bin6 string) func(t *testing.T, web *nstest.NS, c inboundCase) {
	return func(t *testing.T, web *nstest.NS, c inboundCase) {
		for _, bin := range []string{bin4, bin6} {
			nstest.RequireCommand(t, bin, "iptables")
			icmp := "icmp"
			if bin == bin6 {
				icmp = "ipv6-icmp"
			}
			for _, args := range [][]string{
				{"-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
				{"-A", "INPUT", "-i", "lo", "-j", "ACCEPT"},
				{"-A", "INPUT", "-p", icmp, "-j", "ACCEPT"},
				{"-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"},
				{"-P", "INPUT", strings.ToUpper(c.policy)},
			} {
				web.Run(t, bin, args...)
			}
			switch c.rule {
			case "drop":
				web.Run(t, bin, "-A", "INPUT", "-p", "tcp", "--dport", "80", "-j", "DROP")
			case "reject":
				web.Run(t, bin, "-A", "INPUT", "-p", "tcp", "--dport", "80", "-j", "REJECT", "--reject-with", "tcp-reset")
			}
		}
	}
}

// TestInbound sets up the user's firewall in a namespace, asks Inbound
// what it does to port 80, and checks the answer against a real
// connection from the "ca" namespace.
func TestInbound(t *testing.T) {
	firewalls := []inboundFirewall{
		{name: firewall.NameNftables, backend6: firewall.NameNftables, setup: nftSetup},
		{name: firewall.NameIptablesLegacy, backend6: firewall.NameIp6tablesLegacy, setup: iptSetup("iptables-legacy", "ip6tables-legacy")},
		{name: firewall.NameIptablesNft, backend6: firewall.NameIp6tablesNft, setup: iptSetup("iptables-nft", "ip6tables-nft")},
	}
	cases := []inboundCase{
		{name: "policy drop", policy: "drop", want: firewall.Drop, rule80: "policy"},
		{name: "policy drop with a window", policy: "drop", window: true, want: firewall.Accept, rule80: "detour-window"},
		{name: "policy accept", policy: "accept", want: firewall.Accept, rule80: "policy"},
		{name: "drop rule", policy: "accept", rule: "drop", want: firewall.Drop, rule80: "80"},
		{name: "reject rule", policy: "accept", rule: "reject", want: firewall.Reject, rule80: "80"},
	}
	probe := map[firewall.Action]string{firewall.Accept: nstest.Open, firewall.Drop: nstest.Dropped, firewall.Reject: nstest.Refused}
	for _, fw := range firewalls {
		for _, c := range cases {
			t.Run(fw.name+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				web, ca := nstest.NewPair(t)
				fw.setup(t, web, c)
				web.Listen(t, net.JoinHostPort(nstest.WebAddr4, "80"))
				web.Listen(t, net.JoinHostPort(nstest.WebAddr6, "80"))
				ctx := t.Context()
				if c.window {
					b, err := firewall.New(fw.name, firewall.Options{NetNS: web.FD, Runner: nsRunner{web.Name}})
					if err != nil {
						t.Fatal(err)
					}
					w := firewall.Window{Port: 80, Family: firewall.Inet, Timeout: time.Minute}
					if err := b.Open(ctx, w); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = b.Close(context.WithoutCancel(ctx), w) })
				}
				v, err := firewall.Inbound(ctx, 80, firewall.InboundOptions{NetNS: web.FD})
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%v", v)
				for _, f := range []struct {
					fam     firewall.Family
					addr    string
					backend string
				}{{firewall.IPv4, nstest.WebAddr4, fw.name}, {firewall.IPv6, nstest.WebAddr6, fw.backend6}} {
					got := v.For(f.fam)
					if got.Action != c.want || got.Window != c.window || got.Backend != f.backend || !strings.Contains(got.Rule, c.rule80) {
						t.Errorf("%s: %v; want %s by %s, window %v, a rule or policy mentioning %q", f.fam, got, c.want, f.backend, c.window, c.rule80)
					}
					if real := ca.Probe(t, net.JoinHostPort(f.addr, "80"), 500*time.Millisecond); real != probe[c.want] {
						t.Errorf("%s: a connection from the CA's namespace was %s; Inbound said %s", f.fam, real, got.Action)
					}
				}
			})
		}
	}
}

// TestInboundUfw: ufw's own view decides, and its Detour rule is a
// window.
func TestInboundUfw(t *testing.T) {
	web, ca := nstest.NewPair(t)
	web.WithUfw(t)
	web.Run(t, "ufw", "--force", "enable")
	web.Run(t, "ufw", "allow", "22/tcp")
	web.Listen(t, net.JoinHostPort(nstest.WebAddr4, "80"))
	ctx := t.Context()
	check := func(want firewall.Action, window bool, probe string) {
		t.Helper()
		// ip netns exec, not nsenter: ufw reads the namespace's own
		// /etc/ufw.
		v, err := firewall.Inbound(ctx, 80, firewall.InboundOptions{NetNS: web.FD, Runner: nsRunner{web.Name}})
		if err != nil {
			t.Fatal(err)
		}
		if got := v.IPv4; got.Action != want || got.Window != window || got.Backend != firewall.NameUfw {
			t.Errorf("IPv4: %v; want %s by ufw, window %v", got, want, window)
		}
		if real := ca.Probe(t, net.JoinHostPort(nstest.WebAddr4, "80"), 500*time.Millisecond); real != probe {
			t.Errorf("a connection from the CA's namespace was %s", real)
		}
	}
	check(firewall.Drop, false, nstest.Dropped)
	b, err := firewall.New(firewall.NameUfw, firewall.Options{Runner: nsRunner{web.Name}})
	if err != nil {
		t.Fatal(err)
	}
	w := firewall.Window{Port: 80, Family: firewall.Inet, Timeout: time.Minute}
	if err := b.Open(ctx, w); err != nil {
		t.Fatal(err)
	}
	check(firewall.Accept, true, nstest.Open)
	if err := b.Close(ctx, w); err != nil {
		t.Fatal(err)
	}
}
