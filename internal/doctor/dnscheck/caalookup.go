package dnscheck

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/doctor/check"
)

// Methods are the ACME validation method labels CAA validationmethods may
// name (RFC 8657 §4, the ACME challenge type names), in the order the
// check reports them.
var Methods = []string{"http-01", "tls-alpn-01", "dns-01", "dns-account-01", "dns-persist-01"}

// caaLookup is the outcome of the tree climb.
type caaLookup struct {
	rrs    []*mdns.CAA
	at     string // where the relevant RRset was found
	target string // the end of at's CNAME chain, when followed
	lines  []string
	failed string
	// noAnswer is set when failed is a query without an answer (a
	// timeout, a refused connection) rather than an error rcode.
	noAnswer bool
}

// lookupCAA climbs from the name towards the root (RFC 8659 §3): the
// relevant RRset is the first non-empty CAA RRset of the name and its
// parents, the root excluded. A name's CAA lookup follows its CNAMEs as a
// resolver does (the records at the alias target count as the name's), but
// the climb goes on from the name's parent, never from the target's.
//
// The resolver is asked, as the CA asks its own: a failure (SERVFAIL, a
// timeout) ends the climb, since the CA must not issue then. A REFUSED
// above the zone apex is taken as "no CAA" and said in the evidence: a
// recursive resolver does not refuse public names, a resolver that serves
// only some zones (an authoritative server given as resolver) refuses the
// rest.
func (r *run) lookupCAA(ctx context.Context) caaLookup {
	var out caaLookup
	for x := r.base; x != "."; {
		rrs, target, line, failed, noAnswer := r.caaAt(ctx, x)
		if failed != "" && strings.Contains(failed, "REFUSED") && r.zone != "" && x != r.zone && mdns.IsSubDomain(x, r.zone) {
			out.lines = append(out.lines, line+" (above zone "+r.zone+": taken as no CAA)")
		} else {
			out.lines = append(out.lines, line)
			if failed != "" {
				out.failed, out.noAnswer = failed, noAnswer
				return out
			}
		}
		if len(rrs) > 0 {
			out.rrs, out.at = rrs, x
			if target != x {
				out.target = target
			}
			return out
		}
		off, end := mdns.NextLabel(x, 0)
		if end {
			break
		}
		x = x[off:]
	}
	return out
}

// caaAt asks the resolver for CAA at x, following a CNAME the resolver
// returned without the target's records.
func (r *run) caaAt(ctx context.Context, x string) (rrs []*mdns.CAA, target, line, failed string, noAnswer bool) {
	cur := x
	var chain []string
	for range dns.MaxCNAMEs + 1 {
		chain = append(chain, cur)
		m, err := r.q.ask(ctx, r.q.resolver, cur, mdns.TypeCAA, askOpts{rd: true})
		if err != nil {
			return nil, cur, fmt.Sprintf("resolver %s: CAA %s: %s", r.q.resolver, strings.Join(chain, " -> "), errTail(err)), errTail(err), true
		}
		desc := fmt.Sprintf("resolver %s: CAA %s: ", r.q.resolver, strings.Join(chain, " -> "))
		switch m.Rcode {
		case mdns.RcodeSuccess:
		case mdns.RcodeNameError:
			return nil, cur, desc + "NXDOMAIN", "", false
		default:
			return nil, cur, desc + rcodeName(m.Rcode), rcodeName(m.Rcode), false
		}
		end := cnameEnd(m.Answer, cur)
		for _, rr := range m.Answer {
			if c, ok := rr.(*mdns.CAA); ok && strings.EqualFold(c.Hdr.Name, end) {
				rrs = append(rrs, c)
			}
		}
		if end != cur {
			chain = append(chain, end)
		}
		if len(rrs) > 0 {
			return rrs, end, fmt.Sprintf("resolver %s: CAA %s: %d record(s)", r.q.resolver, strings.Join(chain, " -> "), len(rrs)), "", false
		}
		if end == cur {
			return nil, cur, desc + "none", "", false
		}
		chain = chain[:len(chain)-1]
		cur = end
	}
	return nil, cur, fmt.Sprintf("resolver %s: CAA %s: CNAME chain too long", r.q.resolver, strings.Join(chain, " -> ")), "CNAME chain too long", false
}

// checkCAA looks the relevant CAA RRset up and says what it allows.
func (r *run) checkCAA(ctx context.Context) (CAAResult, check.Result) {
	res := check.New(CheckCAA, r.name, check.OK, "")
	l := r.lookupCAA(ctx)
	for _, line := range l.lines {
		res.Add("%s", line)
	}
	if l.failed != "" && l.noAnswer {
		res.Status = check.Skipped
		res.Summary = "the resolver did not answer the CAA lookup of " + r.display()
		res.Fix = "check that the resolver " + r.q.resolver + " answers, or give doctor another one"
		// Unknown is not forbidden: AllowsIssuer stays true, the check is
		// Skipped and Failed says why.
		return CAAResult{Failed: l.failed, Issuers: r.opts.IssuerDomains, AllowsIssuer: true}, res
	}
	if l.failed != "" {
		out := CAAResult{Failed: l.failed, Issuers: r.opts.IssuerDomains}
		res.Status = check.Problem
		res.Summary = fmt.Sprintf("the CAA lookup of %s fails (%s): the CA must not issue when it cannot check CAA", r.display(), l.failed)
		res.Fix = "make the zone's name servers answer CAA queries (an empty answer is fine): a broken DNSSEC chain (see dns.dnssec) or servers that fail on unknown record types cause this"
		return out, res
	}
	out := EvaluateCAA(l.rrs, l.at, r.wild, r.opts.IssuerDomains)
	out.Target = l.target
	for _, rec := range out.Records {
		res.Add("%s", rec)
	}
	v := caaVerdict(out, r.display(), r.wild, r.opts.AccountURIs)
	res.Status, res.Summary, res.Fix = v.status, v.summary, v.fix
	for _, line := range v.lines {
		res.Add("%s", line)
	}
	return out, res
}

type verdict struct {
	status       check.Status
	summary, fix string
	lines        []string
}

// caaVerdict turns an evaluated CAA RRset into the check's verdict.
func caaVerdict(c CAAResult, name string, wildcard bool, accounts []string) verdict {
	var v verdict
	tag := "issue"
	if wildcard {
		tag = "issuewild"
	}
	at := strings.TrimSuffix(c.At, ".")
	issuer := "the CA"
	if len(c.Issuers) > 0 {
		issuer = strings.Join(c.Issuers, ", ")
	}
	if len(c.Records) == 0 {
		v.status = check.OK
		v.summary = "no CAA record at " + name + " or its parents: every CA may issue, with any method"
		return v
	}
	for _, p := range c.Issues {
		if p.Err != "" {
			v.lines = append(v.lines, fmt.Sprintf("%s %q is malformed (%s): it authorizes no CA", p.Tag, p.Raw, p.Err))
		}
	}
	if len(c.Critical) > 0 {
		v.status = check.Problem
		v.summary = fmt.Sprintf("CAA at %s holds a critical property the CA does not know (%s): it must refuse to issue", at, strings.Join(c.Critical, "; "))
		v.fix = "clear the critical flag (128) of those properties at " + at + ", or remove them"
		return v
	}
	if !c.AllowsIssuer {
		var named []string
		for _, p := range c.Issues {
			if p.Err == "" {
				named = append(named, cmp.Or(p.Issuer, `";" (no CA)`))
			}
		}
		v.status = check.Problem
		v.summary = fmt.Sprintf("CAA at %s allows only %s, not %s", at, strings.Join(named, ", "), issuer)
		if len(c.Issuers) > 0 {
			v.fix = fmt.Sprintf("add `%s. CAA 0 %s \"%s\"` next to the other CAA records (or use a CA they allow)", at, tag, c.Issuers[0])
		}
		return v
	}
	if c.IssuerUnknown {
		v.status = check.Warning
		v.summary = fmt.Sprintf("CAA at %s restricts issuance; the CA's issuer domain names are unknown, so whether it may issue was not decided", at)
		v.fix = "compare the CA's caaIdentities (in its directory) with the CAA records at " + at
	}
	// Which methods does CAA leave to each account?
	accts := accounts
	if len(accts) == 0 {
		accts = []string{""}
	}
	anyAllowed := false
	for _, a := range accts {
		var ok, no []string
		for _, m := range Methods {
			if c.AllowsMethod(m, a) {
				ok = append(ok, m)
			} else {
				no = append(no, m)
			}
		}
		who := "account " + a
		if a == "" {
			who = "an account of this host (none known yet)"
		}
		if len(no) > 0 {
			v.lines = append(v.lines, fmt.Sprintf("for %s: allowed %s; refused %s", who, listOr(ok), strings.Join(no, ", ")))
		}
		anyAllowed = anyAllowed || len(ok) > 0
	}
	switch {
	case v.status == check.Warning:
	case !anyAllowed:
		v.status = check.Problem
		v.summary = fmt.Sprintf("CAA at %s allows %s only for account %s, not for this host's account", at, issuer, cmp.Or(c.AccountURI, "(another)"))
		v.fix = fmt.Sprintf("add `%s. CAA 0 %s \"%s; accounturi=%s\"` (or drop the accounturi parameter), or use the account the record names", at, tag, firstOr(c.Issuers, "<issuer>"), firstOr(accounts, "<account URL>"))
	case c.AccountURI != "" && len(accounts) == 0:
		v.status = check.Warning
		v.summary = fmt.Sprintf("CAA at %s allows %s only for account %s; this host has no account at the CA yet, and a new one would be refused", at, issuer, c.AccountURI)
		v.fix = "use the account " + c.AccountURI + " (import its key), or add a CAA property with this host's account URL once it exists"
	default:
		v.status = check.OK
		v.summary = fmt.Sprintf("CAA at %s allows %s", at, issuer)
		if c.Methods != nil {
			v.summary += " with " + listOr(c.Methods) + " only"
		}
		if c.AccountURI != "" {
			v.summary += " for account " + c.AccountURI
		}
	}
	return v
}

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}

func listOr(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(slices.Clone(s), ", ")
}
