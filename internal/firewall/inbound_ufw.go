package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// ufwStatus is what `ufw status verbose` says of an active ufw.
type ufwStatus struct {
	incoming string // the default incoming policy: allow, deny or reject
	rules    []ufwStatusRule
	apps     map[string]string // application profile -> its ports ("80,443/tcp")
}

// ufwStatusRule is one line of the rule table.
type ufwStatusRule struct {
	line     string
	to, from string // without " (v6)" and " on IFACE"
	action   string // ALLOW, DENY, REJECT, LIMIT
	v6       bool
	iface    string
	comment  string
}

var (
	ufwFields  = regexp.MustCompile(`\s{2,}`)
	ufwDefault = regexp.MustCompile(`(?m)^Default: (\w+) \(incoming\)`)
)

// readUfw runs `ufw status verbose`; nil when ufw is not installed or
// inactive.
func readUfw(ctx context.Context, run Runner) (*ufwStatus, error) {
	out, err := run.Run(ctx, Command{Name: "ufw", Args: []string{"status", "verbose"}})
	switch {
	case err != nil && missing(err):
		return nil, nil
	case err != nil && permissionDenied(err):
		return nil, fmt.Errorf("reading ufw's rules: %w: ufw needs root (%v)", ErrPermission, err)
	case err != nil:
		return nil, fmt.Errorf("reading ufw's rules: %w", err)
	}
	st, err := parseUfwStatus(string(out))
	if err != nil || st == nil {
		return nil, err
	}
	for _, r := range st.rules {
		if _, _, ok := ufwPorts(r.to); ok || st.apps[r.to] != "" {
			continue
		}
		// An application profile: its ports are in `ufw app info`.
		info, err := run.Run(ctx, Command{Name: "ufw", Args: []string{"app", "info", r.to}})
		if err == nil {
			st.apps[r.to] = ufwAppPorts(string(info))
		}
	}
	return st, nil
}

// parseUfwStatus parses `ufw status verbose`; nil when ufw is inactive.
func parseUfwStatus(text string) (*ufwStatus, error) {
	if !strings.Contains(text, "Status: active") {
		return nil, nil
	}
	m := ufwDefault.FindStringSubmatch(text)
	if m == nil {
		return nil, fmt.Errorf("reading ufw's rules: no default incoming policy in `ufw status verbose`:\n%s", text)
	}
	st := &ufwStatus{incoming: m[1], apps: map[string]string{}}
	table := false
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "--") {
			table = true
			continue
		}
		if !table || line == "" {
			continue
		}
		r := ufwStatusRule{line: line}
		body, comment, _ := strings.Cut(line, "# ")
		r.comment = strings.TrimSpace(comment)
		f := ufwFields.Split(strings.TrimSpace(body), -1)
		if len(f) < 3 {
			return nil, fmt.Errorf("reading ufw's rules: cannot parse %q", line)
		}
		r.to, r.action, r.from = f[0], f[1], f[2]
		for _, s := range []*string{&r.to, &r.from} {
			if t, ok := strings.CutSuffix(*s, " (v6)"); ok {
				*s, r.v6 = t, true
			}
		}
		if to, iface, ok := strings.Cut(r.to, " on "); ok {
			r.to, r.iface = to, iface
		}
		for _, s := range []string{r.to, r.from} {
			if a, err := netip.ParsePrefix(strings.Fields(s + " x")[0]); err == nil && a.Addr().Is6() {
				r.v6 = true
			} else if a, err := netip.ParseAddr(strings.Fields(s + " x")[0]); err == nil && a.Is6() {
				r.v6 = true
			}
		}
		st.rules = append(st.rules, r)
	}
	return st, nil
}

// ufwAppPorts returns the ports of `ufw app info NAME`.
func ufwAppPorts(info string) string {
	_, rest, ok := strings.Cut(info, "Ports:")
	if !ok {
		return ""
	}
	var ports []string
	for _, l := range strings.Split(rest, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ports = append(ports, l)
		}
	}
	return strings.Join(ports, " ")
}

// ufwPorts splits a To or From column into its address ("" for
// Anywhere) and port list ("" for all ports).
func ufwPorts(col string) (addr, ports string, ok bool) {
	f := strings.Fields(col)
	if len(f) == 0 || len(f) > 2 {
		return "", "", false
	}
	first := f[0]
	isAddr := first == "Anywhere"
	if _, err := netip.ParsePrefix(first); err == nil {
		isAddr = true
	} else if _, err := netip.ParseAddr(first); err == nil {
		isAddr = true
	}
	switch {
	case isAddr && len(f) == 1:
		addr = first
	case isAddr:
		addr, ports = first, f[1]
	case len(f) == 1 && ufwPortSpec.MatchString(first):
		ports = first
	default:
		return "", "", false
	}
	if addr == "Anywhere" {
		addr = ""
	}
	return addr, ports, true
}

var ufwPortSpec = regexp.MustCompile(`^[0-9,:]+(/(tcp|udp))?$`)

// ufwPortMatch says whether a ufw port list ("80/tcp", "80,443",
// "8000:8100/tcp", several separated by spaces) holds port over TCP.
func ufwPortMatch(spec string, port int) tri {
	out := no
	for _, s := range strings.Fields(spec) {
		list, proto, _ := strings.Cut(s, "/")
		if proto != "" && proto != "tcp" {
			continue
		}
		out = out.or(portIn(list, port))
	}
	return out
}

// outcomes evaluates ufw's rules, first match wins, then its default.
func (st *ufwStatus) outcomes(p packet) []outcome {
	ch := &evChain{where: "ufw"}
	for _, r := range st.rules {
		if r.v6 != (p.fam == IPv6) || !strings.HasSuffix(r.action, " IN") && strings.Contains(r.action, " ") {
			continue
		}
		m := yes
		var conds []string
		test := func(t tri, what string) {
			if t == maybe {
				conds = append(conds, what)
			}
			m = m.and(t)
		}
		toAddr, toPorts, ok := ufwPorts(r.to)
		if !ok {
			if ports := st.apps[r.to]; ports != "" {
				toAddr, toPorts = "", ports
			} else {
				test(maybe, "the application profile "+r.to)
			}
		}
		if toPorts != "" {
			test(ufwPortMatch(toPorts, p.port), "port "+toPorts)
		}
		if toAddr != "" {
			test(localIn(toAddr, p.fam), "to "+toAddr)
		}
		if r.iface != "" {
			test(ifaceIs(r.iface, p.iface), "on "+r.iface)
		}
		fromAddr, fromPorts, ok := ufwPorts(r.from)
		switch {
		case !ok:
			test(maybe, "from "+r.from)
		case fromAddr != "":
			test(p.remoteIn(fromAddr), "from "+fromAddr)
		}
		if fromPorts != "" {
			test(maybe, "the source port "+fromPorts)
		}
		var v verdict
		switch strings.Fields(r.action)[0] {
		case "ALLOW":
			v.kind = vAccept
		case "DENY":
			v.kind = vDrop
		case "REJECT":
			v.kind = vReject
		case "LIMIT":
			v = verdict{kind: vUnknown, reason: "it accepts a source's first 6 connections in 30 seconds only"}
		default:
			v = verdict{kind: vUnknown, reason: "action " + r.action}
		}
		ours := strings.HasPrefix(r.comment, tag)
		er := evRule{where: fmt.Sprintf("ufw rule %q", strings.Join(ufwFields.Split(strings.TrimSpace(r.line), -1), " ")),
			cond: strings.Join(conds, ", "), window: ours}
		if m != no && !(ours && p.skipDetour) {
			er.alts = []alt{{t: m, v: v}}
		}
		ch.rules = append(ch.rules, er)
	}
	policy := map[string]Action{"allow": Accept, "deny": Drop, "reject": Reject}[st.incoming]
	if policy == "" {
		policy = Unknown
	}
	outs := newEngine(map[string]*evChain{"ufw": ch}).base("ufw", policy, "ufw default "+st.incoming+" (incoming)")
	for i := range outs {
		outs[i].backend = NameUfw
	}
	return outs
}
