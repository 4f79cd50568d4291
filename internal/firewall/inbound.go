package firewall

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Inbound and its Verdict answer what a self-check cannot: a request the
// host makes to itself never crosses its own inbound filter, so a firewall
// dropping port 80 passes the self-check and the CA then times out.

// Action is what the firewalls do to a connection.
type Action string

// Actions of a Verdict.
const (
	Accept  Action = "accept"  // the connection gets through
	Drop    Action = "drop"    // silently dropped: the CA times out
	Reject  Action = "reject"  // refused with an error: the CA fails at once
	Unknown Action = "unknown" // the rulesets do not say (a rule too complex, or depending on what Inbound cannot know)
)

// Backends named in a FamilyVerdict besides NameNftables, NameUfw and
// NameFirewalld: the iptables variant and address family whose chain
// decided.
const (
	NameIp6tablesLegacy = "ip6tables-legacy"
	NameIp6tablesNft    = "ip6tables-nft"
)

// FamilyVerdict is what the local firewalls do to an inbound TCP
// connection of one address family.
type FamilyVerdict struct {
	Action Action
	// Backend is the firewall whose rule or policy decided: "nftables",
	// "iptables-legacy", "iptables-nft", "ip6tables-legacy",
	// "ip6tables-nft", "ufw" or "firewalld"; "" when nothing filters
	// input.
	Backend string
	// Rule is the rule or policy responsible, for people: "chain input
	// policy drop in table inet filter", "ufw default deny (incoming)".
	// For Unknown it says what could not be decided.
	Rule string
	// Window is true when one of Detour's firewall windows is what
	// accepts the connection: without Detour's rules it would not be
	// accepted.
	Window bool
	// BySource is set when Action (a Drop or Reject, judged for a source
	// no rule names) may differ for some source addresses: a rule that
	// names them, an allow-list, may accept the connection. A CA reached
	// through a proxy or load balancer on that list gets through.
	BySource bool
}

func (v FamilyVerdict) String() string {
	s := string(v.Action)
	if v.Backend != "" {
		s += " (" + v.Backend + ")"
	}
	if v.Window {
		s += " by Detour's window"
	}
	if v.BySource {
		s += " except from the source addresses a rule names"
	}
	if v.Rule != "" {
		s += ": " + v.Rule
	}
	return s
}

// Verdict is what the local firewalls do to an inbound TCP connection to
// Port from a remote address, per address family.
type Verdict struct {
	Port int
	IPv4 FamilyVerdict
	IPv6 FamilyVerdict
}

// For returns the verdict for IPv4 or IPv6.
func (v Verdict) For(f Family) FamilyVerdict {
	if f == IPv6 {
		return v.IPv6
	}
	return v.IPv4
}

func (v Verdict) String() string {
	return fmt.Sprintf("port %d/tcp: IPv4 %s; IPv6 %s", v.Port, v.IPv4, v.IPv6)
}

// InboundOptions configure Inbound. The zero value reads the process's
// own network namespace with os/exec.
type InboundOptions struct {
	// NetNS is an open file descriptor of the network namespace to read;
	// 0 means the process's own. nftables is read over netlink in it,
	// and when Runner is nil the commands run in it (through nsenter).
	NetNS int
	// Runner runs iptables-save, ufw and firewall-cmd. Nil runs them
	// with os/exec (in NetNS when set).
	Runner Runner
	// Interface is the network interface the CA's connections arrive on,
	// when known. Empty means some interface other than loopback: a rule
	// that names another interface then makes the answer Unknown.
	Interface string
	// Zone is the firewalld zone to read; empty means the zone of
	// Interface, else firewalld's default zone.
	Zone string
}

// Inbound reads the local firewall rulesets and says what they do to an
// inbound TCP connection (a SYN, connection tracking state new) to port
// from a remote, non-loopback address, for IPv4 and IPv6 separately.
//
// It reads, changing nothing: nftables over netlink (the base chains on
// the ingress, prerouting and input hooks; a packet must get through every
// one of them), iptables-legacy and iptables-nft through
// iptables-save/ip6tables-save (the INPUT and PREROUTING chains of the
// raw, mangle, filter and security tables), ufw through `ufw status
// verbose`, and firewalld through firewall-cmd. A firewall that is not
// installed or not running is skipped. Tables that iptables-nft or
// firewalld manage are judged from those tools' views, and the iptables
// chains of an active ufw from ufw's.
//
// Evaluation is best-effort and never guesses: a rule it cannot decide
// for the packet (an unknown match, a rate limit, a queue) makes the
// answer Unknown when it could change it. Two assumptions are made: the
// CA's address is not one the rulesets list (a rule that matches only
// some source addresses does not match; one that excludes some does), and
// the packet reaches the host unchanged (nat chains and the rules in
// ufw's before.rules are not read).
//
// The error wraps ErrPermission when the rulesets may not be read (not
// root); the Verdict is then zero.
func Inbound(ctx context.Context, port int, opts InboundOptions) (Verdict, error) {
	if port < 1 || port > 65535 {
		return Verdict{}, fmt.Errorf("checking the inbound firewall for port %d: use a port from 1 to 65535", port)
	}
	if opts.Runner == nil {
		opts.Runner = ExecRunner{}
		if opts.NetNS != 0 {
			opts.Runner = netnsRunner{fd: opts.NetNS}
		}
	}
	st, err := readInbound(ctx, opts)
	if err != nil {
		return Verdict{}, fmt.Errorf("checking the inbound firewall: %w", err)
	}
	return st.verdict(port, time.Now()), nil
}

// inboundState is everything Inbound read.
type inboundState struct {
	iface string
	nft   *nftRuleset            // nil: no nf_tables
	ipt   map[string]*iptRuleset // by variant name ("iptables-nft", "ip6tables-legacy"...)
	ufw   *ufwStatus             // nil: not installed or inactive
	fwd   *firewalldZone         // nil: not installed or not running
}

func readInbound(ctx context.Context, opts InboundOptions) (*inboundState, error) {
	st := &inboundState{iface: opts.Interface, ipt: map[string]*iptRuleset{}}
	var errs []error
	for _, v := range iptVariants {
		rs, err := readIptables(ctx, opts.Runner, opts.NetNS, v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if rs != nil {
			st.ipt[v.name] = rs
		}
	}
	var err error
	if st.mayHaveUfw() {
		if st.ufw, err = readUfw(ctx, opts.Runner); err != nil {
			errs = append(errs, err)
		}
	}
	if st.fwd, err = readFirewalld(ctx, opts.Runner, opts.Zone, opts.Interface); err != nil {
		errs = append(errs, err)
	}
	if st.nft, err = readNft(opts.NetNS); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return st, nil
}

// mayHaveUfw reports whether ufw can be active given the iptables rulesets
// read: `ufw status` says active exactly when its ufw-user-input chain is
// loaded, so without that chain the slow ufw command (Python, ~40 ms) is
// not run. When no iptables ruleset could be read, ufw is asked.
func (st *inboundState) mayHaveUfw() bool {
	if len(st.ipt) == 0 {
		return true
	}
	for _, rs := range st.ipt {
		if rs.unreadable != "" {
			return true
		}
		for _, chains := range rs.tables {
			if chains["ufw-user-input"] != nil || chains["ufw6-user-input"] != nil {
				return true
			}
		}
	}
	return false
}

// verdict evaluates what st does to the port.
func (st *inboundState) verdict(port int, now time.Time) Verdict {
	v := Verdict{Port: port}
	for _, f := range []Family{IPv4, IPv6} {
		p := packet{fam: f, port: port, iface: st.iface, now: now}
		fv := combine(st.stages(p, false))
		fv.Window = false
		if fv.Action == Accept {
			// Without Detour's rules: does the user's ruleset accept it
			// by itself? Then that rule, not the window, is the answer.
			if without := combine(st.stages(p, true)); without.Action == Accept {
				fv = without
			} else {
				fv.Window = true
			}
		}
		if fv.Action == Drop || fv.Action == Reject {
			// Would a rule naming some sources let them through?
			q := p
			q.anySource = true
			fv.BySource = mayAccept(st.stages(q, false))
		}
		if f == IPv4 {
			v.IPv4 = fv
		} else {
			v.IPv6 = fv
		}
	}
	return v
}

// packet is the connection Inbound asks about.
type packet struct {
	fam   Family // IPv4 or IPv6
	port  int
	iface string // "" unknown, not loopback
	now   time.Time
	// skipDetour leaves Detour's own rules out, to tell whether a window
	// is what accepts the packet.
	skipDetour bool
	// anySource drops the assumption that the CA's address is in no list
	// of sources: a rule matching some source addresses may match.
	anySource bool
}

// stages returns the stages of every firewall for p, in kernel order.
func (st *inboundState) stages(p packet, skipDetour bool) []stage {
	p.skipDetour = skipDetour
	var stages []stage
	usedUfw, usedFwd := false, false
	var ufwOuts, fwdOuts []outcome
	if st.ufw != nil {
		ufwOuts = st.ufw.outcomes(p)
	}
	if st.fwd != nil {
		fwdOuts = st.fwd.outcomes(p)
	}
	deferred := map[string]bool{} // "ip filter": judged from iptables-nft's view
	for _, v := range iptVariants {
		if v.fam != p.fam {
			continue
		}
		rs := st.ipt[v.name]
		if rs == nil {
			continue
		}
		if v.nft {
			for name := range rs.tables {
				if rs.incompatible[name] {
					continue
				}
				deferred[nftFamilyName(p.fam)+" "+name] = true
			}
		}
		ss, u, f := rs.stages(p, v.name, ufwOuts, fwdOuts)
		stages = append(stages, ss...)
		usedUfw, usedFwd = usedUfw || u, usedFwd || f
	}
	if st.nft != nil {
		ss, f := st.nft.stages(p, deferred, fwdOuts)
		stages = append(stages, ss...)
		usedFwd = usedFwd || f
	}
	if ufwOuts != nil && !usedUfw {
		stages = append(stages, stage{backend: NameUfw, hook: 2, outs: ufwOuts})
	}
	if fwdOuts != nil && !usedFwd {
		stages = append(stages, stage{backend: NameFirewalld, hook: 2, priority: 10, outs: fwdOuts})
	}
	slices.SortStableFunc(stages, func(a, b stage) int {
		if a.hook != b.hook {
			return a.hook - b.hook
		}
		return a.priority - b.priority
	})
	return stages
}

func nftFamilyName(f Family) string {
	if f == IPv6 {
		return "ip6"
	}
	return "ip"
}

// missing reports whether a command failed because it is not installed,
// also when a wrapper ran it (nsenter, ip netns exec) and said so.
func missing(err error) bool {
	var ce *CommandError
	if notFound(err) {
		return true
	}
	if !errors.As(err, &ce) {
		return false
	}
	return ce.ExitCode == 127 || strings.Contains(ce.Stderr, "No such file or directory") &&
		(strings.Contains(ce.Stderr, "exec of") || strings.Contains(ce.Stderr, "failed to execute"))
}

// netnsRunner runs commands in a network namespace given by an open
// descriptor, through nsenter (util-linux): the descriptor is the child's
// fd 3.
type netnsRunner struct{ fd int }

// Run implements Runner.
func (r netnsRunner) Run(ctx context.Context, c Command) ([]byte, error) {
	if _, err := exec.LookPath(c.Name); err != nil {
		return nil, &CommandError{Command: c, ExitCode: -1, Err: err}
	}
	// A duplicate: the *os.File closes it, not the caller's descriptor.
	dup, err := unix.FcntlInt(uintptr(r.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, &CommandError{Command: c, ExitCode: -1, Err: fmt.Errorf("duplicating the namespace descriptor: %w", err)}
	}
	f := os.NewFile(uintptr(dup), "netns")
	defer f.Close()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/proc/self/fd/3", "--", c.Name}, c.Args...)...)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(), c.Env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if err == nil {
		return []byte(stdout.String()), nil
	}
	ce := &CommandError{Command: c, ExitCode: -1, Stderr: strings.TrimSpace(stderr.String()), Err: err}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ce.ExitCode = ee.ExitCode()
	}
	return []byte(stdout.String()), ce
}
