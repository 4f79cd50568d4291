package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/doctor/check"
)

// checkZone finds the zone of the name, its primary and name servers, and
// the provider the name servers identify. It fills f.Zone, f.Primary, f.NS,
// f.NSAddrs and f.Provider; the error says why the zone is unknown.
func (r *run) checkZone(ctx context.Context, f *Facts) (check.Result, error) {
	apex, primary, err := r.client.ZoneOf(ctx, r.base)
	if err != nil {
		if errors.Is(err, dns.ErrZoneNotFound) {
			res := check.New(CheckZone, r.name, check.Problem, "no DNS zone holds "+r.display())
			res.Add("%v", err)
			res.Fix = fmt.Sprintf("check the spelling of %s and that its domain is registered and delegated (`dig SOA %s` from another network)", r.display(), r.display())
			return res, fmt.Errorf("%w: %w", errNoZone, err)
		}
		res := check.New(CheckZone, r.name, check.Skipped, "the resolver did not answer")
		res.Add("%v", err)
		res.Fix = "check that the resolver " + r.q.resolver + " answers, or give doctor another one"
		return res, fmt.Errorf("%w: %w", errNoZone, err)
	}
	f.Zone, f.Primary = apex, primary
	r.zone = apex
	res := check.New(CheckZone, r.name, check.OK, "")
	res.Add("resolver %s: zone %s, SOA primary (MNAME) %s", r.q.resolver, apex, primary)

	names, servers, problems := r.zoneServers(ctx, apex)
	f.NS = names
	r.servers = servers
	for _, s := range servers {
		f.NSAddrs = append(f.NSAddrs, s.Addr)
	}
	if len(names) == 0 {
		res.Status = check.Problem
		res.Summary = "zone " + strings.TrimSuffix(apex, ".") + " has no NS records"
		for _, p := range problems {
			res.Add("%s", p)
		}
		res.Fix = "the zone's delegation is broken: have the registrar list the zone's name servers"
		return res, fmt.Errorf("%w: zone %s has no NS records at resolver %s", errNoZone, apex, r.q.resolver)
	}
	res.Add("resolver %s: NS %s", r.q.resolver, strings.Join(names, ", "))
	for _, s := range servers {
		res.Add("name server %s at %s", s.Name, s.Addr)
	}
	for _, p := range problems {
		res.Add("%s", p)
	}

	provider, each := IdentifyProvider(names)
	f.Provider = provider
	var others []string
	for i, p := range each {
		if p != "" && p != provider && !slices.Contains(others, p) {
			others = append(others, p)
		}
		if p != "" {
			res.Add("%s is a %s name server", names[i], p)
		}
	}
	summary := fmt.Sprintf("zone %s, primary %s, %d name server(s)", strings.TrimSuffix(apex, "."), strings.TrimSuffix(primary, "."), len(names))
	switch {
	case provider == "":
		res.Summary = summary + "; no DNS provider recognised from the name servers"
	default:
		pp, _ := providerPattern(provider)
		res.Summary = fmt.Sprintf("%s; DNS hosted at %s: the dns-provider path %q needs %s (`detour paths dns-provider %s` lists the keys)",
			summary, pp.Title, provider, pp.Credentials, provider)
	}
	if len(others) > 0 {
		res.Status = check.Warning
		res.Fix = fmt.Sprintf("the zone is served by %s and %s: a record set through one provider's API reaches the other's servers only if they are kept in sync; make one the primary and the other its secondary, or delegate _acme-challenge to one of them",
			provider, strings.Join(others, ", "))
	}
	if len(servers) == 0 {
		res.Status = check.Problem
		res.Fix = "no name server of the zone has an address this host can find: check the NS names and their glue at the registrar"
	}
	return res, nil
}

// zoneServers returns the zone's NS names (sorted), the addresses to ask
// them at, and lines describing name servers without an address.
func (r *run) zoneServers(ctx context.Context, zone string) ([]string, []nameserver, []string) {
	m, err := r.q.ask(ctx, r.q.resolver, zone, mdns.TypeNS, askOpts{rd: true})
	if err != nil {
		return nil, nil, []string{err.Error()}
	}
	if m.Rcode != mdns.RcodeSuccess {
		return nil, nil, []string{fmt.Sprintf("resolver %s answered %s for NS %s", r.q.resolver, rcodeName(m.Rcode), zone)}
	}
	var names []string
	for _, rr := range m.Answer {
		if n, ok := rr.(*mdns.NS); ok && strings.EqualFold(n.Hdr.Name, zone) {
			names = append(names, mdns.CanonicalName(n.Ns))
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	var servers []nameserver
	var problems []string
	for _, n := range names {
		addrs := r.hostAddrs(ctx, n, m.Extra)
		if len(addrs) == 0 {
			problems = append(problems, fmt.Sprintf("name server %s: no address found at resolver %s", n, r.q.resolver))
		}
		for _, a := range addrs {
			servers = append(servers, nameserver{Name: n, Addr: a})
		}
	}
	return names, servers, problems
}
