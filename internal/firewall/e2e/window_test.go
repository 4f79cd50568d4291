package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall/nstest"
)

// probeWait is how long a probe waits before calling a port dropped.
const probeWait = 500 * time.Millisecond

// web80 is where the CA validates http-01.
var web80 = net.JoinHostPort(nstest.WebAddr4, "80")

// backend is one firewall under test: how the user's own firewall is set
// up in the web namespace, and how to read the user's rules back.
type backend struct {
	name  string                             // the firewall setting
	setup func(t *testing.T, web *nstest.NS) // the user's firewall: input dropped but for ssh
	rules func(t *testing.T, web *nstest.NS) string
	// kernelTimeout: the firewall closes the port by itself at the
	// deadline (ufw cannot).
	kernelTimeout bool
	// extra is more settings of the path (a cloud firewall's).
	extra string
}

// userNftables is a typical nftables host firewall.
const userNftables = `table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iif "lo" accept
		meta l4proto { icmp, ipv6-icmp } accept
		tcp dport 22 accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
}
`

func iptablesUser(bin string) func(t *testing.T, web *nstest.NS) {
	return func(t *testing.T, web *nstest.NS) {
		nstest.RequireCommand(t, bin, "iptables")
		for _, args := range [][]string{
			{"-A", "INPUT", "-i", "lo", "-j", "ACCEPT"},
			{"-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
			{"-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"},
			{"-P", "INPUT", "DROP"},
		} {
			web.Run(t, bin, args...)
		}
	}
}

var backends = []backend{
	{name: "nftables", kernelTimeout: true,
		setup: func(t *testing.T, web *nstest.NS) {
			nstest.RequireCommand(t, "nft", "nftables")
			web.LoadRuleset(t, userNftables)
		},
		rules: func(t *testing.T, web *nstest.NS) string { return web.Ruleset(t) }},
	{name: "iptables-legacy", kernelTimeout: true, setup: iptablesUser("iptables-legacy"),
		rules: func(t *testing.T, web *nstest.NS) string { return web.Run(t, "iptables-legacy", "-S") }},
	{name: "iptables-nft", kernelTimeout: true, setup: iptablesUser("iptables-nft"),
		rules: func(t *testing.T, web *nstest.NS) string { return web.Run(t, "iptables-nft", "-S") }},
	{name: "ufw",
		setup: func(t *testing.T, web *nstest.NS) {
			web.WithUfw(t)
			web.Run(t, "ufw", "--force", "enable")
			web.Run(t, "ufw", "allow", "22/tcp")
		},
		rules: func(t *testing.T, web *nstest.NS) string {
			return web.Run(t, "ufw", "status", "numbered") + web.Run(t, "iptables", "-S")
		}},
}

// site is one test's network: the CA in "ca", the user's firewall and
// Detour's configuration for "web".
type site struct {
	t        *testing.T
	web, ca  *nstest.NS
	b        backend
	info     caInfo
	dir      string // state and config, world-readable
	cfg      string
	names    []string
	baseline string // the user's rules before Detour ran
}

// newSite builds the network for backend b, with certificates for names
// (all resolving to the web namespace) through one standalone path on :80
// whose window lasts timeout.
func newSite(t *testing.T, b backend, timeout string, names ...string) *site {
	t.Helper()
	web, ca := nstest.NewPair(t)
	s := &site{t: t, web: web, ca: ca, b: b, names: names}
	b.setup(t, web)
	s.info = startCA(t, ca, names, nstest.WebAddr4)
	s.dir = worldDir(t)
	s.writeConfig(timeout)
	s.baseline = b.rules(t, web)
	return s
}

// worldDir returns a temporary directory anyone can read and write (a
// test runs detour as nobody).
func worldDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "detour-fwe2e-site-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func (s *site) writeConfig(timeout string) {
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir = %q\nagree_tos = true\nemail = \"fw@detour.test\"\ndefault_ca = \"sandbox\"\n\n", filepath.Join(s.dir, "state"))
	fmt.Fprintf(&b, "[ca.sandbox]\ndirectory = %q\nroot_bundle = %q\n\n", s.info.Directory, s.info.Roots)
	fmt.Fprintf(&b, "[path.fw]\nkind = \"standalone\"\nlisten = \":80\"\nfirewall = %q\nfirewall_timeout = %q\n%s", s.b.name, timeout, s.b.extra)
	for i, n := range s.names {
		fmt.Fprintf(&b, "\n[[certificate]]\nname = \"site%d\"\ndomains = [%q]\nprofile = \"shortlived\"\npaths = [\"fw\"]\n", i, n)
	}
	s.cfg = filepath.Join(s.dir, "detour.toml")
	if err := os.WriteFile(s.cfg, []byte(b.String()), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// command returns detour with args, run in the web namespace.
func (s *site) command(env []string, args ...string) *exec.Cmd {
	full := append([]string{"--config", s.cfg, "--resolver", s.info.DNS}, args...)
	cmd := s.web.Command(detourBin, full...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// detour runs detour to completion in the web namespace and fails the test
// unless it exits 0.
func (s *site) detour(args ...string) string {
	s.t.Helper()
	var out bytes.Buffer
	cmd := s.command(nil, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	begin := time.Now()
	if err := cmd.Run(); err != nil {
		s.t.Fatalf("detour %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	s.t.Logf("detour %s took %v", strings.Join(args, " "), time.Since(begin).Round(time.Millisecond))
	return out.String()
}

// reuseTries bounds the retries of a renewal for which the CA reused an
// authorization that was already valid: Pebble does so for about 1% of
// orders even when told not to, and then nothing is validated, so no
// window opens.
const reuseTries = 3

// renew runs `detour renew --force name` until the CA validates a
// challenge (and so a window opens), at most reuseTries times.
func (s *site) renew(name string) string {
	s.t.Helper()
	var out string
	for range reuseTries {
		out = s.detour("renew", "--force", name)
		if strings.Contains(out, "challenge presented") {
			return out
		}
		s.t.Logf("the CA reused a valid authorization; renewing again")
	}
	s.t.Fatalf("the CA reused the authorization %d times in a row:\n%s", reuseTries, out)
	return ""
}

// held is a detour process stopped with its firewall window open.
type held struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed when it has exited; err is then set
	err    error
	stderr *bytes.Buffer // complete once done is closed
	opened time.Time     // when it said the window was open
}

// wait returns how the process ended.
func (h *held) wait() error {
	<-h.done
	return h.err
}

// holdOpen starts `detour renew --force NAME` with the test hook that
// stops it right after its window opens, and returns once it has said so.
func (s *site) holdOpen(name string) *held {
	s.t.Helper()
	for range reuseTries - 1 {
		if h := s.tryHoldOpen(name); h != nil {
			return h
		}
		s.t.Logf("the CA reused a valid authorization; renewing again")
	}
	if h := s.tryHoldOpen(name); h != nil {
		return h
	}
	s.t.Fatalf("the CA reused the authorization %d times in a row", reuseTries)
	return nil
}

// tryHoldOpen is holdOpen once; it returns nil when the renewal succeeded
// without a challenge to present (the CA reused a valid authorization).
func (s *site) tryHoldOpen(name string) *held {
	s.t.Helper()
	cmd := s.command([]string{"DETOUR_TEST_HOLD_FIREWALL=1"}, "renew", "--force", name)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	h := &held{cmd: cmd, done: make(chan struct{}), stderr: &bytes.Buffer{}}
	s.t.Cleanup(func() { _ = cmd.Process.Kill(); <-h.done })
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			h.stderr.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "firewall window open; holding") {
				lines <- sc.Text()
			}
		}
		close(lines)
		h.err = cmd.Wait()
		close(h.done)
	}()
	select {
	case _, ok := <-lines:
		if !ok {
			err := h.wait()
			if err == nil && !strings.Contains(h.stderr.String(), "challenge presented") {
				return nil
			}
			s.t.Fatalf("detour ended before its window opened: %v\n%s", err, h.stderr)
		}
	case <-time.After(time.Minute):
		s.t.Fatalf("detour did not open its window within a minute\n%s", h.stderr)
	}
	h.opened = time.Now()
	go func() {
		for range lines { // keep draining stderr
		}
	}()
	return h
}

// probe says what a connection from the ca namespace to web:80 meets.
func (s *site) probe() string { return s.ca.Probe(s.t, web80, probeWait) }

// wantPort fails the test unless web:80 is in state.
func (s *site) wantPort(when, state string) {
	s.t.Helper()
	if got := s.probe(); got != state {
		s.t.Fatalf("%s: web:80 is %s from the ca namespace, want %s", when, got, state)
	}
}

// wantRulesUnchanged fails the test unless the user's rules are as before.
func (s *site) wantRulesUnchanged(when string) {
	s.t.Helper()
	if got := s.b.rules(s.t, s.web); got != s.baseline {
		s.t.Errorf("%s the user's rules changed:\n--- now\n%s\n--- before\n%s", when, got, s.baseline)
	}
}

// TestWindow is the acceptance test of the firewall window, for each
// backend: the port is closed before, a renewal succeeds through the
// window, the port is closed right after, a window whose Detour is killed
// with SIGKILL closes by itself, and the user's rules are as they were.
func TestWindow(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			const timeout = 4 * time.Second
			s := newSite(t, b, timeout.String(), "fw.e2e.detour.test")

			s.wantPort("before the renewal", nstest.Dropped)
			s.detour("issue", "site0")
			s.wantPort("right after issuing", nstest.Dropped)
			s.wantRulesUnchanged("after issuing,")
			out := s.renew("site0")
			if !strings.Contains(out, "firewall window open") || !strings.Contains(out, "firewall window closed") {
				t.Errorf("the renewal's log does not show the window:\n%s", out)
			}
			s.wantPort("right after the renewal", nstest.Dropped)
			s.wantRulesUnchanged("after the renewal,")
			if st := s.detour("firewall", "status"); !strings.Contains(st, "No firewall window is open") {
				t.Errorf("firewall status after the renewal:\n%s", st)
			}

			// SIGKILL with the window open.
			h := s.holdOpen("site0")
			// Nothing listens yet (the hook stops before the solver binds
			// :80): a reset, not a timeout, shows the firewall lets it in.
			s.wantPort("with the window held open", nstest.Refused)
			if st := s.detour("firewall", "status"); !strings.Contains(st, "80/tcp") || !strings.Contains(st, "fw.e2e.detour.test (pid") {
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
			if b.kernelTimeout {
				for s.probe() != nstest.Dropped {
					if time.Since(h.opened) > timeout+3*time.Second {
						t.Fatalf("port still open %v after the window opened, with a %v timeout", time.Since(h.opened), timeout)
					}
					time.Sleep(100 * time.Millisecond) // polling the kernel: nothing to wait on
				}
				closed := time.Since(h.opened)
				t.Logf("%s: the kernel closed the port %v after the window opened (timeout %v), Detour dead", b.name, closed.Round(10*time.Millisecond), timeout)
				if closed < timeout-time.Second {
					t.Errorf("closed after %v, before the %v timeout: something else closed it", closed, timeout)
				}
			} else {
				// ufw has no timeout: the rule stays until Detour runs
				// again and sweeps it.
				time.Sleep(timeout) // past the deadline of the killed run's rule
				s.wantPort("after the deadline (ufw keeps its rule)", nstest.Refused)
				if out := s.detour("firewall", "close"); !strings.Contains(out, "every window Detour held is closed") {
					t.Errorf("firewall close said:\n%s", out)
				}
				s.wantPort("after detour firewall close", nstest.Dropped)
				s.wantRulesUnchanged("after detour firewall close,")
			}
			// The next run sweeps what the killed one left, and works.
			s.renew("site0")
			s.wantPort("after the next renewal", nstest.Dropped)
			s.wantRulesUnchanged("after the killed run and the next renewal,")
		})
	}
}

// TestTwoHolders: a second Detour renewing another certificate through
// the same port while the first holds the window open finishes without
// closing the port under the first; the first closes it when it ends.
func TestTwoHolders(t *testing.T) {
	t.Parallel()
	s := newSite(t, backends[0], "2m", "one.e2e.detour.test", "two.e2e.detour.test")
	s.detour("issue", "site0")
	first := s.holdOpen("site0")
	out := s.detour("issue", "site1")
	if !strings.Contains(out, "another Detour run still holds it") {
		t.Errorf("the second run did not leave the window to the first:\n%s", out)
	}
	s.wantPort("after the second run finished, with the first holding", nstest.Refused)
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := first.wait(); err == nil {
		t.Error("the interrupted renewal exited 0")
	}
	if !strings.Contains(first.stderr.String(), "firewall window closed") {
		t.Errorf("the first run did not close its window when interrupted:\n%s", first.stderr)
	}
	s.wantPort("after both ended", nstest.Dropped)
	s.wantRulesUnchanged("after both runs,")
}

// countingCA is a TCP listener standing in for the CA: it counts the
// connections it gets.
type countingCA struct {
	ln net.Listener
	mu sync.Mutex
	n  int
}

func newCountingCA(t *testing.T, ns *nstest.NS) *countingCA {
	c := &countingCA{}
	listen := func() {
		var err error
		if c.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	if ns != nil {
		ns.In(t, listen)
	} else {
		listen()
	}
	t.Cleanup(func() { c.ln.Close() })
	go func() {
		for {
			conn, err := c.ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.n++
			c.mu.Unlock()
			conn.Close()
		}
	}()
	return c
}

func (c *countingCA) url() string { return "https://" + c.ln.Addr().String() + "/dir" }

func (c *countingCA) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// writeBadConfig writes a config whose CA is ca and whose only path is a
// firewall window on firewall.
func writeBadConfig(t *testing.T, dir, ca, firewall string) string {
	cfg := filepath.Join(dir, "detour.toml")
	body := fmt.Sprintf("state_dir = %q\nagree_tos = true\nemail = \"fw@detour.test\"\n\n"+
		"[path.fw]\nkind = \"standalone\"\nlisten = \":80\"\nfirewall = %q\n\n"+
		"[[certificate]]\nname = \"bad\"\ndomains = [\"bad.e2e.detour.test\"]\nca = %q\npaths = [\"fw\"]\n",
		filepath.Join(dir, "state"), firewall, ca)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestNotRoot: without root (no CAP_NET_ADMIN) Detour fails with an error
// that says so before it sends anything to the CA.
func TestNotRoot(t *testing.T) {
	for _, fw := range []string{"nftables", "iptables-legacy", "ufw"} {
		t.Run(fw, func(t *testing.T) {
			t.Parallel()
			nstest.RequireRoot(t)
			ca := newCountingCA(t, nil)
			dir := worldDir(t)
			cfg := writeBadConfig(t, dir, ca.url(), fw)
			cmd := exec.Command(detourBin, "--config", cfg, "issue", "bad")
			cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("detour as nobody succeeded:\n%s", out)
			}
			for _, want := range []string{"no permission to change the firewall", "root", "preflight"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if n := ca.count(); n != 0 {
				t.Errorf("the CA got %d connections; want none before the firewall check passes", n)
			}
		})
	}
}

// TestUnsafeRuleset: a ruleset managed by iptables-nft is not changed by
// the nftables backend: Detour explains, changes nothing and does not ask
// the CA.
func TestUnsafeRuleset(t *testing.T) {
	t.Parallel()
	web := nstest.New(t)
	iptablesUser("iptables-nft")(t, web)
	before := web.Run(t, "nft", "-s", "list", "ruleset")
	ca := newCountingCA(t, web)
	dir := worldDir(t)
	cfg := writeBadConfig(t, dir, ca.url(), "nftables")
	out, err := web.Command(detourBin, "--config", cfg, "issue", "bad").CombinedOutput()
	if err == nil {
		t.Fatalf("detour succeeded:\n%s", out)
	}
	for _, want := range []string{"cannot be changed safely", "managed by iptables-nft", `firewall = \"iptables-nft\"`, "nothing was changed", "preflight"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if after := web.Run(t, "nft", "-s", "list", "ruleset"); after != before {
		t.Errorf("the ruleset changed:\n%s\nwas\n%s", after, before)
	}
	if n := ca.count(); n != 0 {
		t.Errorf("the CA got %d connections", n)
	}
}
