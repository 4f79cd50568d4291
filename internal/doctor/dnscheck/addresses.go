package dnscheck

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/doctor/check"
)

// InterfaceAddrs returns the addresses of every interface of the host
// (the default of Options.Interfaces).
func InterfaceAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing the host's addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().WithZone(""))
		}
	}
	return out, nil
}

// reservedPrefixes are the special-purpose blocks (IANA registries of RFC
// 6890) a public A/AAAA record must not point into, beyond those netip
// recognises itself (loopback, RFC 1918/4193 private, link-local,
// multicast, unspecified).
var reservedPrefixes = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\" (RFC 791)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT space (RFC 6598)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments (RFC 6890)"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation (RFC 5737)"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation (RFC 5737)"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation (RFC 5737)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking (RFC 2544)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (RFC 1112)"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation (RFC 3849)"},
	{netip.MustParsePrefix("3fff::/20"), "documentation (RFC 9637)"},
	{netip.MustParsePrefix("100::/64"), "discard-only (RFC 6666)"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64 (RFC 8215)"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped (RFC 4291)"},
}

// Reserved says why a is no address the CA can reach on the Internet
// (private, loopback, CGNAT, documentation, ...); "" for a public address.
func Reserved(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "invalid"
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.Is4() && a.IsPrivate():
		return "private (RFC 1918)"
	case a.IsPrivate():
		return "unique local (RFC 4193)"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast():
		return "multicast"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "broadcast"
	}
	for _, p := range reservedPrefixes {
		if p.prefix.Contains(a) {
			return p.what
		}
	}
	return ""
}

// globalIPv6 reports whether a is a global-scope IPv6 address the host
// could be reached at from the Internet.
func globalIPv6(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && a.IsGlobalUnicast() && Reserved(a) == ""
}

// addrFacts is what the address check found.
type addrFacts struct {
	A, AAAA                  []netip.Addr
	Disagree                 bool
	Local, NotLocal, Private []netip.Addr
	HostIPv6                 bool
}

// AddressVerdict classifies the addresses DNS gives for a name against the
// host's own: which are local, which are on no interface, which are
// private or reserved, and whether the host has global IPv6.
type AddressVerdict struct {
	Local, NotLocal, Private []netip.Addr
	HostIPv6                 bool
}

// ClassifyAddresses compares the A/AAAA addresses dnsAddrs with the host's
// addresses local.
func ClassifyAddresses(dnsAddrs, local []netip.Addr) AddressVerdict {
	var v AddressVerdict
	own := map[netip.Addr]bool{}
	for _, a := range local {
		a = a.Unmap().WithZone("")
		own[a] = true
		if globalIPv6(a) {
			v.HostIPv6 = true
		}
	}
	for _, a := range dnsAddrs {
		if own[a.Unmap()] {
			v.Local = append(v.Local, a)
		} else {
			v.NotLocal = append(v.NotLocal, a)
		}
		if Reserved(a) != "" {
			v.Private = append(v.Private, a)
		}
	}
	return v
}

// serverAddrs is what one authoritative server answered for A and AAAA.
type serverAddrs struct {
	server   nameserver
	a, aaaa  []netip.Addr
	problems []string // per type: "A: REFUSED"
	answered bool     // it answered at least one of the questions usably
	reached  bool     // it answered at all (any rcode)
}

// checkAddresses asks every authoritative server for A and AAAA of the name
// (after its CNAMEs) and compares them with the host's addresses.
func (r *run) checkAddresses(ctx context.Context, f Facts) (addrFacts, check.Result) {
	var out addrFacts
	res := check.New(CheckAddresses, r.name, check.OK, "")
	if r.wild {
		res.Status = check.Info
		res.Summary = "a wildcard name: http-01 and tls-alpn-01 cannot validate it, only the DNS paths can"
		res.Add("the CA validates %s by DNS only (RFC 8555 §7.1.3, §8)", r.name)
		return out, res
	}
	target, chain, err := r.client.FollowCNAMEs(ctx, r.base)
	if err != nil {
		res.Add("%v", err)
		if !isCNAMEError(err) {
			res.Status = check.Skipped
			res.Summary = "the resolver did not answer"
			return out, res
		}
		res.Status = check.Problem
		res.Summary = "the name's CNAME chain cannot be followed"
		res.Fix = "fix the CNAME records of " + r.display()
		return out, res
	}
	servers := r.servers
	zone := f.Zone
	if len(chain) > 1 {
		res.Add("resolver %s: %s", r.q.resolver, strings.Join(chain, " -> "))
		apex, _, err := r.client.ZoneOf(ctx, target)
		if err != nil {
			res.Status = check.Problem
			res.Summary = "the zone of the CNAME target " + target + " cannot be found"
			res.Add("%v", err)
			res.Fix = "fix the CNAME of " + r.display() + " or the target's delegation"
			return out, res
		}
		zone = apex
		_, servers, _ = r.zoneServers(ctx, apex)
	}
	var answers []serverAddrs
	if len(servers) == 0 {
		// No authoritative server has an address this host can find (a
		// name server without glue, an internal view): the resolver's
		// answer is the best there is, and the evidence says so.
		res.Add("no authoritative server of zone %s has an address this host can find; asked the resolver instead", zone)
		answers = []serverAddrs{r.askAddrsWith(ctx, nameserver{Name: "resolver", Addr: r.q.resolver}, target, askOpts{rd: true})}
	} else {
		answers = make([]serverAddrs, len(servers))
		var wg sync.WaitGroup
		for i, s := range servers {
			wg.Go(func() { answers[i] = r.askAddrs(ctx, s, target) })
		}
		wg.Wait()
	}

	var sets []string
	reached, usable := 0, 0
	for _, sa := range answers {
		line := fmt.Sprintf("%s (%s): A %s; AAAA %s", sa.server.Name, sa.server.Addr, addrList(sa.a), addrList(sa.aaaa))
		if len(sa.problems) > 0 {
			line += " (" + strings.Join(sa.problems, "; ") + ")"
		}
		res.Add("%s", line)
		if sa.reached {
			reached++
		}
		if !sa.answered {
			continue
		}
		usable++
		for _, a := range sa.a {
			if !slices.Contains(out.A, a) {
				out.A = append(out.A, a)
			}
		}
		for _, a := range sa.aaaa {
			if !slices.Contains(out.AAAA, a) {
				out.AAAA = append(out.AAAA, a)
			}
		}
		set := addrList(sorted(sa.a)) + " " + addrList(sorted(sa.aaaa))
		if !slices.Contains(sets, set) {
			sets = append(sets, set)
		}
	}
	out.Disagree = len(sets) > 1
	if usable == 0 {
		if reached == 0 {
			res.Status = check.Skipped
			res.Summary = "no authoritative server of zone " + zone + " answered this host"
			res.Fix = "check that this host may send DNS queries (UDP and TCP port 53) to the zone's name servers"
			return out, res
		}
		res.Status = check.Problem
		res.Summary = "no authoritative server of zone " + zone + " gives a usable answer"
		res.Fix = "the name servers listed for the zone do not serve it (lame delegation): fix the NS records at the registrar or the zone on the servers"
		return out, res
	}

	local, lerr := r.opts.Interfaces()
	if lerr != nil {
		res.Add("the host's own addresses are unknown: %v", lerr)
	} else {
		res.Add("this host's addresses: %s", addrList(local))
	}
	all := append(slices.Clone(out.A), out.AAAA...)
	v := ClassifyAddresses(all, local)
	out.Private, out.HostIPv6 = v.Private, v.HostIPv6
	if lerr == nil {
		out.Local, out.NotLocal = v.Local, v.NotLocal
	}
	addrVerdict(&res, r.display(), out, lerr == nil)
	return out, res
}

// addrVerdict sets the status, summary and fix of the address check from
// its facts; local tells whether the host's addresses were known.
func addrVerdict(res *check.Result, name string, a addrFacts, local bool) {
	var problems, warnings, fixes []string
	if len(a.A) == 0 && len(a.AAAA) == 0 {
		problems = append(problems, "no A or AAAA record")
		fixes = append(fixes, fmt.Sprintf("add an A (and AAAA, if the host has IPv6) record for %s pointing at this host; without one only the DNS paths (dns-01, dns-persist-01) can validate it", name))
	}
	for _, p := range a.Private {
		problems = append(problems, fmt.Sprintf("%s is %s, unreachable from the CA", p, Reserved(p)))
	}
	if len(a.Private) > 0 {
		fixes = append(fixes, "publish the host's public address instead of "+addrList(a.Private)+" (a private address belongs in an internal view of DNS, not the public one)")
	}
	if len(a.AAAA) > 0 && !a.HostIPv6 && local {
		problems = append(problems, "the AAAA trap: DNS has AAAA "+addrList(a.AAAA)+" but this host has no global IPv6 address; Let's Encrypt tries IPv6 first and does not fall back to IPv4 once it gets an answer or a refusal")
		fixes = append(fixes, "remove the AAAA record, or give this host that address (and have the web server listen on it)")
	}
	var nat []netip.Addr
	for _, n := range a.NotLocal {
		if Reserved(n) == "" && !(n.Is6() && !a.HostIPv6) {
			nat = append(nat, n)
		}
	}
	if len(nat) > 0 {
		warnings = append(warnings, addrList(nat)+" is on no interface of this host: NAT or a load balancer sits in front (or the record is wrong)")
		fixes = append(fixes, "make sure ports 80 and 443 of "+addrList(nat)+" are forwarded to this host (or that the balancer sends /.well-known/acme-challenge/ to it): http-01 then depends on that forward, and the self-check can only test what this host can reach, which may not be the outside view")
	}
	if a.Disagree {
		warnings = append(warnings, "the authoritative servers answer different addresses")
		fixes = append(fixes, "wait for the zone to reach every name server, or fix the one that lags (the CA may ask any of them)")
	}
	found := "A " + addrList(a.A) + ", AAAA " + addrList(a.AAAA)
	switch {
	case len(problems) > 0:
		res.Status = check.Problem
		res.Summary = found + ": " + strings.Join(append(problems, warnings...), "; ")
	case len(warnings) > 0:
		res.Status = check.Warning
		res.Summary = found + ": " + strings.Join(warnings, "; ")
	default:
		res.Status = check.OK
		res.Summary = found + ", on this host's interfaces"
		if !local {
			res.Summary = found
		}
	}
	res.Fix = strings.Join(fixes, "; ")
}

// askAddrs asks one authoritative server for A and AAAA of name.
func (r *run) askAddrs(ctx context.Context, s nameserver, name string) serverAddrs {
	return r.askAddrsWith(ctx, s, name, askOpts{})
}

// askAddrsWith is askAddrs with the query's options: o.rd asks a resolver
// (whose answers carry no AA bit).
func (r *run) askAddrsWith(ctx context.Context, s nameserver, name string, o askOpts) serverAddrs {
	out := serverAddrs{server: s}
	for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		t := mdns.TypeToString[qt]
		m, err := r.q.ask(ctx, s.Addr, name, qt, o)
		switch {
		case err != nil:
			out.problems = append(out.problems, t+": "+strings.TrimPrefix(err.Error(), fmt.Sprintf("asking %s for %s %s: ", s.Addr, t, name)))
			continue
		case m.Rcode != mdns.RcodeSuccess && m.Rcode != mdns.RcodeNameError:
			out.reached = true
			out.problems = append(out.problems, t+": "+rcodeName(m.Rcode))
			continue
		case !m.Authoritative && !o.rd:
			out.reached = true
			out.problems = append(out.problems, t+": answer without the AA bit (not authoritative: lame delegation)")
			continue
		}
		out.reached, out.answered = true, true
		if m.Rcode == mdns.RcodeNameError {
			out.problems = append(out.problems, t+": NXDOMAIN")
		}
		as := addrsIn(m.Answer, name, qt)
		if qt == mdns.TypeA {
			out.a = as
		} else {
			out.aaaa = as
		}
	}
	return out
}

// addrList renders addresses for people: "1.2.3.4, 2001:db8::1", "none".
func addrList(as []netip.Addr) string {
	if len(as) == 0 {
		return "none"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func sorted(as []netip.Addr) []netip.Addr {
	out := slices.Clone(as)
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}
