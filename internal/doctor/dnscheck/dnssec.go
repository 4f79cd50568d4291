package dnscheck

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/doctor/check"
)

// DNSSECInputs are the records the DNSSEC verdict rests on, as one
// authoritative server (and the parent, for DS) served them.
type DNSSECInputs struct {
	Zone string // the apex, fully qualified
	// DS is the parent's DS RRset for the zone.
	DS []*mdns.DS
	// Keys is the zone's DNSKEY RRset, KeySigs the RRSIGs over it.
	Keys    []*mdns.DNSKEY
	KeySigs []*mdns.RRSIG
	// SOA is the zone's SOA RRset, SOASigs the RRSIGs over it.
	SOA     []mdns.RR
	SOASigs []*mdns.RRSIG
	// Now is the time signatures must be valid at.
	Now time.Time
}

// DNSSECVerdict is what EvaluateDNSSEC concluded, with the evidence.
type DNSSECVerdict struct {
	DNSSECResult
	// Unverified is set when a signature could not be checked here (an
	// algorithm or digest type miekg/dns does not implement); the zone is
	// then not called broken for it.
	Unverified bool
	Lines      []string
}

// EvaluateDNSSEC checks what a validator checks at the zone cut (RFC 4035
// §5.2, §5.3): a DS of the parent matches a DNSKEY of the zone (digest over
// owner and RDATA, RFC 4034 §5.1.4), that key signs the DNSKEY RRset, and a
// zone key signs the SOA RRset, each signature verifying and within its
// validity period. It does not check the chain above the parent, denial of
// existence (NSEC/NSEC3), or RRsets other than DNSKEY and SOA.
func EvaluateDNSSEC(in DNSSECInputs) DNSSECVerdict {
	var v DNSSECVerdict
	zone := in.Zone
	v.Signed = len(in.Keys) > 0 || len(in.DS) > 0
	switch {
	case len(in.DS) == 0 && len(in.Keys) == 0:
		v.Lines = append(v.Lines, "no DS at the parent and no DNSKEY in the zone: unsigned")
		return v
	case len(in.Keys) == 0:
		v.Broken = true
		v.Reason = fmt.Sprintf("the parent holds a DS for %s (key tag %s) but the zone serves no DNSKEY", zone, dsTags(in.DS))
		return v
	}
	v.Lines = append(v.Lines, "DNSKEY: "+keyList(in.Keys))
	if len(in.DS) == 0 {
		v.Lines = append(v.Lines, "no DS at the parent: validators treat the zone as unsigned (an island of security); nothing to break")
		return v
	}
	v.Lines = append(v.Lines, "DS at the parent: "+dsList(in.DS))
	v.Secure = true

	// A DS matching a key.
	var sep []*mdns.DNSKEY
	unsupported := false
	for _, ds := range in.DS {
		for _, k := range in.Keys {
			if k.KeyTag() != ds.KeyTag || k.Algorithm != ds.Algorithm {
				continue
			}
			d := k.ToDS(ds.DigestType)
			if d == nil {
				unsupported = true
				v.Lines = append(v.Lines, fmt.Sprintf("DS %d uses digest type %d, which this check cannot compute", ds.KeyTag, ds.DigestType))
				continue
			}
			if strings.EqualFold(d.Digest, ds.Digest) && !slices.Contains(sep, k) {
				sep = append(sep, k)
			}
		}
	}
	if len(sep) == 0 {
		if unsupported {
			v.Unverified = true
			return v
		}
		v.Broken = true
		v.Reason = fmt.Sprintf("no DNSKEY of %s matches the DS at the parent (DS key tag %s; zone keys %s)", zone, dsTags(in.DS), keyTags(in.Keys))
		return v
	}
	v.Lines = append(v.Lines, "DS matches DNSKEY "+keyTags(sep))

	// The matching key signs the DNSKEY RRset.
	keyRRs := make([]mdns.RR, len(in.Keys))
	for i, k := range in.Keys {
		keyRRs[i] = k
	}
	ok, why, unver := verifyAny(in.KeySigs, sep, keyRRs, in.Now)
	if unver {
		v.Unverified = true
	}
	if !ok && !unver {
		v.Broken = true
		v.Reason = fmt.Sprintf("the DNSKEY RRset of %s is not validly signed by the key the DS names: %s", zone, why)
		return v
	}
	if ok {
		v.Lines = append(v.Lines, "the DNSKEY RRset is signed by the key the DS names: verified")
	}

	// A zone key signs the SOA.
	if len(in.SOA) == 0 {
		v.Lines = append(v.Lines, "no SOA answered: its signature was not checked")
		return v
	}
	ok, why, unver = verifyAny(in.SOASigs, in.Keys, in.SOA, in.Now)
	if unver {
		v.Unverified = true
	}
	if !ok && !unver {
		v.Broken = true
		v.Reason = fmt.Sprintf("the SOA of %s is not validly signed: %s", zone, why)
		return v
	}
	if ok {
		v.Lines = append(v.Lines, "the SOA is signed by a zone key: verified")
	}
	return v
}

// verifyAny reports whether one of sigs, made by one of keys, verifies over
// rrset and is valid at now. When none does it says why (the best reason
// found: expired before invalid before missing); unverifiable is set when a
// signature's algorithm is not implemented here and no other verified.
func verifyAny(sigs []*mdns.RRSIG, keys []*mdns.DNSKEY, rrset []mdns.RR, now time.Time) (ok bool, why string, unverifiable bool) {
	why = "no RRSIG by such a key"
	for _, s := range sigs {
		for _, k := range keys {
			if k.KeyTag() != s.KeyTag || k.Algorithm != s.Algorithm {
				continue
			}
			err := s.Verify(k, rrset)
			switch {
			case errors.Is(err, mdns.ErrAlg):
				unverifiable = true
				why = fmt.Sprintf("RRSIG algorithm %d cannot be verified here", s.Algorithm)
			case err != nil:
				if !strings.HasPrefix(why, "the RRSIG expired") && !strings.HasPrefix(why, "the RRSIG is not valid yet") {
					why = fmt.Sprintf("the RRSIG by key %d does not verify (%v)", s.KeyTag, err)
				}
			case !s.ValidityPeriod(now):
				exp := time.Unix(int64(s.Expiration), 0).UTC()
				inc := time.Unix(int64(s.Inception), 0).UTC()
				if now.Before(inc) {
					why = fmt.Sprintf("the RRSIG is not valid yet (inception %s)", inc.Format(time.RFC3339))
				} else {
					why = fmt.Sprintf("the RRSIG expired at %s", exp.Format(time.RFC3339))
				}
			default:
				return true, "", false
			}
		}
	}
	return false, why, unverifiable && !strings.HasPrefix(why, "the RRSIG expired")
}

func keyTags(ks []*mdns.DNSKEY) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = fmt.Sprint(k.KeyTag())
	}
	return strings.Join(s, ", ")
}

func keyList(ks []*mdns.DNSKEY) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		role := "ZSK"
		if k.Flags&mdns.SEP != 0 {
			role = "KSK"
		}
		s[i] = fmt.Sprintf("%d (%s, %s)", k.KeyTag(), role, mdns.AlgorithmToString[k.Algorithm])
	}
	return strings.Join(s, ", ")
}

func dsTags(ds []*mdns.DS) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = fmt.Sprint(d.KeyTag)
	}
	return strings.Join(s, ", ")
}

func dsList(ds []*mdns.DS) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = fmt.Sprintf("%d %s %d %s", d.KeyTag, mdns.AlgorithmToString[d.Algorithm], d.DigestType, strings.ToLower(d.Digest))
	}
	return strings.Join(s, "; ")
}

// checkDNSSEC gathers DS (through the resolver, from the parent), DNSKEY
// and SOA with their RRSIGs (from each authoritative server), evaluates
// them per server, and asks the resolver whether it validates.
func (r *run) checkDNSSEC(ctx context.Context, f Facts) (DNSSECResult, check.Result) {
	res := check.New(CheckDNSSEC, r.name, check.OK, "")
	zone := f.Zone
	var out DNSSECResult
	// DS with checking disabled: the parent's data as served, even where a
	// validator would reject it.
	dsMsg, err := r.q.ask(ctx, r.q.resolver, zone, mdns.TypeDS, askOpts{rd: true, do: true, cd: true})
	var ds []*mdns.DS
	switch {
	case err != nil:
		res.Add("%v", err)
	case dsMsg.Rcode != mdns.RcodeSuccess:
		res.Add("resolver %s: DS %s: %s", r.q.resolver, zone, rcodeName(dsMsg.Rcode))
	default:
		for _, rr := range dsMsg.Answer {
			if d, ok := rr.(*mdns.DS); ok && strings.EqualFold(d.Hdr.Name, zone) {
				ds = append(ds, d)
			}
		}
		res.Add("resolver %s: DS %s: %d record(s)", r.q.resolver, zone, len(ds))
	}

	var broken []string
	var lines []string
	asked := 0
	for _, s := range r.servers {
		in, desc, err := r.zoneKeys(ctx, s.Addr, zone)
		if err != nil {
			res.Add("%s (%s): %v", s.Name, s.Addr, err)
			continue
		}
		asked++
		in.DS, in.Now = ds, r.opts.Now()
		v := EvaluateDNSSEC(in)
		res.Add("%s (%s): %s", s.Name, s.Addr, desc)
		out.Signed = out.Signed || v.Signed
		out.Secure = out.Secure || v.Secure
		if v.Broken {
			broken = append(broken, fmt.Sprintf("%s: %s", s.Name, v.Reason))
			if out.Reason == "" {
				out.Reason = v.Reason
			}
		}
		for _, l := range v.Lines {
			if !slices.Contains(lines, l) {
				lines = append(lines, l)
			}
		}
		if v.Unverified {
			lines = append(lines, s.Name+": some signatures could not be verified here (algorithm or digest not implemented)")
		}
	}
	for _, l := range lines {
		res.Add("%s", l)
	}
	if asked == 0 {
		res.Status = check.Skipped
		res.Summary = "no authoritative server of " + zone + " answered for DNSKEY and SOA"
		return out, res
	}

	// What a validating resolver makes of it.
	rv := r.resolverValidates(ctx, zone)
	res.Add("%s", rv.line)
	if rv.fails && len(broken) == 0 {
		broken = append(broken, "resolver "+r.q.resolver+": "+rv.line)
		out.Reason = cmp.Or(out.Reason, fmt.Sprintf("the validating resolver %s answers SERVFAIL for the SOA of %s while answering it with checking disabled", r.q.resolver, zone))
	}
	res.Add("not checked here: the chain above the parent zone, NSEC/NSEC3 denial of existence, signatures on RRsets other than DNSKEY and SOA")

	z := strings.TrimSuffix(zone, ".")
	switch {
	case len(broken) > 0:
		out.Broken = true
		res.Status = check.Problem
		res.Summary = fmt.Sprintf("the DNSSEC chain is broken at %s: %s; validating resolvers, the CA's among them, answer SERVFAIL for every name in the zone, so every DNS path and the CA's CAA lookup fail", z, out.Reason)
		res.Fix = "publish at the registrar the DS of the zone's current key-signing key (or remove the DS to go unsigned), and re-sign the zone if its signatures expired; then wait for the DS TTL"
	case !out.Signed:
		res.Summary = "the zone " + z + " is not signed (no DNSKEY, no DS): nothing to break"
	case !out.Secure:
		res.Summary = "the zone " + z + " is signed but its parent has no DS: validators treat it as unsigned"
	default:
		res.Summary = "the zone " + z + " is signed and its DS, DNSKEY and SOA signatures verify"
		if rv.ad {
			res.Summary += "; the resolver validates it"
		}
	}
	return out, res
}

// zoneKeys asks addr for the zone's DNSKEY and SOA with their RRSIGs.
func (r *run) zoneKeys(ctx context.Context, addr, zone string) (DNSSECInputs, string, error) {
	in := DNSSECInputs{Zone: zone}
	var desc []string
	for _, qt := range []uint16{mdns.TypeDNSKEY, mdns.TypeSOA} {
		m, err := r.q.ask(ctx, addr, zone, qt, askOpts{do: true})
		if err != nil {
			return in, "", err
		}
		if m.Rcode != mdns.RcodeSuccess {
			return in, "", fmt.Errorf("%s %s: %s", mdns.TypeToString[qt], zone, rcodeName(m.Rcode))
		}
		n, sigs := 0, 0
		for _, rr := range m.Answer {
			if !strings.EqualFold(rr.Header().Name, zone) {
				continue
			}
			switch rr := rr.(type) {
			case *mdns.DNSKEY:
				in.Keys = append(in.Keys, rr)
				n++
			case *mdns.SOA:
				in.SOA = append(in.SOA, rr)
				n++
			case *mdns.RRSIG:
				switch rr.TypeCovered {
				case mdns.TypeDNSKEY:
					in.KeySigs = append(in.KeySigs, rr)
					sigs++
				case mdns.TypeSOA:
					in.SOASigs = append(in.SOASigs, rr)
					sigs++
				}
			}
		}
		desc = append(desc, fmt.Sprintf("%s %d record(s), %d RRSIG(s)", mdns.TypeToString[qt], n, sigs))
	}
	return in, strings.Join(desc, "; "), nil
}

// resolverVerdict is what the resolver did with the zone's SOA.
type resolverVerdict struct {
	ad    bool // it validated the answer
	fails bool // SERVFAIL, but it answers with checking disabled
	line  string
}

// resolverValidates asks the resolver for the zone's SOA with DO and AD
// set: a validating resolver sets AD on a validated answer (RFC 6840 §5.7)
// and answers SERVFAIL on a bogus one. A SERVFAIL is asked again with CD
// set: an answer then proves the failure is validation, not reachability.
func (r *run) resolverValidates(ctx context.Context, zone string) resolverVerdict {
	m, err := r.q.ask(ctx, r.q.resolver, zone, mdns.TypeSOA, askOpts{rd: true, do: true, ad: true})
	if err != nil {
		return resolverVerdict{line: err.Error()}
	}
	switch {
	case m.Rcode == mdns.RcodeServerFailure:
		cd, err := r.q.ask(ctx, r.q.resolver, zone, mdns.TypeSOA, askOpts{rd: true, do: true, cd: true})
		if err == nil && cd.Rcode == mdns.RcodeSuccess {
			return resolverVerdict{fails: true, line: fmt.Sprintf("resolver %s: SOA %s: SERVFAIL, but NOERROR with checking disabled (CD): it fails to validate the zone", r.q.resolver, zone)}
		}
		return resolverVerdict{line: fmt.Sprintf("resolver %s: SOA %s: SERVFAIL, also with checking disabled: not a validation failure", r.q.resolver, zone)}
	case m.Rcode != mdns.RcodeSuccess:
		return resolverVerdict{line: fmt.Sprintf("resolver %s: SOA %s: %s", r.q.resolver, zone, rcodeName(m.Rcode))}
	case m.AuthenticatedData:
		return resolverVerdict{ad: true, line: fmt.Sprintf("resolver %s: SOA %s validated (AD bit set)", r.q.resolver, zone)}
	}
	return resolverVerdict{line: fmt.Sprintf("resolver %s: SOA %s answered without the AD bit: it does not validate, or the zone is unsigned", r.q.resolver, zone)}
}
