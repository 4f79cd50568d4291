package firewall

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireRoot fails the test when it cannot change firewalls: these tests
// build network namespaces and run in CI as root; they never skip.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test creates network namespaces and changes their firewalls: run it as root (CI does)")
	}
}

// requireCommand fails the test when a command is missing, naming the
// Debian package that has it.
func requireCommand(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is not installed: install the Debian package %q (./scripts/test.sh does this)", name, pkg)
	}
}

// netns is a network namespace the test created.
type netns struct {
	name string
	fd   int
}

// newNetns creates a fresh network namespace with its loopback up; it is
// deleted when the test ends.
func newNetns(t *testing.T) *netns {
	t.Helper()
	requireRoot(t)
	requireCommand(t, "ip", "iproute2")
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	n := &netns{name: "dtfw-" + hex.EncodeToString(b)}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", n.name, err, out)
	}
	t.Cleanup(func() {
		if n.fd > 0 {
			unix.Close(n.fd)
		}
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", n.name, err, out)
		}
	})
	fd, err := unix.Open("/run/netns/"+n.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	n.fd = fd
	n.run(t, "ip", "link", "set", "lo", "up")
	return n
}

// run runs a command inside the namespace and returns its output.
func (n *netns) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), n.name, err, out)
	}
	return string(out)
}

// runner returns a Runner that runs commands inside the namespace.
func (n *netns) runner() Runner { return nsRunner{n.name} }

type nsRunner struct{ ns string }

func (r nsRunner) Run(ctx context.Context, c Command) ([]byte, error) {
	out, err := ExecRunner{}.Run(ctx, Command{Name: "ip", Args: append([]string{"netns", "exec", r.ns, c.Name}, c.Args...), Env: c.Env})
	var ce *CommandError
	if errors.As(err, &ce) {
		ce.Command = c
	}
	return out, err
}

// in runs f on an OS thread that has entered the namespace; sockets f
// creates belong to the namespace for good. The thread is discarded
// afterwards.
func (n *netns) in(t *testing.T, f func()) {
	t.Helper()
	var wg sync.WaitGroup
	var err error
	wg.Go(func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err = unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			return
		}
		f()
	})
	wg.Wait()
	if err != nil {
		t.Fatalf("entering %s: %v", n.name, err)
	}
}

// listen binds a TCP listener on addr inside the namespace that accepts
// and closes connections until the test ends.
func (n *netns) listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	var err error
	n.in(t, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

// probe dials addr from inside the namespace: "open" when it connects,
// "refused" on a reset, "dropped" when the SYN goes unanswered for wait.
func (n *netns) probe(t *testing.T, addr string, wait time.Duration) string {
	t.Helper()
	var c net.Conn
	var err error
	n.in(t, func() {
		d := net.Dialer{Timeout: wait}
		c, err = d.Dial("tcp", addr)
	})
	switch {
	case err == nil:
		c.Close()
		return "open"
	case errors.Is(err, unix.ECONNREFUSED):
		return "refused"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "dropped"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "dropped"
	}
	return fmt.Sprintf("error: %v", err)
}

// userRuleset is a user's nftables ruleset whose input chain drops what
// it does not accept; loopback is not accepted, so connections inside the
// namespace show what the firewall lets through.
const userRuleset = `table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		tcp dport 22 accept
	}
}
`

// loadRuleset replaces the namespace's ruleset with rs.
func (n *netns) loadRuleset(t *testing.T, rs string) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "ruleset-*.nft")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("flush ruleset\n" + rs); err != nil {
		t.Fatal(err)
	}
	f.Close()
	n.run(t, "nft", "-f", f.Name())
}

// ruleset returns `nft -s list ruleset` (no counters) without Detour's
// own table.
func (n *netns) ruleset(t *testing.T) string {
	t.Helper()
	return withoutTable(n.run(t, "nft", "-s", "list", "ruleset"), "table inet detour {")
}

// withoutTable removes the table starting with header from an nft
// listing.
func withoutTable(rs, header string) string {
	var out []string
	skip := false
	for _, line := range strings.Split(rs, "\n") {
		switch {
		case line == header:
			skip = true
		case skip && line == "}":
			skip = false
		case !skip:
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// Addresses of a namespace pair; they exist only inside the namespaces
// the test creates.
const (
	caAddr4  = "10.213.0.1"
	webAddr4 = "10.213.0.2"
	caAddr6  = "fd00:d7::1"
	webAddr6 = "fd00:d7::2"
)

// newPair creates two namespaces joined by a veth pair: "web", where the
// firewall is changed, and "ca", where connections come from.
func newPair(t *testing.T) (web, ca *netns) {
	t.Helper()
	web, ca = newNetns(t), newNetns(t)
	web.run(t, "ip", "link", "add", "web0", "type", "veth", "peer", "name", "ca0", "netns", ca.name)
	for _, s := range []struct {
		ns        *netns
		dev, a, b string
	}{{web, "web0", webAddr4, webAddr6}, {ca, "ca0", caAddr4, caAddr6}} {
		s.ns.run(t, "ip", "addr", "add", s.a+"/30", "dev", s.dev)
		s.ns.run(t, "ip", "-6", "addr", "add", s.b+"/126", "dev", s.dev, "nodad")
		s.ns.run(t, "ip", "link", "set", s.dev, "up")
	}
	return web, ca
}
