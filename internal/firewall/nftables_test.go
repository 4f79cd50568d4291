package firewall

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// probeWait is how long a probe waits for an answer before calling the
// port dropped; answers inside a namespace take microseconds.
const probeWait = 300 * time.Millisecond

// testWindow is a window on the listener's port.
func testWindow(port int, timeout time.Duration) Window {
	return Window{Port: port, Family: Inet, Proto: ProtoTCP, Timeout: timeout, Identifier: "fw.detour.test"}
}

func portOf(addr string) int {
	var p int
	for _, c := range addr[strings.LastIndexByte(addr, ':')+1:] {
		p = p*10 + int(c-'0')
	}
	return p
}

// TestNftablesWindow opens and closes a window in real kernels' rulesets:
// packets to the port pass only while it is open, and the user's ruleset
// is the same afterwards.
func TestNftablesWindow(t *testing.T) {
	tests := []struct {
		name    string
		ruleset string
		// blocked: the user's ruleset drops the port when no window is open.
		blocked bool
		// companion: Detour must add its rule to this user chain.
		companion string
	}{
		{name: "no ruleset", ruleset: "", blocked: false},
		{name: "inet policy drop", ruleset: userRuleset, blocked: true, companion: "table inet filter"},
		{name: "ip policy drop", blocked: true, companion: "table ip fw4", ruleset: `table ip fw4 {
	chain in {
		type filter hook input priority 0; policy drop;
		ct state established,related accept
	}
}
`},
		{name: "accept policy with a final drop rule", blocked: true, companion: "table inet host", ruleset: `table inet host {
	chain input {
		type filter hook input priority filter; policy accept;
		ct state established,related accept
		tcp dport 22 accept
		counter drop
	}
}
`},
		{name: "two tables, one drops", blocked: true, companion: "table ip6 other", ruleset: userRuleset + `table ip6 other {
	chain input {
		type filter hook input priority 10; policy drop;
	}
}
`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := newNetns(t)
			ns.LoadRuleset(t, tc.ruleset)
			ln := ns.Listen(t, "127.0.0.1:0")
			port := portOf(ln.Addr().String())
			addr := ln.Addr().String()
			before := ns.Ruleset(t)
			closed := "open"
			if tc.blocked {
				closed = "dropped"
			}
			if got := ns.Probe(t, addr, probeWait); got != closed {
				t.Fatalf("before the window the port is %s, want %s", got, closed)
			}
			b := newNftables(Options{NetNS: ns.FD}.withDefaults())
			w := testWindow(port, time.Minute)
			ctx := t.Context()
			if err := b.Check(ctx, w); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if after := ns.Ruleset(t); after != before {
				t.Fatalf("Check changed the ruleset:\n%s", after)
			}
			if err := b.Open(ctx, w); err != nil {
				t.Fatalf("Open: %v", err)
			}
			if got := ns.Probe(t, addr, probeWait); got != "open" {
				t.Fatalf("with the window open the port is %s\n%s", got, ns.Run(t, "nft", "-s", "list", "ruleset"))
			}
			full := ns.Run(t, "nft", "-s", "list", "ruleset")
			if !strings.Contains(full, "table inet detour {") || !strings.Contains(full, "flags timeout") {
				t.Errorf("Detour's table with a timeout set is missing:\n%s", full)
			}
			if tc.companion != "" {
				i := strings.Index(full, tc.companion+" {")
				if i < 0 || !strings.Contains(full[i:], `comment "`+nftRuleComment+`"`) || !strings.Contains(full[i:], "@"+nftUserSet) {
					t.Errorf("no rule of Detour's in %s:\n%s", tc.companion, full)
				}
			}
			holes, err := b.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(holes) != 2 || holes[0].Port != port || holes[0].Until.Before(time.Now().Add(50*time.Second)) {
				t.Errorf("Status = %+v, want port %d for ip and ip6 until about a minute from now", holes, port)
			}
			if err := b.Close(ctx, w); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if got := ns.Probe(t, addr, probeWait); got != closed {
				t.Errorf("after the window the port is %s, want %s", got, closed)
			}
			after := ns.Run(t, "nft", "-s", "list", "ruleset")
			if after != before {
				t.Errorf("the ruleset differs after the window:\n--- before\n%s\n--- after\n%s", before, after)
			}
		})
	}
}

// TestNftablesExpires opens a short window and lets the kernel close it:
// nothing of Detour's runs in between. The next Sweep removes what is
// left.
func TestNftablesExpires(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.LoadRuleset(t, userRuleset)
	ln := ns.Listen(t, "127.0.0.1:0")
	addr := ln.Addr().String()
	before := ns.Ruleset(t)
	b := newNftables(Options{NetNS: ns.FD}.withDefaults())
	const timeout = 2 * time.Second
	opened := time.Now()
	if err := b.Open(t.Context(), testWindow(portOf(addr), timeout)); err != nil {
		t.Fatal(err)
	}
	// Sweep must not touch a live window.
	if err := b.Sweep(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if got := ns.Probe(t, addr, probeWait); got != "open" {
		t.Fatalf("port is %s with the window open", got)
	}
	var closedAfter time.Duration
	for {
		// Polling the kernel's state: there is no event to wait for.
		if got := ns.Probe(t, addr, probeWait); got == "dropped" {
			closedAfter = time.Since(opened)
			break
		}
		if time.Since(opened) > timeout+5*time.Second {
			t.Fatalf("port still open %v after a %v window", time.Since(opened), timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the kernel closed the port %v after it opened (timeout %v)", closedAfter.Round(time.Millisecond), timeout)
	if closedAfter < timeout-probeWait {
		t.Errorf("port closed after %v, before its %v timeout", closedAfter, timeout)
	}
	if err := b.Sweep(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if full := ns.Run(t, "nft", "-s", "list", "ruleset"); full != before {
		t.Errorf("after the sweep the ruleset is\n%s\nwant\n%s", full, before)
	}
}

// TestNftablesNeverShortens: a second, shorter Open keeps the longer
// deadline; a longer one extends it.
func TestNftablesNeverShortens(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	b := newNftables(Options{NetNS: ns.FD}.withDefaults())
	ctx := t.Context()
	until := func() time.Duration {
		holes, err := b.Status(ctx)
		if err != nil || len(holes) == 0 {
			t.Fatalf("Status = %v, %v", holes, err)
		}
		return time.Until(holes[0].Until)
	}
	w := Window{Port: 8080, Family: IPv4, Timeout: time.Minute}
	if err := b.Open(ctx, w); err != nil {
		t.Fatal(err)
	}
	w.Timeout = 5 * time.Second
	if err := b.Open(ctx, w); err != nil {
		t.Fatal(err)
	}
	if left := until(); left < 50*time.Second {
		t.Errorf("a shorter Open cut the window to %v", left)
	}
	w.Timeout = 10 * time.Minute
	if err := b.Open(ctx, w); err != nil {
		t.Fatal(err)
	}
	if left := until(); left < 9*time.Minute {
		t.Errorf("a longer Open left %v", left)
	}
	if err := b.Close(ctx, w); err != nil {
		t.Fatal(err)
	}
	if holes, _ := b.Status(ctx); len(holes) != 0 {
		t.Errorf("after Close: %+v", holes)
	}
}

// TestNftablesUnsafe: rulesets Detour must not change are refused by
// Check and Open with an explanation, and left exactly as they were.
func TestNftablesUnsafe(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, ns *netns)
		want  string
	}{
		{"iptables-nft", func(t *testing.T, ns *netns) {
			requireCommand(t, "iptables-nft", "iptables")
			ns.Run(t, "iptables-nft", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED", "-j", "ACCEPT")
			ns.Run(t, "iptables-nft", "-P", "INPUT", "DROP")
		}, `firewall = "iptables-nft"`},
		{"iptables-nft without xt matches", func(t *testing.T, ns *netns) {
			requireCommand(t, "iptables-nft", "iptables")
			ns.Run(t, "iptables-nft", "-P", "INPUT", "DROP")
		}, "managed by iptables-nft"},
		{"firewalld's table", func(t *testing.T, ns *netns) {
			ns.LoadRuleset(t, "table inet firewalld {\n\tchain filter_INPUT {\n\t\ttype filter hook input priority filter + 10; policy accept;\n\t\treject with icmpx admin-prohibited\n\t}\n}\n")
		}, `firewall = "firewalld"`},
		{"ingress drop", func(t *testing.T, ns *netns) {
			ns.LoadRuleset(t, "table netdev edge {\n\tchain in {\n\t\ttype filter hook ingress device \"lo\" priority 0; policy drop;\n\t}\n}\n")
		}, "ingress"},
		{"prerouting drop", func(t *testing.T, ns *netns) {
			ns.LoadRuleset(t, "table inet raw {\n\tchain pre {\n\t\ttype filter hook prerouting priority -300; policy drop;\n\t}\n}\n")
		}, "prerouting"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := newNetns(t)
			tc.setup(t, ns)
			before := ns.Run(t, "nft", "-s", "list", "ruleset")
			b := newNftables(Options{NetNS: ns.FD}.withDefaults())
			w := testWindow(80, time.Minute)
			for op, f := range map[string]func(context.Context, Window) error{"Check": b.Check, "Open": b.Open} {
				err := f(t.Context(), w)
				if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nothing was changed") {
					t.Errorf("%s = %v, want ErrUnsafe mentioning %q", op, err, tc.want)
				}
			}
			if after := ns.Run(t, "nft", "-s", "list", "ruleset"); after != before {
				t.Errorf("the ruleset changed:\n%s\nwas\n%s", after, before)
			}
		})
	}
}

// TestNftablesKernelErrors maps what the kernel answers when Detour may
// not use nf_tables, or the kernel has none, to errors that say what to
// do. The kernel's answers are replayed: this machine has nf_tables and
// the test runs as root.
func TestNftablesKernelErrors(t *testing.T) {
	tests := []struct {
		errno unix.Errno
		want  error
		hint  string
	}{
		{unix.EPERM, ErrPermission, "CAP_NET_ADMIN"},
		{unix.EPROTONOSUPPORT, ErrUnsupported, "modprobe nf_tables"},
		{unix.EINVAL, ErrUnsupported, "modprobe nf_tables"},
		{unix.EOPNOTSUPP, ErrUnsupported, `firewall = "iptables-legacy"`},
	}
	for _, tc := range tests {
		t.Run(tc.errno.Error(), func(t *testing.T) {
			b := newNftables(Options{}.withDefaults())
			b.dial = func(req []netlink.Message) ([]netlink.Message, error) {
				// An error reply: the negated errno, then the request's
				// header (left zero).
				data := make([]byte, 4+16)
				binary.NativeEndian.PutUint32(data, uint32(-int32(tc.errno)))
				return []netlink.Message{{Header: netlink.Header{Type: netlink.Error, Sequence: req[0].Header.Sequence, PID: req[0].Header.PID}, Data: data}}, nil
			}
			err := b.Check(t.Context(), testWindow(80, time.Minute))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.hint) {
				t.Errorf("Check = %v, want %v mentioning %q", err, tc.want, tc.hint)
			}
		})
	}
}

func TestNftKey(t *testing.T) {
	for _, f := range []Family{IPv4, IPv6} {
		for _, port := range []int{1, 80, 443, 65535} {
			gf, gp, ok := parseNftKey(nftKey(f, port))
			if !ok || gf != f || gp != port {
				t.Errorf("parseNftKey(nftKey(%s, %d)) = %s, %d, %v", f, port, gf, gp, ok)
			}
		}
	}
}
