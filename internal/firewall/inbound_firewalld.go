package firewall

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// firewalldZone is what firewall-cmd says of the zone the CA's
// connections arrive in.
type firewalldZone struct {
	zone      string
	target    string
	ports     []string            // "80/tcp", "8000-8100/tcp"
	services  map[string][]string // name -> its ports; nil when unknown
	protocols []string
	rich      []fwdRich
}

type fwdRich struct {
	text   string
	detour bool // Detour's shape and runtime only: a Detour window
}

// readFirewalld reads the zone through firewall-cmd; nil when firewalld
// is not installed or not running.
func readFirewalld(ctx context.Context, run Runner, zone, iface string) (*firewalldZone, error) {
	b := &fwdBackend{run: run, zone: zone}
	_, err := run.Run(ctx, Command{Name: "firewall-cmd", Args: []string{"--state"}})
	var ce *CommandError
	switch {
	case err != nil && (missing(err) || errors.As(err, &ce) && ce.ExitCode == 252):
		return nil, nil
	case err != nil:
		return nil, b.explain("reading firewalld's state", err)
	}
	if zone == "" && iface != "" {
		if out, err := run.Run(ctx, Command{Name: "firewall-cmd", Args: []string{"--get-zone-of-interface=" + iface}}); err == nil {
			zone = strings.TrimSpace(string(out))
		}
	}
	if zone == "" {
		out, err := run.Run(ctx, Command{Name: "firewall-cmd", Args: []string{"--get-default-zone"}})
		if err != nil {
			return nil, b.explain("reading firewalld's default zone", err)
		}
		zone = strings.TrimSpace(string(out))
	}
	b.zone = zone
	out, err := run.Run(ctx, b.cmd("--list-all"))
	if err != nil {
		return nil, b.explain("reading firewalld zone "+zone, err)
	}
	z := parseFirewalldZone(zone, string(out))
	for name := range z.services {
		info, err := run.Run(ctx, Command{Name: "firewall-cmd", Args: []string{"--info-service=" + name}})
		if err == nil {
			z.services[name] = fwdServicePorts(string(info))
		}
	}
	for i, r := range z.rich {
		if richRuleRE.MatchString(r.text) {
			permanent, err := b.query(ctx, "--permanent", "--query-rich-rule="+r.text)
			if err != nil {
				return nil, err
			}
			z.rich[i].detour = !permanent
		}
	}
	return z, nil
}

// parseFirewalldZone parses `firewall-cmd --list-all`.
func parseFirewalldZone(zone, text string) *firewalldZone {
	z := &firewalldZone{zone: zone, target: "default", services: map[string][]string{}}
	rich := false
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if rich && strings.HasPrefix(line, "rule") {
			z.rich = append(z.rich, fwdRich{text: line})
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		rich = false
		val = strings.TrimSpace(val)
		switch key {
		case "target":
			z.target = val
		case "services":
			for _, s := range strings.Fields(val) {
				z.services[s] = nil
			}
		case "ports":
			z.ports = strings.Fields(val)
		case "protocols":
			z.protocols = strings.Fields(val)
		case "rich rules":
			rich = true
		}
	}
	return z
}

// fwdServicePorts returns the ports of `firewall-cmd --info-service`,
// with "proto/tcp" for a protocol it accepts whole.
func fwdServicePorts(info string) []string {
	out := []string{}
	for _, line := range strings.Split(info, "\n") {
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		switch {
		case ok && key == "ports":
			out = append(out, strings.Fields(val)...)
		case ok && key == "protocols" && slices.Contains(strings.Fields(val), "tcp"):
			out = append(out, "1-65535/tcp")
		}
	}
	return out
}

// fwdPortMatch says whether "80/tcp" or "8000-8100/tcp" holds port over
// TCP.
func fwdPortMatch(spec string, port int) tri {
	ports, proto, _ := strings.Cut(spec, "/")
	if proto != "tcp" {
		return no
	}
	return portIn(strings.ReplaceAll(ports, "-", ":"), port)
}

// outcomes evaluates the zone the way firewalld orders it: rich rules
// with a negative priority, then those that drop or reject, then
// everything that accepts (rich rules, ports, services, protocols), then
// rich rules with a positive priority, then the zone's target.
func (z *firewalldZone) outcomes(p packet) []outcome {
	type ranked struct {
		rank int // priority, with deny before allow at 0
		r    evRule
	}
	var rules []ranked
	where := "firewalld zone " + z.zone
	for _, rr := range z.rich {
		r, prio, kind := fwdRichRule(rr, z, p)
		rank := prio * 10
		if prio == 0 && kind == vAccept {
			rank = 1
		}
		rules = append(rules, ranked{rank, r})
	}
	accept := func(t tri, what string) {
		if t != no {
			rules = append(rules, ranked{1, evRule{alts: []alt{{t: t, v: verdict{kind: vAccept}}}, where: where + " " + what, cond: what}})
		}
	}
	for _, s := range z.ports {
		accept(fwdPortMatch(s, p.port), "port "+s)
	}
	for _, s := range slices.Sorted(func(yield func(string) bool) {
		for k := range z.services {
			if !yield(k) {
				return
			}
		}
	}) {
		ports := z.services[s]
		if ports == nil {
			accept(maybe, "service "+s+" (its ports could not be read)")
			continue
		}
		t := no
		for _, ps := range ports {
			t = t.or(fwdPortMatch(ps, p.port))
		}
		accept(t, "service "+s)
	}
	for _, proto := range z.protocols {
		accept(triOf(proto == "tcp"), "protocol "+proto)
	}
	slices.SortStableFunc(rules, func(a, b ranked) int { return cmp.Compare(a.rank, b.rank) })
	ch := &evChain{where: where}
	for _, r := range rules {
		ch.rules = append(ch.rules, r.r)
	}
	policy, what := Reject, "target "+z.target+" (rejects what no rule accepts)"
	switch strings.Trim(z.target, "%") {
	case "ACCEPT":
		policy, what = Accept, "target ACCEPT"
	case "DROP":
		policy, what = Drop, "target DROP"
	case "REJECT":
		what = "target REJECT"
	case "default":
	default:
		policy = Unknown
	}
	outs := newEngine(map[string]*evChain{"zone": ch}).base("zone", policy, where+" "+what)
	for i := range outs {
		outs[i].backend = NameFirewalld
	}
	return outs
}

// fwdRichRule compiles a rich rule for p, with its priority and action.
func fwdRichRule(rr fwdRich, z *firewalldZone, p packet) (evRule, int, vKind) {
	words, _ := splitWords(rr.text)
	var (
		m     = yes
		conds []string
		prio  int
		v     = verdict{kind: vContinue}
		acted bool
	)
	test := func(t tri, what string) {
		if t == maybe {
			conds = append(conds, what)
		}
		m = m.and(t)
	}
	attr := func(i int, key string) string {
		for _, w := range words[i+1:] {
			if k, val, ok := strings.Cut(w, "="); ok && k == key {
				return val
			}
			if !strings.Contains(w, "=") && !strings.EqualFold(w, "not") {
				break
			}
		}
		return ""
	}
	for i, w := range words {
		neg := i+1 < len(words) && strings.EqualFold(words[i+1], "not") // firewall-cmd prints NOT
		k, val, _ := strings.Cut(w, "=")
		switch k {
		case "family":
			test(triOf(val == map[Family]string{IPv4: "ipv4", IPv6: "ipv6"}[p.fam]), w)
		case "priority":
			prio, _ = strconv.Atoi(val)
		case "source":
			t := p.listed() // the CA is in no list of sources
			if neg {
				t = t.not()
			}
			test(t, "source")
		case "destination":
			t := localIn(attr(i, "address"), p.fam)
			if neg {
				t = t.not()
			}
			test(t, "destination "+attr(i, "address"))
		case "service":
			name := attr(i, "name")
			ports, ok := z.services[name]
			if !ok || ports == nil {
				test(maybe, "service "+name)
				continue
			}
			t := no
			for _, ps := range ports {
				t = t.or(fwdPortMatch(ps, p.port))
			}
			test(t, "service "+name)
		case "port":
			if val == "" {
				test(fwdPortMatch(attr(i, "port")+"/"+attr(i, "protocol"), p.port), "port")
			}
		case "protocol":
			if k == w && attr(i, "value") != "" {
				test(triOf(attr(i, "value") == "tcp"), "protocol")
			}
		case "source-port":
			test(maybe, "the source port")
		case "icmp-block", "icmp-type", "masquerade", "forward-port", "tcp-mss-clamp":
			test(no, k)
		case "accept", "drop", "reject":
			v.kind, acted = map[string]vKind{"accept": vAccept, "drop": vDrop, "reject": vReject}[k], true
		case "mark":
			acted = true
		case "limit":
			if acted && v.kind == vAccept {
				v = verdict{kind: vUnknown, reason: "its accept is rate limited"}
			}
		}
	}
	r := evRule{where: fmt.Sprintf("firewalld rich rule %q in zone %s", rr.text, z.zone), cond: strings.Join(conds, ", "), window: rr.detour}
	if m != no && !(rr.detour && p.skipDetour) {
		r.alts = []alt{{t: m, v: v}}
	}
	return r, prio, v.kind
}
