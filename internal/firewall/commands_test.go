package firewall

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestIptablesWindow opens and closes windows with the legacy and nft
// variants of iptables and ip6tables in a namespace whose INPUT policy is
// DROP, and lets one expire by the kernel's xt_time match.
func TestIptablesWindow(t *testing.T) {
	for _, variant := range []string{NameIptablesLegacy, NameIptablesNft} {
		for _, fam := range []Family{IPv4, IPv6} {
			t.Run(variant+"/"+string(fam), func(t *testing.T) {
				t.Parallel()
				requireCommand(t, variant, "iptables")
				web, ca := newPair(t)
				b := newIptables(variant, Options{Runner: runnerIn(web)}.withDefaults())
				bin := b.bin(fam)
				web.Run(t, bin, "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
				host := webAddr4
				if fam == IPv6 {
					host = webAddr6
					// Neighbour discovery.
					web.Run(t, bin, "-A", "INPUT", "-p", "ipv6-icmp", "-j", "ACCEPT")
				}
				web.Run(t, bin, "-P", "INPUT", "DROP")
				ln := web.Listen(t, net.JoinHostPort(host, "0"))
				addr := ln.Addr().String()
				w := Window{Port: portOf(addr), Family: fam, Timeout: time.Minute, Identifier: "fw.detour.test"}
				before := web.Run(t, bin, "-S")
				if got := ca.Probe(t, addr, probeWait); got != "dropped" {
					t.Fatalf("before: port is %s", got)
				}
				ctx := t.Context()
				if err := b.Check(ctx, w); err != nil {
					t.Fatal(err)
				}
				if err := b.Open(ctx, w); err != nil {
					t.Fatal(err)
				}
				if got := ca.Probe(t, addr, probeWait); got != "open" {
					t.Fatalf("window open: port is %s\n%s", got, web.Run(t, bin, "-S"))
				}
				if err := b.Open(ctx, w); err != nil { // idempotent
					t.Fatal(err)
				}
				if rules := web.Run(t, bin, "-S", "INPUT"); strings.Count(rules, tag) != 1 {
					t.Errorf("want exactly one rule of Detour's:\n%s", rules)
				}
				holes, err := b.Status(ctx)
				if err != nil || len(holes) != 1 || holes[0].Family != fam || holes[0].Port != w.Port {
					t.Errorf("Status = %+v, %v", holes, err)
				}
				if err := b.Close(ctx, w); err != nil {
					t.Fatal(err)
				}
				if got := ca.Probe(t, addr, probeWait); got != "dropped" {
					t.Errorf("after Close: port is %s", got)
				}
				if after := web.Run(t, bin, "-S"); after != before {
					t.Errorf("rules differ after the window:\n%s\nwant\n%s", after, before)
				}

				// Expiry by the kernel: nothing of Detour's runs.
				w.Timeout = time.Second
				opened := time.Now()
				if err := b.Open(ctx, w); err != nil {
					t.Fatal(err)
				}
				for ca.Probe(t, addr, probeWait) != "dropped" {
					if time.Since(opened) > 6*time.Second {
						t.Fatalf("the rule still accepts %v after it opened for %v", time.Since(opened), w.Timeout)
					}
					time.Sleep(100 * time.Millisecond) // polling the kernel: no event to wait for
				}
				t.Logf("%s closed the port by itself %v after it opened (timeout 1s, deadlines in whole seconds)", bin, time.Since(opened).Round(time.Millisecond))
				if err := b.Sweep(ctx, false); err != nil {
					t.Fatal(err)
				}
				if after := web.Run(t, bin, "-S"); after != before {
					t.Errorf("rules differ after the sweep:\n%s\nwant\n%s", after, before)
				}
			})
		}
	}
}

// TestUfwWindow opens and closes a window through ufw in a namespace
// with its own ufw configuration, and sweeps a rule a killed run left.
func TestUfwWindow(t *testing.T) {
	t.Parallel()
	web, ca := newPair(t)
	web.WithUfw(t)
	web.Run(t, "ufw", "--force", "enable")
	web.Run(t, "ufw", "allow", "22/tcp")
	now := time.Now()
	b := newUfw(Options{Runner: runnerIn(web), Now: func() time.Time { return now }}.withDefaults())
	ln4 := web.Listen(t, webAddr4+":0")
	port := portOf(ln4.Addr().String())
	ln6 := web.Listen(t, net.JoinHostPort(webAddr6, strconv.Itoa(port)))
	addrs := []string{ln4.Addr().String(), ln6.Addr().String()}
	before := web.Run(t, "ufw", "status", "numbered")
	for _, a := range addrs {
		if got := ca.Probe(t, a, probeWait); got != "dropped" {
			t.Fatalf("before: %s is %s", a, got)
		}
	}
	ctx := t.Context()
	w := Window{Port: port, Family: Inet, Timeout: time.Minute}
	if err := b.Check(ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := b.Open(ctx, w); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if got := ca.Probe(t, a, probeWait); got != "open" {
			t.Errorf("window open: %s is %s\n%s", a, got, web.Run(t, "ufw", "status", "numbered"))
		}
	}
	// A later holder finds the window open: one rule per family still.
	now = now.Add(10 * time.Second)
	if err := b.Open(ctx, w); err != nil {
		t.Fatal(err)
	}
	if st := web.Run(t, "ufw", "status", "numbered"); strings.Count(st, tag) != 2 {
		t.Errorf("want one rule per family:\n%s", st)
	}
	// Closing IPv6 only leaves IPv4 open.
	if err := b.Close(ctx, Window{Port: port, Family: IPv6}); err != nil {
		t.Fatal(err)
	}
	if got := ca.Probe(t, addrs[1], probeWait); got != "dropped" {
		t.Errorf("IPv6 closed: %s is %s", addrs[1], got)
	}
	if got := ca.Probe(t, addrs[0], probeWait); got != "open" {
		t.Errorf("IPv6 closed: %s is %s", addrs[0], got)
	}
	// Past the deadline, Sweep removes what a killed run would have left.
	now = now.Add(2 * time.Minute)
	if err := b.Sweep(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := ca.Probe(t, addrs[0], probeWait); got != "dropped" {
		t.Errorf("after the sweep: %s is %s", addrs[0], got)
	}
	if after := web.Run(t, "ufw", "status", "numbered"); after != before {
		t.Errorf("ufw rules differ:\n%s\nwant\n%s", after, before)
	}
}

// recorder is a Runner that records command lines and answers from a
// script.
type recorder struct {
	mu    sync.Mutex
	calls []string
	reply func(c Command) ([]byte, error)
}

func (r *recorder) Run(_ context.Context, c Command) ([]byte, error) {
	r.mu.Lock()
	r.calls = append(r.calls, c.String())
	r.mu.Unlock()
	if r.reply == nil {
		return nil, nil
	}
	return r.reply(c)
}

func exitCode(c Command, code int, stderr string) error {
	return &CommandError{Command: c, ExitCode: code, Stderr: stderr, Err: errors.New("exit status")}
}

// TestFirewalldCommands checks firewall-cmd command lines: firewalld needs
// a system D-Bus and its daemon, which the tests do not run.
func TestFirewalldCommands(t *testing.T) {
	const rule4 = `rule family="ipv4" port port="80" protocol="tcp" accept`
	const ruleAny = `rule port port="443" protocol="tcp" accept`
	tests := []struct {
		name    string
		run     func(b Backend) error
		present map[string]bool // runtime rules firewalld reports
		perm    map[string]bool // permanent rules
		want    []string
		wantErr error
	}{
		{name: "open ipv4", run: func(b Backend) error {
			return b.Open(t.Context(), Window{Port: 80, Family: IPv4, Timeout: 90 * time.Second})
		},
			want: []string{"firewall-cmd --zone=public --query-rich-rule=" + rule4,
				"firewall-cmd --zone=public --add-rich-rule=" + rule4 + " --timeout=90s"}},
		{name: "open both, already there", present: map[string]bool{ruleAny: true},
			run: func(b Backend) error {
				return b.Open(t.Context(), Window{Port: 443, Family: Inet, Timeout: time.Minute})
			},
			want: []string{"firewall-cmd --zone=public --query-rich-rule=" + ruleAny}},
		{name: "close runtime rule", present: map[string]bool{rule4: true},
			run: func(b Backend) error { return b.Close(t.Context(), Window{Port: 80, Family: IPv4}) },
			want: []string{"firewall-cmd --zone=public --query-rich-rule=" + rule4,
				"firewall-cmd --zone=public --permanent --query-rich-rule=" + rule4,
				"firewall-cmd --zone=public --remove-rich-rule=" + rule4}},
		{name: "close leaves a permanent rule", present: map[string]bool{rule4: true}, perm: map[string]bool{rule4: true},
			run: func(b Backend) error { return b.Close(t.Context(), Window{Port: 80, Family: IPv4}) },
			want: []string{"firewall-cmd --zone=public --query-rich-rule=" + rule4,
				"firewall-cmd --zone=public --permanent --query-rich-rule=" + rule4}},
		{name: "not running", run: func(b Backend) error {
			return b.Check(t.Context(), Window{Port: 80, Family: IPv4, Timeout: time.Minute})
		},
			want: []string{"firewall-cmd --state"}, wantErr: ErrUnsupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{reply: func(c Command) ([]byte, error) {
				args := strings.Join(c.Args, " ")
				_, rule, _ := strings.Cut(args, "rich-rule=")
				switch {
				case args == "--state":
					return nil, exitCode(c, 252, "not running")
				case strings.Contains(args, "--permanent --query-rich-rule="):
					if tc.perm[rule] {
						return []byte("yes\n"), nil
					}
					return []byte("no\n"), exitCode(c, 1, "")
				case strings.Contains(args, "--query-rich-rule="):
					if tc.present[rule] {
						return []byte("yes\n"), nil
					}
					return []byte("no\n"), exitCode(c, 1, "")
				}
				return nil, nil
			}}
			b := newFirewalld(Options{Runner: r, Zone: "public"}.withDefaults())
			err := tc.run(b)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("error = %v, want %v", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.calls, tc.want) {
				t.Errorf("commands:\n  %s\nwant\n  %s", strings.Join(r.calls, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// TestExecBackend runs real open and close scripts and checks what they
// were given.
func TestExecBackend(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	script := "#!/bin/sh\necho \"$DETOUR_FIREWALL_ACTION $DETOUR_FIREWALL_PORT $DETOUR_FIREWALL_PROTO $DETOUR_FIREWALL_FAMILY " +
		"$DETOUR_FIREWALL_IDENTIFIER $DETOUR_FIREWALL_TIMEOUT $DETOUR_FIREWALL_UNTIL\" >> " + log + "\n"
	open, closeCmd := filepath.Join(dir, "open"), filepath.Join(dir, "close")
	for _, p := range []string{open, closeCmd} {
		if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	b, err := New(NameExec, Options{OpenCommand: open, CloseCommand: closeCmd, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	w := Window{Port: 80, Family: IPv6, Timeout: 10 * time.Minute, Identifier: "2001:db8::1"}
	ctx := t.Context()
	for _, f := range []func(context.Context, Window) error{b.Check, b.Open, b.Close} {
		if err := f(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(log)
	want := "open 80 tcp ip6 2001:db8::1 600 2030-01-02T03:14:05Z\nclose 80 tcp ip6 2001:db8::1 600 2030-01-02T03:14:05Z\n"
	if string(got) != want {
		t.Errorf("the scripts saw\n%s\nwant\n%s", got, want)
	}

	if err := os.Chmod(closeCmd, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.Check(ctx, w); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "chmod +x") {
		t.Errorf("Check with a non-executable close command = %v", err)
	}
	if _, err := New(NameExec, Options{OpenCommand: "open.sh", CloseCommand: closeCmd}); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("relative command accepted: %v", err)
	}
}

// TestCommandErrors maps failed commands to errors that say what to do.
func TestCommandErrors(t *testing.T) {
	w := Window{Port: 80, Family: IPv4, Timeout: time.Minute}
	tests := []struct {
		name    string
		backend string
		err     func(c Command) error
		want    error
		hint    string
	}{
		{"iptables not root", NameIptables, func(c Command) error {
			return exitCode(c, 4, "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)")
		}, ErrPermission, "run detour as root"},
		{"iptables missing", NameIptablesLegacy, func(c Command) error { return &CommandError{Command: c, ExitCode: -1, Err: exec.ErrNotFound} },
			ErrUnsupported, `Debian package "iptables"`},
		{"ufw not root", NameUfw, func(c Command) error { return exitCode(c, 1, "ERROR: You need to be root to run this script") },
			ErrPermission, "root"},
		{"firewalld polkit", NameFirewalld, func(c Command) error { return exitCode(c, 11, "Authorization failed.") },
			ErrPermission, "polkit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{reply: func(c Command) ([]byte, error) { return nil, tc.err(c) }}
			b, err := New(tc.backend, Options{Runner: r})
			if err != nil {
				t.Fatal(err)
			}
			err = b.Check(t.Context(), w)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.hint) {
				t.Errorf("Check = %v, want %v mentioning %q", err, tc.want, tc.hint)
			}
		})
	}
}

func TestSplitWords(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		ok   bool
	}{
		{`-A INPUT -p tcp -j ACCEPT`, []string{"-A", "INPUT", "-p", "tcp", "-j", "ACCEPT"}, true},
		{`-m comment --comment "detour-window until=5" -j ACCEPT`, []string{"-m", "comment", "--comment", "detour-window until=5", "-j", "ACCEPT"}, true},
		{`--comment "a \"b\""`, []string{"--comment", `a "b"`}, true},
		{`--comment ""`, []string{"--comment", ""}, true},
		{`--comment "open`, nil, false},
	}
	for _, tc := range tests {
		got, ok := splitWords(tc.in)
		if ok != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("splitWords(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseTag(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"detour-window until=1700000000", 1700000000, true},
		{`[ 2] 80/tcp ALLOW IN Anywhere # detour-window until=42`, 42, true},
		{"detour-window until=12\"", 12, true},
		{"detour-window", 0, false},
		{"someone else's rule", 0, false},
	}
	for _, tc := range tests {
		got, ok := parseTag(tc.in)
		if ok != tc.ok || (ok && got.Unix() != tc.want) {
			t.Errorf("parseTag(%q) = %v, %v", tc.in, got, ok)
		}
	}
}

func TestFamily(t *testing.T) {
	tests := []struct {
		f, g                Family
		union, inter, minus Family
	}{
		{Inet, IPv4, Inet, IPv4, IPv6},
		{IPv4, IPv6, Inet, "", IPv4},
		{IPv6, Inet, Inet, IPv6, ""},
		{IPv4, "", IPv4, "", IPv4},
	}
	for _, tc := range tests {
		if got := tc.f.Union(tc.g); got != tc.union {
			t.Errorf("%q ∪ %q = %q", tc.f, tc.g, got)
		}
		if got := tc.f.Intersect(tc.g); got != tc.inter {
			t.Errorf("%q ∩ %q = %q", tc.f, tc.g, got)
		}
		if got := tc.f.Minus(tc.g); got != tc.minus {
			t.Errorf("%q - %q = %q", tc.f, tc.g, got)
		}
	}
	for in, want := range map[string]Family{"192.0.2.1": IPv4, "2001:db8::1": IPv6, "::ffff:192.0.2.1": IPv4, "example.com": Inet} {
		if got := FamilyFor(in); got != want {
			t.Errorf("FamilyFor(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFirewalldStatus reads Detour-shaped runtime rich rules, leaving out
// permanent ones and rules of other shapes, and Sweep(all) removes them.
func TestFirewalldStatus(t *testing.T) {
	const ours = `rule family="ipv6" port port="80" protocol="tcp" accept`
	const perm = `rule port port="443" protocol="tcp" accept`
	const other = `rule family="ipv4" source address="192.0.2.0/24" port port="80" protocol="tcp" accept`
	r := &recorder{reply: func(c Command) ([]byte, error) {
		args := strings.Join(c.Args, " ")
		switch {
		case args == "--list-rich-rules":
			return []byte(ours + "\n" + perm + "\n" + other + "\n"), nil
		case args == "--permanent --query-rich-rule="+perm:
			return []byte("yes\n"), nil
		case strings.Contains(args, "--query-rich-rule="):
			return []byte("no\n"), exitCode(c, 1, "")
		}
		return nil, nil
	}}
	b := newFirewalld(Options{Runner: r}.withDefaults())
	holes, err := b.Status(t.Context())
	if err != nil || len(holes) != 1 || holes[0].Port != 80 || holes[0].Family != IPv6 {
		t.Fatalf("Status = %+v, %v", holes, err)
	}
	r.calls = nil
	if err := b.Sweep(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	if last := r.calls[len(r.calls)-1]; last != "firewall-cmd --remove-rich-rule="+ours || slices.ContainsFunc(r.calls, func(c string) bool {
		return strings.Contains(c, "--remove-rich-rule="+perm) || strings.Contains(c, "--remove-rich-rule="+other)
	}) {
		t.Errorf("Sweep ran %q", r.calls)
	}
}
