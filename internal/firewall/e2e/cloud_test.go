package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall/cloud/digitalocean/dofake"
	"github.com/detour-acme/detour/internal/firewall/nstest"
)

// The cloud firewall end to end: a DigitalOcean Cloud Firewall stands in
// front of the web namespace. Its API is the local fake (dofake, not
// DigitalOcean), served inside the web namespace where Detour reaches
// it; its filtering is real: whenever the fake reports a change applied,
// the test loads the fake's inbound rules as an nftables filter in the
// CA's namespace, on the way out to the web host. The filter is outside
// the web host, as a cloud firewall is, so Detour's host-firewall
// preflight does not see it and only the API can open the port.

// cloudFirewallID is the firewall the fake holds.
const cloudFirewallID = "fw-e2e"

// cloudSim is the fake cloud firewall and its filter.
type cloudSim struct {
	t   *testing.T
	api *dofake.Server
	ca  *nstest.NS
	dir string
}

// newCloudSim starts the fake API in web, with a firewall whose user rules
// accept ssh from a private network and 443 from everywhere, and enforces
// its rules from ca.
func newCloudSim(t *testing.T, web, ca *nstest.NS, dir string) *cloudSim {
	t.Helper()
	var ln net.Listener
	var err error
	web.In(t, func() { ln, err = net.Listen("tcp", "127.0.0.1:0") })
	if err != nil {
		t.Fatal(err)
	}
	c := &cloudSim{t: t, ca: ca, dir: dir}
	c.api = dofake.NewOn(ln)
	t.Cleanup(c.api.Close)
	c.api.AddFirewall(cloudFirewallID, "web", []int{7}, nil)
	c.api.AddInboundRule(cloudFirewallID, "tcp", "22", "10.0.0.0/8")
	c.api.AddInboundRule(cloudFirewallID, "tcp", "443", "0.0.0.0/0", "::/0")
	c.api.OnApply(func(fwID string, rules []dofake.Inbound) { c.enforce(rules) })
	c.enforce(c.api.InboundRules(cloudFirewallID))
	if err := os.WriteFile(filepath.Join(dir, "do-token"), []byte(c.api.Token()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// config is the cloud part of a path's settings.
func (c *cloudSim) config() string {
	return fmt.Sprintf("firewall_id = %q\nfirewall_credentials = %q\nfirewall_endpoint = %q\n",
		cloudFirewallID, filepath.Join(c.dir, "do-token"), c.api.URL)
}

// rules is the firewall's rules, as the user sees them in the console.
func (c *cloudSim) rules() string {
	var out []string
	for _, r := range c.api.InboundRules(cloudFirewallID) {
		out = append(out, fmt.Sprintf("%s/%s from %s", r.Protocol, r.Ports, strings.Join(r.Addresses, ",")))
	}
	return strings.Join(out, "\n")
}

// enforce loads rules as the filter between ca and web: new connections
// to web are dropped unless a rule accepts the port from everywhere.
func (c *cloudSim) enforce(rules []dofake.Inbound) {
	var v4, v6 []string
	for _, r := range rules {
		if r.Protocol != "tcp" {
			continue
		}
		ports := r.Ports
		if ports == "0" || ports == "all" {
			ports = "1-65535"
		}
		if slices.Contains(r.Addresses, "0.0.0.0/0") {
			v4 = append(v4, ports)
		}
		if slices.Contains(r.Addresses, "::/0") {
			v6 = append(v6, ports)
		}
	}
	var b strings.Builder
	b.WriteString("table inet cloudsim\ndelete table inet cloudsim\ntable inet cloudsim {\n\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n")
	if len(v4) > 0 {
		fmt.Fprintf(&b, "\t\tip daddr %s tcp dport { %s } accept\n", nstest.WebAddr4, strings.Join(v4, ", "))
	}
	if len(v6) > 0 {
		fmt.Fprintf(&b, "\t\tip6 daddr %s tcp dport { %s } accept\n", nstest.WebAddr6, strings.Join(v6, ", "))
	}
	fmt.Fprintf(&b, "\t\tip daddr %s ct state new drop\n\t\tip6 daddr %s ct state new drop\n\t}\n}\n", nstest.WebAddr4, nstest.WebAddr6)
	f := filepath.Join(c.t.TempDir(), "cloudsim.nft")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		c.t.Error(err)
		return
	}
	if out, err := c.ca.Command("nft", "-f", f).CombinedOutput(); err != nil {
		c.t.Errorf("loading the cloud firewall's filter: %v\n%s\n%s", err, out, b.String())
	}
}

// newCloudSite is newSite for a path whose window opens the cloud
// firewall, and the host firewall host too when it is set.
func newCloudSite(t *testing.T, host *backend, timeout string, names ...string) (*site, *cloudSim) {
	t.Helper()
	nstest.RequireCommand(t, "nft", "nftables")
	web, ca := nstest.NewPair(t)
	s := &site{t: t, web: web, ca: ca, names: names}
	s.dir = worldDir(t)
	sim := newCloudSim(t, web, ca, s.dir)
	s.b = backend{name: "digitalocean", extra: sim.config(),
		rules: func(*testing.T, *nstest.NS) string { return sim.rules() }}
	if host != nil {
		host.setup(t, web)
		s.b.name = "digitalocean, " + host.name
		s.b.rules = func(t *testing.T, web *nstest.NS) string { return sim.rules() + "\n" + host.rules(t, web) }
	}
	s.info = startCA(t, ca, names, nstest.WebAddr4)
	s.writeConfig(timeout)
	s.baseline = s.b.rules(t, web)
	return s, sim
}

// TestCloudWindow is the acceptance test of a cloud firewall window: the
// port is closed before; a renewal succeeds through the rule Detour adds,
// and the rule is gone right after, the user's rules untouched; a Detour
// killed with SIGKILL leaves the rule (a cloud rule has no timeout), which
// `detour firewall close --stale` removes once its timeout has passed,
// not before.
func TestCloudWindow(t *testing.T) {
	t.Parallel()
	const timeout = 4 * time.Second
	s, sim := newCloudSite(t, nil, timeout.String(), "cloud.e2e.detour.test")

	s.wantPort("before the renewal", nstest.Dropped)
	s.detour("issue", "site0")
	s.wantPort("right after issuing", nstest.Dropped)
	s.wantRulesUnchanged("after issuing,")
	out := s.renew("site0")
	if !strings.Contains(out, "cloud firewall rule added") || !strings.Contains(out, "cloud firewall rule removed") {
		t.Errorf("the renewal's log does not show the cloud rule:\n%s", out)
	}
	s.wantPort("right after the renewal", nstest.Dropped)
	s.wantRulesUnchanged("after the renewal,")

	h := s.holdOpen("site0")
	s.wantPort("with the window held open", nstest.Refused)
	if st := s.detour("firewall", "status"); !strings.Contains(st, "digitalocean") || !strings.Contains(st, "80/tcp") {
		t.Errorf("firewall status with the window open:\n%s", st)
	}
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := h.wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("detour was not killed by SIGKILL: %v", err)
	}
	s.wantPort("right after SIGKILL", nstest.Refused)
	if out := s.detour("firewall", "close", "--stale"); !strings.Contains(out, "past its timeout is closed") {
		t.Errorf("firewall close --stale said:\n%s", out)
	}
	s.wantPort("after close --stale before the timeout", nstest.Refused)
	time.Sleep(time.Until(h.opened.Add(timeout + time.Second)))
	s.detour("firewall", "close", "--stale")
	s.wantPort("after close --stale past the timeout", nstest.Dropped)
	s.wantRulesUnchanged("after the sweep,")

	// A killed run again, swept this time by the next `detour renew` at
	// its start.
	h = s.holdOpen("site0")
	_ = h.cmd.Process.Signal(syscall.SIGKILL)
	_ = h.wait()
	time.Sleep(time.Until(h.opened.Add(timeout + time.Second)))
	s.renew("site0")
	s.wantPort("after the next renewal", nstest.Dropped)
	s.wantRulesUnchanged("after the killed run and the next renewal,")
	if n := len(sim.api.InboundRules(cloudFirewallID)); n != 2 {
		t.Errorf("the firewall has %d rules, want the user's 2", n)
	}
}

// TestCloudAndHostWindow: one window opens both the cloud firewall and the
// host's own nftables, and closes both.
func TestCloudAndHostWindow(t *testing.T) {
	t.Parallel()
	s, _ := newCloudSite(t, &backends[0], "2m", "both.e2e.detour.test")
	s.wantPort("before the renewal", nstest.Dropped)
	s.detour("issue", "site0")
	s.wantPort("after issuing", nstest.Dropped)
	s.wantRulesUnchanged("after issuing,")
	h := s.holdOpen("site0")
	s.wantPort("with both windows held open", nstest.Refused)
	st := s.detour("firewall", "status")
	for _, want := range []string{"digitalocean", "nftables"} {
		if !strings.Contains(st, want) {
			t.Errorf("firewall status lacks %s:\n%s", want, st)
		}
	}
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = h.wait()
	s.wantPort("after the interrupted run", nstest.Dropped)
	s.wantRulesUnchanged("after the interrupted run,")
}

// The fake's API lives in the web namespace only (the tests above show
// Detour reaches it there), and the filter is the cloud's: a guard
// against a test that passes because the filter or the API is somewhere
// else.
func TestCloudSimIsolated(t *testing.T) {
	t.Parallel()
	web, ca := nstest.NewPair(t)
	sim := newCloudSim(t, web, ca, t.TempDir())
	if resp, err := http.Get(sim.api.URL + "/v2/firewalls/" + cloudFirewallID); err == nil {
		resp.Body.Close()
		t.Fatalf("the fake's API answers outside the web namespace: %s", resp.Status)
	}
	if rs := web.Run(t, "nft", "list", "ruleset"); strings.TrimSpace(rs) != "" {
		t.Errorf("the web host has a ruleset of its own; the cloud's filter belongs outside it:\n%s", rs)
	}
	web.Listen(t, ":80")
	web.Listen(t, ":443")
	if got := ca.Probe(t, web80, probeWait); got != nstest.Dropped {
		t.Errorf("web:80 from ca is %s with no cloud rule, want dropped", got)
	}
	if got := ca.Probe(t, net.JoinHostPort(nstest.WebAddr4, "443"), probeWait); got != nstest.Open {
		t.Errorf("web:443 from ca is %s, want open (the user's rule accepts it from everywhere)", got)
	}
}
