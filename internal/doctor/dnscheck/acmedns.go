package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/doctor/check"
)

// checkAcmeDNS looks for a CNAME at _acme-challenge.<name> (an acme-dns
// style delegation, RFC 8555 §8.4 records followed through CNAMEs) and
// asks the authoritative servers of the target's zone for TXT at the
// target: an authoritative answer, even NXDOMAIN or an empty NOERROR, means
// the target's servers are alive; a timeout, REFUSED or SERVFAIL does not.
func (r *run) checkAcmeDNS(ctx context.Context) (AcmeDNSResult, check.Result) {
	var out AcmeDNSResult
	res := check.New(CheckAcmeDNS, r.name, check.OK, "")
	record := "_acme-challenge." + r.base
	target, chain, err := r.client.FollowCNAMEs(ctx, record)
	if err != nil {
		res.Add("%v", err)
		if !isCNAMEError(err) {
			res.Status = check.Skipped
			res.Summary = "the resolver did not answer"
			return out, res
		}
		res.Status = check.Problem
		res.Summary = "the CNAME chain of " + record + " cannot be followed"
		res.Fix = "fix the CNAME records at " + record + ": the CA follows them for every dns-01 validation"
		return out, res
	}
	if len(chain) == 1 {
		res.Status = check.Info
		res.Summary = "no CNAME at " + record + ": no acme-dns delegation yet (`detour acme-dns register` prints the CNAME to add)"
		res.Add("resolver %s: no CNAME at %s", r.q.resolver, record)
		return out, res
	}
	out.CNAME, out.Chain = chain[1], chain
	res.Add("resolver %s: %s", r.q.resolver, strings.Join(chain, " -> "))

	live, server, lines := r.targetLive(ctx, target)
	out.Live, out.Server = live, server
	for _, l := range lines {
		res.Add("%s", l)
	}
	if live {
		res.Summary = fmt.Sprintf("%s is delegated to %s, whose name server %s answers: the acme-dns path (and every dns-01 path, since the CA follows the CNAME) writes there", record, out.CNAME, server)
		return out, res
	}
	res.Status = check.Problem
	res.Summary = fmt.Sprintf("%s is delegated to %s, but its name server%s does not answer: every dns-01 validation of %s follows this CNAME and fails", record, target, serverOf(server), r.display())
	res.Fix = fmt.Sprintf("bring the acme-dns server%s back (it must answer DNS for %s on port 53, UDP and TCP), or remove the CNAME at %s and use another DNS path", serverOf(server), target, record)
	return out, res
}

func serverOf(s string) string {
	if s == "" {
		return ""
	}
	return " " + s
}

// targetLive finds the zone of target and asks its servers for TXT target.
// A referral from them (the target delegated further down) is followed
// once, to the delegated servers. It returns whether one answered
// authoritatively, the NS name of the target's zone, and evidence lines.
func (r *run) targetLive(ctx context.Context, target string) (bool, string, []string) {
	apex, _, err := r.client.ZoneOf(ctx, target)
	if err != nil {
		return false, "", []string{err.Error()}
	}
	names, servers, lines := r.zoneServers(ctx, apex)
	server := ""
	if len(names) > 0 {
		server = names[0]
	}
	if len(servers) == 0 {
		return false, server, append(lines, "zone "+apex+": no name server to ask")
	}
	for range 2 { // the zone's servers, then the delegated ones
		var referral *mdns.Msg
		live := false
		for _, s := range servers {
			m, err := r.q.ask(ctx, s.Addr, target, mdns.TypeTXT, askOpts{})
			switch {
			case err != nil:
				lines = append(lines, fmt.Sprintf("%s (%s): %v", s.Name, s.Addr, errTail(err)))
			case m.Authoritative && (m.Rcode == mdns.RcodeSuccess || m.Rcode == mdns.RcodeNameError):
				lines = append(lines, fmt.Sprintf("%s (%s): TXT %s: %s (authoritative)", s.Name, s.Addr, target, answerDesc(m)))
				live = true
			case isReferral(m, target):
				lines = append(lines, fmt.Sprintf("%s (%s): referral to %s", s.Name, s.Addr, nsNames(m.Ns)))
				referral = m
			default:
				lines = append(lines, fmt.Sprintf("%s (%s): TXT %s: %s%s", s.Name, s.Addr, target, rcodeName(m.Rcode), notAA(m)))
			}
		}
		if live || referral == nil {
			return live, server, lines
		}
		servers = nil
		for _, rr := range referral.Ns {
			if n, ok := rr.(*mdns.NS); ok {
				server = mdns.CanonicalName(n.Ns)
				for _, a := range r.hostAddrs(ctx, n.Ns, referral.Extra) {
					servers = append(servers, nameserver{Name: server, Addr: a})
				}
			}
		}
		if len(servers) == 0 {
			return false, server, append(lines, "the delegated name servers "+nsNames(referral.Ns)+" have no address")
		}
	}
	return false, server, lines
}

// isReferral reports whether m is a referral for name: no answer, not
// authoritative, NS records in the authority section for a zone that
// holds name.
func isReferral(m *mdns.Msg, name string) bool {
	if m.Rcode != mdns.RcodeSuccess || m.Authoritative || len(m.Answer) > 0 {
		return false
	}
	for _, rr := range m.Ns {
		if n, ok := rr.(*mdns.NS); ok && mdns.IsSubDomain(n.Hdr.Name, name) {
			return true
		}
	}
	return false
}

func nsNames(rrs []mdns.RR) string {
	var out []string
	for _, rr := range rrs {
		if n, ok := rr.(*mdns.NS); ok {
			out = append(out, n.Ns)
		}
	}
	return strings.Join(out, ", ")
}

func notAA(m *mdns.Msg) string {
	if m.Authoritative {
		return ""
	}
	return " (not authoritative)"
}

// errTail strips the "asking X for T N: " prefix the evidence line already
// says.
func errTail(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.HasPrefix(s, "asking ") {
		return s[i+2:]
	}
	return s
}

// isCNAMEError reports whether err is a CNAME loop or overlong chain,
// rather than a resolver that did not answer.
func isCNAMEError(err error) bool {
	var ce *dns.CNAMEError
	return errors.As(err, &ce)
}
