package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/firewall/nstest"
)

// TestPreflight: a policy-drop firewall and a path without a window (the
// self-check, run from the host itself, would pass): Detour reads the
// ruleset, refuses before it contacts the CA, and names the rule and the
// fix. Once the user's ruleset accepts port 80, the same command goes on
// to the CA.
func TestPreflight(t *testing.T) {
	open := map[string][]string{
		"nftables":        {"nft", "insert", "rule", "inet", "filter", "input", "tcp", "dport", "80", "accept"},
		"iptables-legacy": {"iptables-legacy", "-I", "INPUT", "-p", "tcp", "--dport", "80", "-j", "ACCEPT"},
		"iptables-nft":    {"iptables-nft", "-I", "INPUT", "-p", "tcp", "--dport", "80", "-j", "ACCEPT"},
		"ufw":             {"ufw", "allow", "80/tcp"},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			web := nstest.New(t)
			b.setup(t, web)
			ca := newCountingCA(t, web)
			dir := worldDir(t)
			// An IP identifier: the CA connects over IPv4 only (the
			// iptables setups drop IPv4 alone).
			cfg := filepath.Join(dir, "detour.toml")
			body := fmt.Sprintf("state_dir = %q\nagree_tos = true\nemail = \"fw@detour.test\"\n\n"+
				"[path.web]\nkind = \"standalone\"\nlisten = \":80\"\n\n"+
				"[[certificate]]\nname = \"pf\"\ndomains = [%q]\nca = %q\npaths = [\"web\"]\n",
				filepath.Join(dir, "state"), nstest.WebAddr4, ca.url())
			if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			run := func(extra ...string) string {
				out, err := web.Command(detourBin, append([]string{"--config", cfg, "issue", "pf"}, extra...)...).CombinedOutput()
				if err == nil {
					t.Fatalf("detour succeeded against a CA that answers nothing:\n%s", out)
				}
				return strings.ReplaceAll(string(out), `\"`, `"`)
			}
			out := run()
			t.Logf("refused:\n%s", out)
			for _, want := range []string{
				"this host's firewall keeps the CA from connecting to port 80",
				"IPv4 drop by",
				fmt.Sprintf(`set firewall = %q in [path.web]`, b.name),
				"use a DNS path",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if n := ca.count(); n != 0 {
				t.Errorf("the CA got %d connections; want none: the firewall was read before anything was asked", n)
			}

			// The checks turned off (the CA comes through a load balancer
			// the rules do not show): no refusal.
			out = run("--no-self-check")
			if strings.Contains(out, "keeps the CA from connecting") || ca.count() == 0 {
				t.Errorf("with --no-self-check: refused, or the CA was not asked:\n%s", out)
			}
			asked := ca.count()

			web.Run(t, open[b.name][0], open[b.name][1:]...)
			out = run()
			if strings.Contains(out, "keeps the CA from connecting") {
				t.Errorf("refused with port 80 open:\n%s", out)
			}
			if ca.count() == asked {
				t.Errorf("with port 80 open, detour did not go on to the CA:\n%s", out)
			}
		})
	}
}

// TestCATimeout: a firewall the host cannot see (here the CA's side drops
// the web server's answers, as a cloud firewall or a NAT router without a
// port forward would): the preflight and the self-check pass, the CA
// times out, and the error says that the CA could not connect, to which
// port, and the likely causes.
func TestCATimeout(t *testing.T) {
	t.Parallel()
	web, ca := nstest.NewPair(t)
	const name = "cloud.e2e.detour.test"
	info := startCA(t, ca, []string{name}, nstest.WebAddr4)
	// Outside the web host: its SYN-ACKs from port 80 never reach the CA.
	ca.LoadRuleset(t, "table inet cloud {\n\tchain in {\n\t\ttype filter hook input priority 0; policy accept;\n\t\ttcp sport 80 drop\n\t}\n}\n")
	dir := worldDir(t)
	cfg := filepath.Join(dir, "detour.toml")
	body := fmt.Sprintf("state_dir = %q\nagree_tos = true\nemail = \"fw@detour.test\"\ndefault_ca = \"sandbox\"\n\n"+
		"[ca.sandbox]\ndirectory = %q\nroot_bundle = %q\n\n"+
		"[path.web]\nkind = \"standalone\"\nlisten = \":80\"\n\n"+
		"[[certificate]]\nname = \"cloud\"\ndomains = [%q]\nprofile = \"shortlived\"\npaths = [\"web\"]\n",
		filepath.Join(dir, "state"), info.Directory, info.Roots, name)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := web.Command(detourBin, "--config", cfg, "--resolver", info.DNS, "issue", "cloud").CombinedOutput()
	if err == nil {
		t.Fatalf("detour succeeded although the CA cannot connect:\n%s", out)
	}
	t.Logf("output:\n%s", out)
	for _, want := range []string{
		"The CA could not connect to " + name + " on port 80/tcp",
		"cloud or provider firewall",
		"NAT without a port forward of 80",
		"use a DNS path",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(string(out), "keeps the CA from connecting") {
		t.Error("the preflight refused, but this host's firewall is open")
	}
}
