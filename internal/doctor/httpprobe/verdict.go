package httpprobe

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/detour-acme/detour/internal/doctor/check"
	"github.com/detour-acme/detour/internal/solve/selfcheck"
)

// probe describes one probe for its verdict: which check, what was set up,
// and how a wrong final answer is explained for its path kind.
type probe struct {
	check string // "http.webroot", "http.side-port"
	name  string
	setup []string // evidence lines: what was written or listened on
	// answer explains the final answer of fr, a FailStatus or FailBody
	// fetch, returning the summary and the fix.
	answer func(fr FamilyResult) (summary, fix string)
}

// verdict judges res, the probe fetched from every family, and names the
// cause when the CA would fail, in the order the CA meets it.
func (p probe) verdict(res Result, o Options) check.Result {
	o = o.withDefaults()
	r := check.New(p.check, p.name, check.OK, "")
	r.Evidence = append(r.Evidence, p.setup...)
	if res.Err != "" {
		r.Status, r.Summary = check.Problem, res.Err
		r.Fix = "create an A or AAAA record for " + p.name + " pointing at this host: the CA resolves the name the same way"
		return r
	}
	for _, f := range res.Families {
		r.Evidence = append(r.Evidence, familyEvidence(f)...)
	}
	i := CAFamily(res.Families)
	if i < 0 {
		r.Status, r.Summary = check.Problem, p.name+" has no address"
		return r
	}
	ca := res.Families[i]
	v6, has6 := res.Family(IPv6)
	v4, has4 := res.Family(IPv4)
	if has6 && has4 {
		r.Add("the CA acts on the %s answer: it starts with IPv6 and falls back to IPv4 only when no connection can be made", ca.Family)
	}
	switch {
	case ca.OK && ca.Family == IPv4 && has6:
		r.Status = check.Warning
		r.Summary = fmt.Sprintf("the CA gets the probe only by falling back to IPv4: over IPv6 %s", failureText(v6))
		r.Fix = fmt.Sprintf("make a server listen on %s and serve %s as the one on %s does, or remove the AAAA record of %s "+
			"if this host does not serve it over IPv6: Let's Encrypt falls back after a failed IPv6 connection, but waits "+
			"for it first, and other CAs may not fall back", v6.last().Addr, p.name, v4.Hops[0].Addr, p.name)
		if note, nat := p.natNote(v6, o); nat {
			r.Fix = note + " " + r.Fix
		}
	case ca.OK && has4 && !v4.OK:
		r.Status = check.Warning
		r.Summary = fmt.Sprintf("the CA gets the probe over IPv6, but IPv4 fails: %s", failureText(v4))
		r.Fix = fmt.Sprintf("the CA passes while IPv6 works; make IPv4 serve %s as IPv6 does (or correct the A record) "+
			"so that validation does not depend on it", p.name)
		if note, nat := p.natNote(v4, o); nat {
			r.Fix = note
		}
	case ca.OK:
		r.Summary = fmt.Sprintf("the CA would get the probe over %s (%s, %s)", ca.Family, ca.Hops[0].Addr, hopCount(ca))
	case ca.Family == IPv6 && has4 && v4.OK:
		// The AAAA trap: CAFamily kept IPv6, so its failure came after a
		// connection was made, and the CA never gets to IPv4.
		r.Status = check.Problem
		r.Summary = fmt.Sprintf("the AAAA trap: over IPv6 %s, while IPv4 serves the probe; Let's Encrypt asks over IPv6 "+
			"first and will not fall back to IPv4 after an answer", failureText(v6))
		r.Fix = fmt.Sprintf("make the IPv6 listener serve the same site for %s (nginx: `listen [::]:%d;` in that server "+
			"block, beside `listen %d;`; Apache: <VirtualHost *:%d>, not one bound to an IPv4 address), or remove the "+
			"AAAA record of %s if this host does not serve it over IPv6", p.name, DefaultPort, DefaultPort, DefaultPort, p.name)
	default:
		p.failed(&r, ca, res, o)
	}
	return r
}

// failed explains ca, the failing fetch the CA acts on.
func (p probe) failed(r *check.Result, ca FamilyResult, res Result, o Options) {
	r.Status = check.Problem
	last := ca.last()
	switch ca.Failure {
	case FailRedirect:
		r.Summary = "the CA stops at a redirect it does not follow: " + last.Err
		r.Fix = "exempt /.well-known/acme-challenge/ from that redirect (nginx: put the redirect in `location / { ... }`, " +
			"not in the server block), or make it lead to http on port 80 or https on port 443 of a name"
	case FailRefused, FailTimeout, FailNetwork:
		// The CA acts on IPv4 here only when IPv6 failed to connect too.
		var fams []FamilyResult
		for _, f := range res.Families {
			if f.Failure.BeforeConnect() {
				fams = append(fams, f)
			}
		}
		var parts []string
		for _, f := range fams {
			parts = append(parts, fmt.Sprintf("over %s %s", f.Family, failureText(f)))
		}
		r.Summary = "no connection: " + strings.Join(parts, "; ")
		for _, f := range fams {
			if note, nat := p.natNote(f, o); nat {
				r.Status = check.Warning
				r.Fix = note
				return
			}
		}
		port := portOf(last.Addr)
		switch ca.Failure {
		case FailRefused:
			r.Fix = fmt.Sprintf("nothing listens on port %d there: start the web server on that address, or use a path that "+
				"binds the port itself (standalone)", port)
		case FailTimeout:
			r.Fix = fmt.Sprintf("a firewall drops port %d: open it to the Internet, or use a firewall window path that opens "+
				"it during validation; and check that the %s record of %s points at this host", port, recordOf(ca.Addr), p.name)
		default:
			r.Fix = fmt.Sprintf("check that the %s record of %s points at this host and that port %d is reachable there",
				recordOf(ca.Addr), p.name, port)
		}
	case FailNoAnswer:
		r.Summary = fmt.Sprintf("over %s %s", ca.Family, failureText(ca))
		r.Fix = fmt.Sprintf("something holds port %d of %s without answering HTTP there (a stalled proxy, TLS where plain "+
			"HTTP is expected, a firewall that accepts and drops): check what listens there", portOf(last.Addr), hostOf(last.Addr))
	case FailDNS:
		r.Summary = ca.Err
		r.Fix = "create the A or AAAA record of the redirect's target, or make the redirect lead to a name that has one"
	default: // FailStatus, FailBody
		r.Summary, r.Fix = p.answer(ca)
	}
}

// natNote says, when f failed to connect to an address that is on no
// interface of this host, that this host may not be able to reach its own
// public address, so the CA's view cannot be proven from here.
func (p probe) natNote(f FamilyResult, o Options) (string, bool) {
	if !f.Failure.BeforeConnect() {
		return "", false
	}
	ap, err := netip.ParseAddrPort(f.last().Addr)
	if err != nil || o.IsLocal(ap.Addr()) {
		return "", false
	}
	return fmt.Sprintf("%s is not an address of this host (NAT or a load balancer in front), and this host could not "+
		"connect to it: a host behind NAT often cannot reach its own public address (no hairpin NAT), so what the CA "+
		"sees cannot be proven from here. Check from another network (curl -%s http://%s/.well-known/acme-challenge/x "+
		"should reach this host's web server), or run `detour doctor --staging` for the CA's own view; if port %d of "+
		"%s is not forwarded to this host, forward it.", ap.Addr(), familyDigit(ap.Addr()), p.name, ap.Port(), ap.Addr()), true
}

// familyEvidence renders one family's fetch: its address, then one line
// per hop.
func familyEvidence(f FamilyResult) []string {
	lines := []string{fmt.Sprintf("%s (%s record %s):", f.Family, recordOf(f.Addr), f.Addr)}
	for i, h := range f.Hops {
		line := "  " + hopText(h)
		if ap, err := netip.ParseAddrPort(h.Addr); err == nil && i > 0 && familyOf(ap.Addr()) != f.Family {
			line += fmt.Sprintf(" (the CA connects to a redirect's target at its first address, %s, whichever family it began with)", familyOf(ap.Addr()))
		}
		lines = append(lines, line)
	}
	switch {
	case f.Failure == FailDNS:
		lines = append(lines, "  "+f.Err)
	case f.Failure == FailBody:
		lines = append(lines, "  "+f.Err)
	case f.OK:
		lines = append(lines, "  the probe was served")
	}
	return lines
}

// hopText renders one hop: "GET url at addr: 301 (nginx) Location: ...".
func hopText(h Hop) string {
	s := fmt.Sprintf("GET %s at %s: ", selfcheck.Abbreviate(h.URL), h.Addr)
	if h.Status == 0 {
		return s + h.Err
	}
	s += fmt.Sprint(h.Status)
	if h.Server != "" {
		s += " (" + h.Server + ")"
	}
	if h.Location != "" {
		s += " Location: " + selfcheck.Abbreviate(h.Location)
	}
	if h.Err != "" {
		s += ", not followed"
	}
	return s
}

// failureText says in a few words how f failed, at which hop.
func failureText(f FamilyResult) string {
	h := f.last()
	at := ""
	if len(f.Hops) > 1 {
		at = fmt.Sprintf(" (after %s)", plural(len(f.Hops)-1, "redirect"))
	}
	switch f.Failure {
	case FailRefused, FailTimeout, FailNetwork:
		return fmt.Sprintf("the connection to %s failed: %s%s", h.Addr, h.Err, at)
	case FailNoAnswer:
		return fmt.Sprintf("%s accepted the connection for %s but did not answer: %s%s", h.Addr, selfcheck.Abbreviate(h.URL), h.Err, at)
	case FailRedirect:
		return fmt.Sprintf("%s answered %d with a redirect the CA does not follow (Location: %s)", h.Addr, h.Status, selfcheck.Abbreviate(h.Location))
	case FailDNS:
		return f.Err
	case FailStatus:
		return fmt.Sprintf("%s answered %d%s for %s%s", h.Addr, h.Status, serverText(h), selfcheck.Abbreviate(h.URL), at)
	case FailBody:
		return fmt.Sprintf("%s answered 200%s with another body (%s)%s", h.Addr, serverText(h), quoteBody(f.Body), at)
	}
	return "the probe was served"
}

func serverText(h Hop) string {
	if h.Server == "" {
		return ""
	}
	return " (" + h.Server + ")"
}

// hopCount says how many redirects the fetch followed.
func hopCount(f FamilyResult) string {
	if len(f.Hops) <= 1 {
		return "no redirect"
	}
	return plural(len(f.Hops)-1, "redirect") + " followed"
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// quoteBody quotes the start of a body.
func quoteBody(b string) string {
	if b == "" {
		return "empty"
	}
	if len(b) > 60 {
		return fmt.Sprintf("%q…", b[:60])
	}
	return fmt.Sprintf("%q", b)
}

func portOf(addr string) uint16 {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return 0
	}
	return ap.Port()
}

func hostOf(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return addr
	}
	return ap.Addr().String()
}

func familyDigit(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "4"
	}
	return "6"
}
