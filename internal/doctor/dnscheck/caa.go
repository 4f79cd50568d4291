package dnscheck

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	mdns "github.com/miekg/dns"
)

// CAAResult is the relevant CAA RRset of a name (RFC 8659 §3) and what it
// allows the CA.
type CAAResult struct {
	// Records are the properties of the relevant RRset, as found, each
	// with the name it sits at: `example.com. CAA 0 issue "letsencrypt.org"`.
	Records []string
	// At is the name the relevant RRset was found at ("" when there is
	// none): the name itself or the first parent holding one; when that
	// name is an alias, Target says where the records are.
	At string
	// Target is the end of At's CNAME chain when the records came through
	// one; "" otherwise.
	Target string
	// AllowsIssuer is set when the CA may issue: no CAA, no issue property
	// that applies, or one naming one of its issuer domains; also when the
	// issuer is unknown (IssuerUnknown) unless no CA at all may issue.
	// False too when a critical property of an unknown tag forbids every
	// CA, or the lookup failed at the resolver (SERVFAIL); true when the
	// resolver could not be asked at all (dns.caa is then Skipped).
	AllowsIssuer bool
	// IssuerUnknown is set when the properties restrict issuance but the
	// CA's issuer domain names were not given, so AllowsIssuer could not
	// be decided.
	IssuerUnknown bool
	// AccountURI is the accounturi parameter (RFC 8657 §3) of the first
	// property naming the CA; "" none.
	AccountURI string
	// Methods is the validationmethods parameter (RFC 8657 §4) of the
	// first property naming the CA; nil = any.
	Methods []string
	// Issues are the properties that decide (issuewild for a wildcard name
	// when there are any, else issue), parsed.
	Issues []CAAIssue
	// Issuers are the issuer domain names the CA was matched by.
	Issuers []string
	// Critical lists properties with the issuer critical flag and a tag the
	// CA does not know: the CA must then not issue (RFC 8659 §4.1).
	Critical []string
	// Failed says why the lookup failed: an error rcode (SERVFAIL), after
	// which the CA must not issue (RFC 8659 §3, CA/Browser Forum BR
	// 3.2.2.8), or no answer from the resolver at all.
	Failed string
}

// CAAIssue is one issue or issuewild property (RFC 8659 §4.2, §4.3).
type CAAIssue struct {
	// Tag is "issue" or "issuewild".
	Tag string
	// Issuer is the issuer domain name, lower case; "" allows no CA.
	Issuer string
	// Params are the parameters, tags lower case.
	Params map[string]string
	// Raw is the value as found.
	Raw string
	// Err says why the value is malformed; such a property authorizes no
	// CA.
	Err string
}

// knownCAATags are the property tags a CA is taken to understand: RFC
// 8659's issue, issuewild and iodef, and RFC 9495's issuemail, the set
// Let's Encrypt's Boulder knows. A property with the critical flag and any
// other tag stops issuance (RFC 8659 §4.1); a CA that knows more tags
// refuses less.
var knownCAATags = []string{"issue", "issuewild", "iodef", "issuemail"}

// caaFlagCritical is the Issuer Critical flag (RFC 8659 §4.1).
const caaFlagCritical = 128

var (
	caaLabel      = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$`)
	caaParamTag   = regexp.MustCompile(`^[A-Za-z0-9]+$`)
	caaParamValue = regexp.MustCompile(`^[\x21-\x3a\x3c-\x7e]*$`)
	caaMethod     = regexp.MustCompile(`^[A-Za-z0-9]+(-+[A-Za-z0-9]+)*$`)
)

// ParseCAAIssue parses an issue or issuewild property value (RFC 8659 §4.2):
//
//	issuer-domain-name *(";" parameter), parameter = tag "=" value
//
// with white space allowed around each part. An empty issuer domain name
// (";") is valid and allows no CA. Parameter tags are lower-cased; a
// repeated tag is an error.
func ParseCAAIssue(tag, value string) CAAIssue {
	c := CAAIssue{Tag: strings.ToLower(tag), Raw: value, Params: map[string]string{}}
	parts := strings.Split(value, ";")
	issuer := strings.Trim(parts[0], " \t")
	if issuer != "" {
		for l := range strings.SplitSeq(issuer, ".") {
			if !caaLabel.MatchString(l) {
				c.Err = fmt.Sprintf("issuer domain name %q is not a domain name", issuer)
				return c
			}
		}
	}
	c.Issuer = strings.ToLower(issuer)
	for i, p := range parts[1:] {
		p = strings.Trim(p, " \t")
		if p == "" {
			if i == len(parts)-2 {
				continue // a trailing ";", as in "letsencrypt.org;" or ";"
			}
			c.Err = "empty parameter"
			return c
		}
		t, v, ok := strings.Cut(p, "=")
		t, v = strings.ToLower(strings.Trim(t, " \t")), strings.Trim(v, " \t")
		switch {
		case !ok || !caaParamTag.MatchString(t):
			c.Err = fmt.Sprintf("parameter %q is not tag=value", p)
			return c
		case !caaParamValue.MatchString(v):
			c.Err = fmt.Sprintf("value of parameter %q holds a space, ';' or a non-ASCII character", t)
			return c
		}
		if _, dup := c.Params[t]; dup {
			c.Err = fmt.Sprintf("parameter %q appears twice", t)
			return c
		}
		c.Params[t] = v
	}
	return c
}

// methods returns the validationmethods parameter as a list, nil when the
// parameter is absent (any method).
func (c CAAIssue) methods() []string {
	v, ok := c.Params["validationmethods"]
	if !ok {
		return nil
	}
	out := []string{}
	for m := range strings.SplitSeq(v, ",") {
		if caaMethod.MatchString(m) {
			out = append(out, strings.ToLower(m))
		}
	}
	return out
}

// names reports whether the property names one of the issuers (all of
// them when issuers is empty: the CA is unknown, so any named CA may be
// it).
func (c CAAIssue) names(issuers []string) bool {
	if c.Err != "" || c.Issuer == "" {
		return false
	}
	if len(issuers) == 0 {
		return true
	}
	return slices.ContainsFunc(issuers, func(d string) bool {
		return strings.EqualFold(strings.TrimSuffix(d, "."), c.Issuer)
	})
}

// EvaluateCAA evaluates the relevant CAA RRset rrs (found at at) for a
// name (a wildcard when wildcard is set) and a CA known by its issuer
// domain names (empty: unknown).
func EvaluateCAA(rrs []*mdns.CAA, at string, wildcard bool, issuers []string) CAAResult {
	out := CAAResult{At: at, Issuers: issuers, AllowsIssuer: true}
	var issue, wild []CAAIssue
	for _, rr := range rrs {
		out.Records = append(out.Records, fmt.Sprintf("%s CAA %d %s %q", mdns.CanonicalName(rr.Hdr.Name), rr.Flag, rr.Tag, rr.Value))
		tag := strings.ToLower(rr.Tag)
		if rr.Flag&caaFlagCritical != 0 && !slices.Contains(knownCAATags, tag) {
			out.Critical = append(out.Critical, fmt.Sprintf("%d %s %q", rr.Flag, rr.Tag, rr.Value))
		}
		switch tag {
		case "issue":
			issue = append(issue, ParseCAAIssue(tag, rr.Value))
		case "issuewild":
			wild = append(wild, ParseCAAIssue(tag, rr.Value))
		}
	}
	// RFC 8659 §4.3: for a wildcard, issuewild properties replace issue
	// properties when there are any.
	out.Issues = issue
	if wildcard && len(wild) > 0 {
		out.Issues = wild
	}
	if len(out.Critical) > 0 {
		out.AllowsIssuer = false
	}
	if len(out.Issues) == 0 {
		return out
	}
	named := false
	for _, c := range out.Issues {
		if c.names(issuers) {
			if !named {
				out.AccountURI = c.Params["accounturi"]
				out.Methods = c.methods()
			}
			named = true
		}
	}
	if !named {
		out.AllowsIssuer = false
	} else if len(issuers) == 0 {
		out.IssuerUnknown = true
	}
	return out
}

// AllowsMethod reports whether CAA lets the CA validate with method
// ("http-01", "dns-01", "tls-alpn-01", "dns-account-01",
// "dns-persist-01") for the account URL accountURL ("" = unknown). It is
// false only when every property naming the CA restricts it — by a
// validationmethods parameter lacking method (RFC 8657 §4) or an accounturi
// naming another account (RFC 8657 §3); whether the CA may issue at all is
// AllowsIssuer.
func (c CAAResult) AllowsMethod(method, accountURL string) bool {
	any := false
	for _, p := range c.Issues {
		if !p.names(c.Issuers) {
			continue
		}
		any = true
		acct, hasAcct := p.Params["accounturi"]
		acctOK := !hasAcct || accountURL == "" || acct == accountURL
		ms := p.methods()
		methOK := ms == nil || slices.Contains(ms, strings.ToLower(method))
		if acctOK && methOK {
			return true
		}
	}
	return !any
}
