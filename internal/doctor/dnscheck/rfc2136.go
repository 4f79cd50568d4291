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

// checkRFC2136 sends each key's probe to the primary of the zone that
// _acme-challenge.<name> lives in (after its CNAMEs: where an rfc2136 path
// writes), or one unsigned probe when no key is known.
//
// The probe is package dns's Updater.Probe: an UPDATE message whose
// prerequisite section holds one "RRset exists (value independent)" entry
// for the zone's SOA (RFC 2136 §2.4.1) and whose update section is empty.
// It provably changes nothing: a server applies only the update section
// (§3.4), and an empty one has nothing to apply, whether the prerequisite
// holds or not; the SOA serial is bumped only when a change was made
// (§3.6). Yet the server checks the zone, the TSIG signature and its
// update policy before it looks at the prerequisites (§3.1-§3.3), so its
// rcode says whether a real update with that key would be accepted.
func (r *run) checkRFC2136(ctx context.Context, f Facts) (RFC2136Result, check.Result) {
	var out RFC2136Result
	res := check.New(CheckRFC2136, r.name, check.OK, "")
	record := "_acme-challenge." + r.base
	z, err := r.client.FindZone(ctx, record)
	if err != nil {
		res.Status = check.Skipped
		res.Summary = "the zone of " + record + " is unknown"
		res.Add("%v", err)
		return out, res
	}
	out.Zone = z.Name
	if len(z.Chain) > 1 {
		res.Add("resolver %s: %s, so updates go to zone %s", r.q.resolver, strings.Join(z.Chain, " -> "), z.Name)
	}
	addrs := r.hostAddrs(ctx, z.Primary, nil)
	if len(addrs) == 0 {
		res.Status = check.Skipped
		res.Summary = "the primary " + z.Primary + " (SOA MNAME of " + z.Name + ") has no address"
		res.Add("resolver %s: no A or AAAA record for %s", r.q.resolver, z.Primary)
		res.Fix = "a zone whose SOA MNAME is a hidden primary takes updates only where that primary is reachable; set the rfc2136 path's server to its address"
		return out, res
	}
	out.Server = addrs[0]
	res.Add("zone %s, primary (SOA MNAME) %s at %s", z.Name, z.Primary, out.Server)

	keys := r.opts.Keys
	if len(keys) == 0 {
		keys = []TSIGKey{{}} // one unsigned probe
	}
	var lastErr error
	for _, k := range keys {
		line, err := r.probe(ctx, out.Server, z.Name, k)
		out.Tried = append(out.Tried, line)
		res.Add("%s", line)
		if err == nil && !out.Accepted {
			out.Accepted, out.Key = true, k
		}
		if err != nil {
			lastErr = err
		}
	}
	zone := strings.TrimSuffix(z.Name, ".")
	switch {
	case out.Accepted && out.Key.Name == "":
		res.Summary = fmt.Sprintf("the primary %s accepts unsigned updates of zone %s from this host (allowed by address): the rfc2136 path works without a key", out.Server, zone)
	case out.Accepted:
		res.Summary = fmt.Sprintf("the primary %s accepts updates of zone %s signed with key %q (%s)", out.Server, zone, out.Key.Name, out.Key.Source)
	case len(r.opts.Keys) == 0:
		res.Status = check.Info
		res.Summary = "no TSIG key known; rfc2136 needs one"
		res.Fix = fmt.Sprintf("if you run the zone's primary, create a key (`tsig-keygen detour-key`), allow it in the zone (allow-update { key \"detour-key\"; }; or an update-policy grant for %s TXT) and give it to the rfc2136 path", record)
	default:
		res.Status = check.Problem
		res.Summary = fmt.Sprintf("the primary %s accepts none of the %d TSIG key(s) for zone %s", out.Server, len(r.opts.Keys), zone)
		res.Fix = updateFix(lastErr)
	}
	return out, res
}

// probe sends one probe signed with k (unsigned when k has no name) and
// describes the outcome for evidence.
func (r *run) probe(ctx context.Context, server, zone string, k TSIGKey) (string, error) {
	who := "unsigned update"
	var key *dns.TSIGKey
	if k.Name != "" {
		who = fmt.Sprintf("key %q", k.Name)
		if k.Source != "" {
			who += " (" + k.Source + ")"
		}
		key = &dns.TSIGKey{Name: k.Name, Algorithm: k.Algorithm, Secret: k.Secret}
	}
	u, err := dns.NewUpdater(dns.UpdaterOptions{Logger: r.log, Key: key, Timeout: r.opts.Timeout})
	if err != nil {
		return who + ": unusable: " + err.Error(), err
	}
	err = u.Probe(ctx, server, zone)
	if err == nil && key == nil {
		return who + ": accepted (NOERROR)", nil
	}
	if err == nil {
		return who + ": accepted (NOERROR, answer signed with the key)", nil
	}
	var ue *dns.UpdateError
	if errors.As(err, &ue) {
		return fmt.Sprintf("%s: refused (%s): %s", who, updateCodes(ue), refusalMeaning(ue)), err
	}
	return who + ": " + err.Error(), err
}

// updateCodes renders an UpdateError's rcode and TSIG error: "NOTAUTH/BADSIG".
func updateCodes(e *dns.UpdateError) string {
	s := rcodeName(e.Rcode)
	if e.TSIGError != 0 {
		s += "/" + rcodeName(e.TSIGError)
	}
	return s
}

// refusalMeaning says what a refusal means, in short.
func refusalMeaning(e *dns.UpdateError) string {
	switch {
	case e.Unsigned:
		return "the answer is not signed although the update was"
	case e.Verify != nil:
		return "the answer's signature does not verify"
	case e.TSIGError == mdns.RcodeBadTime:
		return "the clocks of this host and the server differ by more than 5 minutes"
	case e.TSIGError != 0 || e.Rcode == mdns.RcodeNotAuth && e.Key != "":
		return "wrong key name, secret or algorithm (or the clocks differ)"
	case e.Rcode == mdns.RcodeNotAuth:
		return "the server is not authoritative for the zone, or wants a signed update"
	case e.Rcode == mdns.RcodeRefused:
		return "the server's policy does not allow this update"
	case e.Rcode == mdns.RcodeNotImplemented:
		return "the server does not implement dynamic updates"
	}
	return "see the server's log"
}

// updateFix is the fix for the last refusal: package dns's message already
// says what to change.
func updateFix(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
