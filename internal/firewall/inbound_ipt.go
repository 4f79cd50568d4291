package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// iptVariant is one of the four iptables rulesets: legacy or nft, IPv4 or
// IPv6.
type iptVariant struct {
	name     string // as FamilyVerdict.Backend says it
	fam      Family
	nft      bool
	save     string // the command that prints it
	fallback string // legacy: the plain command of a system that has no -legacy one
	proc     string // legacy: the kernel's list of its tables, in /proc/net
}

var iptVariants = []iptVariant{
	{name: NameIptablesLegacy, fam: IPv4, save: "iptables-legacy-save", fallback: "iptables-save", proc: "ip_tables_names"},
	{name: NameIp6tablesLegacy, fam: IPv6, save: "ip6tables-legacy-save", fallback: "ip6tables-save", proc: "ip6_tables_names"},
	{name: NameIptablesNft, fam: IPv4, nft: true, save: "iptables-nft-save"},
	{name: NameIp6tablesNft, fam: IPv6, nft: true, save: "ip6tables-nft-save"},
}

// iptRuleset is the output of iptables-save.
type iptRuleset struct {
	tables map[string]map[string]*iptSaveChain // table -> chain
	// unreadable says why the ruleset exists but could not be read.
	unreadable string
	// incompatible are the tables iptables-nft-save cannot show (nft
	// made them): it prints an empty stand-in, so nftables' own view of
	// them is evaluated instead.
	incompatible map[string]bool
}

var iptIncompatible = regexp.MustCompile("^# Table `([^']+)' .*incompatible")

type iptSaveChain struct {
	policy string     // ACCEPT, DROP; "-" for a user chain
	rules  [][]string // the words after "-A CHAIN"
}

// readIptables runs v.save; nil when the variant is not in use.
func readIptables(ctx context.Context, run Runner, netns int, v iptVariant) (*iptRuleset, error) {
	out, err := run.Run(ctx, Command{Name: v.save})
	if err != nil && missing(err) && v.fallback != "" {
		// A system with one iptables, older than the -legacy names.
		if out2, err2 := run.Run(ctx, Command{Name: v.fallback}); err2 == nil && !strings.Contains(string(out2), "nf_tables") {
			out, err = out2, nil
		}
	}
	switch {
	case err == nil:
		return parseIptablesSave(string(out))
	case permissionDenied(err):
		return nil, fmt.Errorf("reading the %s rules: %w: %s needs root (%v)", v.name, ErrPermission, v.save, err)
	case v.nft:
		// Not installed, or tables it cannot show: nftables' own view
		// of them is evaluated instead.
		return nil, nil
	case missing(err):
		names, rerr := readProcNet(netns, v.proc)
		if rerr != nil || strings.TrimSpace(names) == "" {
			return nil, nil
		}
		return &iptRuleset{unreadable: fmt.Sprintf("the kernel has %s tables (%s) but %s is not installed: install the Debian package \"iptables\"",
			v.name, strings.Join(strings.Fields(names), ", "), v.save)}, nil
	}
	return nil, fmt.Errorf("reading the %s rules: %w", v.name, err)
}

// readProcNet reads /proc/net/name as seen from network namespace netns
// (0: the process's own).
func readProcNet(netns int, name string) (string, error) {
	if netns == 0 {
		b, err := os.ReadFile("/proc/net/" + name)
		return string(b), err
	}
	var (
		b   []byte
		err error
		wg  sync.WaitGroup
	)
	wg.Go(func() {
		// The thread is never unlocked: it dies with the goroutine, so
		// no other goroutine runs in the namespace.
		runtime.LockOSThread()
		if err = unix.Setns(netns, unix.CLONE_NEWNET); err == nil {
			b, err = os.ReadFile("/proc/thread-self/net/" + name)
		}
	})
	wg.Wait()
	return string(b), err
}

// parseIptablesSave parses iptables-save output.
func parseIptablesSave(text string) (*iptRuleset, error) {
	rs := &iptRuleset{tables: map[string]map[string]*iptSaveChain{}, incompatible: map[string]bool{}}
	var table map[string]*iptSaveChain
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if m := iptIncompatible.FindStringSubmatch(line); m != nil {
			rs.incompatible[m[1]] = true
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#") || line == "COMMIT":
		case strings.HasPrefix(line, "*"):
			table = map[string]*iptSaveChain{}
			rs.tables[line[1:]] = table
		case table == nil:
			return nil, fmt.Errorf("parsing iptables-save output: line %d outside a table: %q", n+1, line)
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) < 2 {
				return nil, fmt.Errorf("parsing iptables-save output: line %d: %q", n+1, line)
			}
			table[f[0]] = &iptSaveChain{policy: f[1]}
		case strings.HasPrefix(line, "-A "):
			words, ok := splitWords(line)
			if !ok || len(words) < 2 || table[words[1]] == nil {
				return nil, fmt.Errorf("parsing iptables-save output: line %d: %q", n+1, line)
			}
			table[words[1]].rules = append(table[words[1]].rules, words[2:])
		}
	}
	return rs, nil
}

// iptHooks are the chains a packet to this host crosses, with the
// priorities of their tables.
var iptHooks = []struct {
	table, chain string
	hook, prio   int
}{
	{"raw", "PREROUTING", 1, -300},
	{"mangle", "PREROUTING", 1, -150},
	{"mangle", "INPUT", 2, -150},
	{"filter", "INPUT", 2, 0},
	{"security", "INPUT", 2, 50},
}

// stages returns a stage per inbound chain. The chains of an active ufw
// (and of firewalld's iptables backend) are judged from ufw's (and
// firewalld's) own view when given.
func (rs *iptRuleset) stages(p packet, variant string, ufwOuts, fwdOuts []outcome) (out []stage, usedUfw, usedFwd bool) {
	if rs.unreadable != "" {
		return []stage{{backend: variant, hook: 2, outs: []outcome{{action: Unknown, why: rs.unreadable}}}}, false, false
	}
	for _, h := range iptHooks {
		if rs.incompatible[h.table] {
			continue
		}
		t := rs.tables[h.table]
		ch := t[h.chain]
		if ch == nil {
			continue
		}
		chains := map[string]*evChain{}
		for name, c := range t {
			ec := &evChain{where: fmt.Sprintf("chain %s in table %s of %s", name, h.table, variant)}
			for _, words := range c.rules {
				r := compileIpt(words, p, t)
				r.where = fmt.Sprintf("rule %q in table %s of %s", "-A "+name+" "+strings.Join(words, " "), h.table, variant)
				for i, a := range r.alts {
					switch {
					case a.v.kind == vJump && ufwOuts != nil && (strings.HasPrefix(a.v.chain, "ufw-") || strings.HasPrefix(a.v.chain, "ufw6-")):
						r.alts[i].v, usedUfw = verdict{kind: vOutcomes, outs: ufwOuts}, true
					case a.v.kind == vJump && fwdOuts != nil && (a.v.chain == "INPUT_direct" || strings.HasPrefix(a.v.chain, "INPUT_ZONES")):
						r.alts[i].v, usedFwd = verdict{kind: vOutcomes, outs: fwdOuts}, true
					}
				}
				ec.rules = append(ec.rules, r)
			}
			chains[name] = ec
		}
		policy := Accept
		switch ch.policy {
		case "DROP":
			policy = Drop
		case "ACCEPT":
		default:
			policy = Unknown
		}
		outs := newEngine(chains).base(h.chain, policy, fmt.Sprintf("chain %s policy %s in table %s of %s", h.chain, ch.policy, h.table, variant))
		out = append(out, stage{backend: variant, hook: h.hook, priority: h.prio, outs: outs})
	}
	return out, usedUfw, usedFwd
}

// compileIpt compiles the words of one rule for p; chains are the rule's
// table's (a target that names one is a jump).
func compileIpt(w []string, p packet, chains map[string]*iptSaveChain) evRule {
	var (
		m       = yes
		conds   []string
		neg     bool
		target  string
		isGoto  bool
		comment string
	)
	test := func(t tri, what string) {
		if neg {
			t, what = t.not(), "! "+what
		}
		neg = false
		if t == maybe {
			conds = append(conds, what)
		}
		m = m.and(t)
	}
	// value returns the words of an option's value: up to the next option.
	value := func(i int) ([]string, int) {
		j := i + 1
		for j < len(w) && !strings.HasPrefix(w[j], "-") && w[j] != "!" {
			j++
		}
		return w[i+1 : j], j
	}
	for i := 0; i < len(w); {
		opt := w[i]
		if opt == "!" {
			neg = true
			i++
			continue
		}
		if opt == "-j" || opt == "--jump" || opt == "-g" || opt == "--goto" {
			if i+1 < len(w) {
				target, isGoto = w[i+1], opt == "-g" || opt == "--goto"
			}
			break
		}
		val, next := value(i)
		i = next
		arg := strings.Join(val, " ")
		switch opt {
		case "-m", "--match":
			neg = false
		case "-p", "--protocol":
			test(triOf(arg == "tcp" || arg == "6" || arg == "all" || arg == "0"), "-p "+arg)
		case "-s", "--source", "--src-range", "--ctorigsrc":
			test(p.remoteIn(arg), opt+" "+arg)
		case "-d", "--destination":
			test(localIn(arg, p.fam), "-d "+arg)
		case "-i", "--in-interface":
			test(ifaceIs(arg, p.iface), "-i "+arg)
		case "--dport", "--destination-port", "--dports", "--destination-ports":
			test(portIn(arg, p.port), opt+" "+arg)
		case "--ports":
			if portIn(arg, p.port) == yes {
				test(yes, "")
			} else {
				test(maybe, "--ports "+arg+" (the source port)")
			}
		case "--syn":
			test(yes, "--syn")
		case "--tcp-flags":
			test(tcpFlags(val), "--tcp-flags "+arg)
		case "--ctstate", "--state":
			states := strings.Split(arg, ",")
			test(triOf(containsFold(states, "NEW")), opt+" "+arg)
		case "--ctproto":
			test(triOf(arg == "tcp" || arg == "6"), "--ctproto "+arg)
		case "--comment":
			comment = arg
			neg = false
		case "--datestart", "--datestop":
			t, err := time.Parse("2006-01-02T15:04:05", arg)
			if err != nil {
				test(maybe, opt+" "+arg)
			} else if opt == "--datestop" {
				// xt_time matches through the whole --datestop second.
				test(triOf(p.now.Before(t.Add(time.Second))), opt+" "+arg)
			} else {
				test(triOf(!p.now.Before(t)), opt+" "+arg)
			}
		case "--dst-type":
			test(triOf(containsFold(strings.Split(arg, ","), "LOCAL")), "--dst-type "+arg)
		case "--src-type":
			test(triOf(containsFold(strings.Split(arg, ","), "UNICAST")), "--src-type "+arg)
		case "--limit-iface-in":
			neg = false
		case "--pkt-type":
			test(triOf(strings.EqualFold(arg, "unicast") || strings.EqualFold(arg, "host")), "--pkt-type "+arg)
		case "--match-set":
			if len(val) == 2 && strings.HasPrefix(val[1], "src") {
				test(p.listed(), "--match-set "+arg) // the CA is in no list of sources
			} else {
				test(maybe, "--match-set "+arg)
			}
		case "--icmp-type", "--icmpv6-type":
			test(no, opt+" "+arg)
		case "--kerneltz":
			test(maybe, "--kerneltz")
		default:
			test(maybe, strings.TrimSpace(opt+" "+arg))
		}
	}
	var v verdict
	switch target {
	case "ACCEPT":
		v.kind = vAccept
	case "DROP":
		v.kind = vDrop
	case "REJECT":
		v.kind = vReject
	case "RETURN":
		v.kind = vReturn
	case "", "LOG", "NFLOG", "ULOG", "AUDIT", "TRACE", "MARK", "CONNMARK", "CT", "NOTRACK", "TCPMSS", "CLASSIFY",
		"DSCP", "TOS", "SET", "LED", "CHECKSUM", "TEE", "SECMARK", "CONNSECMARK", "IDLETIMER", "RATEEST":
		v.kind = vContinue
	case "QUEUE", "NFQUEUE":
		v = verdict{kind: vUnknown, reason: "it queues packets to a program"}
	default:
		if chains[target] != nil {
			v = verdict{kind: vJump, chain: target}
			if isGoto {
				v.kind = vGoto
			}
		} else {
			v = verdict{kind: vUnknown, reason: "the target " + target}
		}
	}
	ours := strings.HasPrefix(comment, tag)
	r := evRule{cond: strings.Join(conds, ", "), window: ours}
	if m != no && !(ours && p.skipDetour) {
		r.alts = []alt{{t: m, v: v}}
	}
	return r
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// remoteIn says whether the packet's remote source is in the network s:
// only when s is every address, or maybe when p asks about any source.
func (p packet) remoteIn(s string) tri {
	pf, err := netip.ParsePrefix(s)
	if err != nil {
		if a, aerr := netip.ParseAddr(s); aerr == nil {
			pf, err = netip.PrefixFrom(a, a.BitLen()), nil
		}
	}
	switch {
	case err == nil && pf.Bits() == 0:
		return yes
	case err == nil && pf.Masked().Addr().IsLoopback() && (pf.Addr().Is4() && pf.Bits() >= 8 || pf.Addr().Is6() && pf.Bits() == 128):
		return no // a remote packet never comes from loopback
	}
	return p.listed()
}

// listed says whether the packet's source is in a list of addresses: no,
// the CA is in none, unless p asks about any source (maybe).
func (p packet) listed() tri {
	if p.anySource {
		return maybe
	}
	return no
}

// localIn says whether the packet's destination, an address of this host
// other than loopback, is in s.
func localIn(s string, f Family) tri {
	pf, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return maybe
		}
		pf = netip.PrefixFrom(a, a.BitLen())
	}
	switch {
	case pf.Bits() == 0:
		return yes
	case notLocal(pf.Masked().Addr()) && (pf.Addr().Is4() && pf.Bits() >= 4 || pf.Addr().Is6() && pf.Bits() >= 8):
		return no
	}
	return maybe
}

// ifaceIs says whether the input interface is name (iptables' "+"
// wildcard allowed); iface is the known one, or "".
func ifaceIs(name, iface string) tri {
	prefix, wild := strings.CutSuffix(name, "+")
	switch {
	case iface != "" && wild:
		return triOf(strings.HasPrefix(iface, prefix))
	case iface != "":
		return triOf(iface == name)
	case name == "lo":
		return no
	case wild && prefix == "":
		return yes
	}
	return maybe
}

// portIn says whether port is in a list of ports and ranges ("80",
// "80,443", "8000:8100").
func portIn(list string, port int) tri {
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, ":")
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(strings.TrimSpace(hi))
			if strings.TrimSpace(hi) == "" {
				b, err2 = 65535, nil
			}
		}
		if err1 != nil || err2 != nil {
			return maybe
		}
		if port >= a && port <= b {
			return yes
		}
	}
	return no
}

// tcpFlags evaluates --tcp-flags MASK COMP for a SYN.
func tcpFlags(val []string) tri {
	if len(val) != 2 {
		return maybe
	}
	bits := func(s string) (int, bool) {
		n := 0
		for _, f := range strings.Split(s, ",") {
			b, ok := map[string]int{"FIN": 1, "SYN": 2, "RST": 4, "PSH": 8, "ACK": 16, "URG": 32, "ALL": 63, "NONE": 0}[strings.ToUpper(f)]
			if !ok {
				return 0, false
			}
			n |= b
		}
		return n, true
	}
	mask, ok1 := bits(val[0])
	comp, ok2 := bits(val[1])
	if !ok1 || !ok2 {
		return maybe
	}
	return triOf(2&mask == comp)
}
