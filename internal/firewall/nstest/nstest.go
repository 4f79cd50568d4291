// Package nstest builds small networks of Linux network namespaces for
// tests of firewall windows: namespaces the test creates and deletes,
// joined by veth pairs whose addresses exist only inside them, with
// helpers to run commands, listen and probe from inside a namespace, and
// to run the test binary again there as a helper process (Helper).
//
// Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); tests
// fail, never skip, without it: CI runs them as root.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Addresses of a pair made by NewPair. They exist only inside the two
// namespaces.
const (
	CAAddr4  = "10.213.0.1"
	WebAddr4 = "10.213.0.2"
	CAAddr6  = "fd00:d7::1"
	WebAddr6 = "fd00:d7::2"
)

// RequireRoot fails the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test creates network namespaces and changes their firewalls: run it as root (CI does)")
	}
}

// RequireCommand fails the test when a command is missing, naming the
// Debian package that has it.
func RequireCommand(t testing.TB, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is not installed: install the Debian package %q (./scripts/test.sh does this)", name, pkg)
	}
}

// NS is a network namespace the test created.
type NS struct {
	Name string // as `ip netns` knows it
	FD   int    // an open descriptor of the namespace
}

// New creates a fresh network namespace with its loopback up; it is
// deleted when the test ends.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	RequireCommand(t, "ip", "iproute2")
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	n := &NS{Name: "detour-" + hex.EncodeToString(b)}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", n.Name, err, out)
	}
	t.Cleanup(func() {
		if n.FD > 0 {
			unix.Close(n.FD)
		}
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", n.Name, err, out)
		}
	})
	fd, err := unix.Open("/run/netns/"+n.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	n.FD = fd
	n.Run(t, "ip", "link", "set", "lo", "up")
	return n
}

// NewPair creates two namespaces joined by a veth pair: web (WebAddr4,
// WebAddr6), whose firewall the test changes, and ca (CAAddr4, CAAddr6),
// where connections come from.
func NewPair(t testing.TB) (web, ca *NS) {
	t.Helper()
	web, ca = New(t), New(t)
	web.Run(t, "ip", "link", "add", "web0", "type", "veth", "peer", "name", "ca0", "netns", ca.Name)
	for _, s := range []struct {
		ns        *NS
		dev, a, b string
	}{{web, "web0", WebAddr4, WebAddr6}, {ca, "ca0", CAAddr4, CAAddr6}} {
		s.ns.Run(t, "ip", "addr", "add", s.a+"/30", "dev", s.dev)
		s.ns.Run(t, "ip", "-6", "addr", "add", s.b+"/126", "dev", s.dev, "nodad")
		s.ns.Run(t, "ip", "link", "set", s.dev, "up")
	}
	return web, ca
}

// Command returns a command that runs name inside the namespace.
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its output,
// failing the test when it fails.
func (n *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return string(out)
}

// In runs f on an OS thread that has entered the namespace: sockets f
// creates belong to the namespace for good. The thread is discarded
// afterwards.
func (n *NS) In(t testing.TB, f func()) {
	t.Helper()
	var wg sync.WaitGroup
	var err error
	wg.Go(func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err = unix.Setns(n.FD, unix.CLONE_NEWNET); err != nil {
			return
		}
		f()
	})
	wg.Wait()
	if err != nil {
		t.Fatalf("entering %s: %v", n.Name, err)
	}
}

// Listen binds a TCP listener on addr inside the namespace that accepts
// and closes connections until the test ends.
func (n *NS) Listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	var err error
	n.In(t, func() { ln, err = net.Listen("tcp", addr) })
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

// Probe results.
const (
	Open    = "open"    // the connection was accepted
	Refused = "refused" // a reset: the firewall let the SYN through, nothing listens
	Dropped = "dropped" // no answer within the wait: a firewall dropped it
)

// Probe dials addr from inside the namespace and says what happened:
// Open, Refused, Dropped, or "error: ...".
func (n *NS) Probe(t testing.TB, addr string, wait time.Duration) string {
	t.Helper()
	var c net.Conn
	var err error
	n.In(t, func() {
		d := net.Dialer{Timeout: wait}
		c, err = d.Dial("tcp", addr)
	})
	switch {
	case err == nil:
		c.Close()
		return Open
	case errors.Is(err, unix.ECONNREFUSED):
		return Refused
	}
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return Dropped
	}
	return fmt.Sprintf("error: %v", err)
}

// LoadRuleset replaces the namespace's nftables ruleset with rs.
func (n *NS) LoadRuleset(t testing.TB, rs string) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "ruleset-*.nft")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("flush ruleset\n" + rs); err != nil {
		t.Fatal(err)
	}
	f.Close()
	n.Run(t, "nft", "-f", f.Name())
}

// Ruleset returns `nft -s list ruleset` (no counters) without Detour's own
// table: the user's rules.
func (n *NS) Ruleset(t testing.TB) string {
	t.Helper()
	return WithoutTable(n.Run(t, "nft", "-s", "list", "ruleset"), "table inet detour {")
}

// WithoutTable removes the table starting with the line header from an
// nft listing.
func WithoutTable(rs, header string) string {
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

// WithUfw gives the namespace its own copy of /etc/ufw: `ip netns exec`
// bind-mounts /etc/netns/NAME/ufw over /etc/ufw, so the host's ufw is not
// touched. The copy is removed when the test ends.
func (n *NS) WithUfw(t testing.TB) {
	t.Helper()
	RequireCommand(t, "ufw", "ufw")
	dir := filepath.Join("/etc/netns", n.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if out, err := exec.Command("cp", "-a", "/etc/ufw", filepath.Join(dir, "ufw")).CombinedOutput(); err != nil {
		t.Fatalf("copying /etc/ufw: %v\n%s", err, out)
	}
}
