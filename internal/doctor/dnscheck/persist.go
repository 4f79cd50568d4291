package dnscheck

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/doctor/check"
	"github.com/detour-acme/detour/internal/solve/persist"
)

// checkPersist reads the TXT records at _validation-persist.<name> from
// every authoritative server (package persist's DNSLookup) and parses them
// with persist.ParseIssueValue.
func (r *run) checkPersist(ctx context.Context) (PersistResult, check.Result) {
	owner := persist.Label + "." + r.base
	res := check.New(CheckPersist, r.name, check.OK, "")
	answers, err := persist.DNSLookup{Client: r.client, Timeout: r.opts.Timeout}.Authoritative(ctx, owner)
	if err != nil {
		res.Status = check.Skipped
		res.Summary = "the authoritative servers of " + owner + " cannot be found"
		res.Add("%v", err)
		return PersistResult{}, res
	}
	var values []string
	var sets []string
	for _, a := range answers {
		switch {
		case a.Problem != "":
			res.Add("%s: TXT %s: %s", a.Server, owner, a.Problem)
			continue
		case len(a.Values) == 0:
			res.Add("%s: TXT %s: none", a.Server, owner)
		default:
			res.Add("%s: TXT %s: %s", a.Server, owner, quoteAll(a.Values))
		}
		vs := slices.Sorted(slices.Values(a.Values))
		if set := strings.Join(vs, "\x00"); !slices.Contains(sets, set) {
			sets = append(sets, set)
		}
		for _, v := range a.Values {
			if !slices.Contains(values, v) {
				values = append(values, v)
			}
		}
	}
	v := EvaluatePersist(values, PersistInputs{Name: r.display(), AccountURIs: r.opts.AccountURIs,
		Thumbprints: r.opts.AccountThumbprints, IssuerDomains: r.opts.IssuerDomains, Wildcard: r.wild, Now: r.opts.Now()})
	for _, l := range v.Lines {
		res.Add("%s", l)
	}
	res.Status, res.Summary, res.Fix = v.Status, v.Summary, v.Fix
	if len(sets) > 1 && res.Status != check.Problem {
		res.Status = check.Warning
		res.Summary += "; the authoritative servers answer different records"
		res.Fix = strings.TrimPrefix(res.Fix+"; wait until every name server serves the same record (the CA may ask any of them)", "; ")
	}
	return v.Result, res
}

// PersistInputs are what a dns-persist-01 record is compared with.
type PersistInputs struct {
	Name          string // the base name, for messages
	AccountURIs   []string
	Thumbprints   map[string]string // account URL -> key thumbprint, for draft-02 hashed URIs
	IssuerDomains []string
	Wildcard      bool // the name is a wildcard: the record needs policy=wildcard
	Now           time.Time
}

// PersistVerdict is the evaluation of the TXT values found.
type PersistVerdict struct {
	Result  PersistResult
	Status  check.Status
	Summary string
	Fix     string
	Lines   []string // evidence: what each value is
}

// EvaluatePersist evaluates the TXT values at _validation-persist.<name>.
// A value that is no dns-persist-01 issue-value is ignored (other TXT
// records may share the name). A record matches when it names one of the
// issuer domains and one of the accounts (the account URL itself, draft-01,
// or its draft-02 hashed form when the account's thumbprint is known), has
// policy=wildcard if the name is a wildcard, and has not expired.
func EvaluatePersist(values []string, in PersistInputs) PersistVerdict {
	var v PersistVerdict
	type parsed struct {
		raw string
		iv  persist.IssueValue
	}
	var recs []parsed
	for _, s := range values {
		iv, err := persist.ParseIssueValue(s)
		if err != nil {
			v.Lines = append(v.Lines, fmt.Sprintf("%q ignored: %v", s, err))
			continue
		}
		recs = append(recs, parsed{s, iv})
	}
	if len(recs) == 0 {
		v.Status = check.Info
		v.Summary = fmt.Sprintf("no dns-persist-01 record (`detour persist-record %s` prints the one to add)", in.Name)
		return v
	}
	v.Result.Found = true
	choose := func(p parsed) {
		v.Result.Record, v.Result.Issuer, v.Result.AccountURI = p.raw, p.iv.IssuerDomainName, p.iv.AccountURI
		v.Result.Wildcard, v.Result.PersistUntil = p.iv.Policy == persist.PolicyWildcard, p.iv.PersistUntil
	}
	choose(recs[0])
	var reasons []string
	for _, p := range recs {
		ok, why := persistMatches(p.iv, in)
		if ok {
			choose(p)
			v.Result.MatchesAccount = true
			v.Lines = append(v.Lines, fmt.Sprintf("%q authorizes this host's account", p.raw))
			break
		}
		v.Lines = append(v.Lines, fmt.Sprintf("%q: %s", p.raw, why))
		reasons = append(reasons, why)
	}
	switch {
	case v.Result.MatchesAccount:
		v.Status = check.OK
		v.Summary = fmt.Sprintf("a dns-persist-01 record authorizes account %s at %s: the persist path works with no DNS change", v.Result.AccountURI, v.Result.Issuer)
		if !v.Result.PersistUntil.IsZero() {
			v.Summary += fmt.Sprintf(" (until %s)", v.Result.PersistUntil.Format(time.RFC3339))
		}
	case len(in.AccountURIs) == 0 || len(in.IssuerDomains) == 0:
		v.Status = check.Info
		v.Summary = fmt.Sprintf("a dns-persist-01 record for %s (accounturi=%s) is there; this host's account or the CA's issuer domain is unknown, so it was not compared", v.Result.Issuer, v.Result.AccountURI)
	default:
		v.Status = check.Warning
		v.Summary = "the dns-persist-01 record does not authorize this host's account: " + strings.Join(reasons, "; ")
		v.Fix = fmt.Sprintf("add the record `detour persist-record %s` prints for this account (the other records may stay: each authorizes its own account and CA)", in.Name)
	}
	return v
}

// persistMatches reports whether iv authorizes one of the accounts, and
// why not.
func persistMatches(iv persist.IssueValue, in PersistInputs) (bool, string) {
	if len(in.IssuerDomains) > 0 && !slices.ContainsFunc(in.IssuerDomains, func(d string) bool {
		return strings.EqualFold(strings.TrimSuffix(d, "."), iv.IssuerDomainName)
	}) {
		return false, fmt.Sprintf("for another CA (issuer %s; this CA is %s)", iv.IssuerDomainName, strings.Join(in.IssuerDomains, ", "))
	}
	if len(in.AccountURIs) > 0 && !accountMatches(iv.AccountURI, in) {
		if i := strings.Index(iv.AccountURI, persist.HashAlgorithm+"/"); i >= 0 && len(in.Thumbprints) == 0 {
			return false, fmt.Sprintf("a hashed account URI (draft-02) that cannot be compared without the account key's thumbprint (accounturi=%s)", iv.AccountURI)
		}
		return false, fmt.Sprintf("for another account (accounturi=%s)", iv.AccountURI)
	}
	if in.Wildcard && iv.Policy != persist.PolicyWildcard {
		return false, "without policy=wildcard, which a wildcard name needs"
	}
	if !iv.PersistUntil.IsZero() && !iv.PersistUntil.After(in.Now) {
		return false, fmt.Sprintf("expired (persistUntil %s)", iv.PersistUntil.Format(time.RFC3339))
	}
	if len(in.AccountURIs) == 0 || len(in.IssuerDomains) == 0 {
		return false, "not compared: this host's account or the CA's issuer domain is unknown"
	}
	return true, ""
}

// accountMatches compares an accounturi with the accounts: the URL itself
// (draft-01), or the draft-02 hashed URI over the name or "*", its prefix
// taken from the record.
func accountMatches(uri string, in PersistInputs) bool {
	if slices.Contains(in.AccountURIs, uri) {
		return true
	}
	i := strings.Index(uri, persist.HashAlgorithm+"/")
	if i < 0 {
		return false
	}
	prefix := uri[:i]
	for _, acct := range in.AccountURIs {
		tp := in.Thumbprints[acct]
		if tp == "" {
			continue
		}
		for _, d := range []string{strings.ToLower(strings.TrimSuffix(in.Name, ".")), "*"} {
			if persist.HashedAccountURI(prefix, d, tp, acct) == uri {
				return true
			}
		}
	}
	return false
}

func quoteAll(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}
