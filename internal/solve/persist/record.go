// Package persist is the dns-persist-01 validation path
// (draft-ietf-acme-dns-persist): one standing TXT record at
// _validation-persist.<name> authorizes an ACME account at one CA, so a
// renewal needs no DNS change at all.
//
// The record's RDATA is an RFC 8659 §4.2 issue-value:
//
//	<issuer-domain-name>; accounturi=<uri>[; policy=wildcard][; persistUntil=<unix time>]
//
// Two versions of the draft are in use and differ in the accounturi:
//
//   - draft-01 (Pebble v2.10.1, Let's Encrypt staging, lego v5): the account
//     URL itself (§4.1 item 3), with issuer domain names taken from the
//     directory's caaIdentities (§4.5) and offered in the challenge's
//     "issuer-domain-names".
//   - draft-02: a hashed URI, <accountHashPrefix>sha-256/<base64url digest>,
//     the digest being SHA-256(len(domain) || domain || thumbprint ||
//     account URL) (§4.1 item 3). A CA announces it with the directory meta
//     fields accountHashPrefix and issuerDomainNames (§3.2, §8.3).
//
// Record computes both; Meta.Draft picks one from the CA's directory. The
// Solver checks before any order that the record for the configured account
// and CA is live on every authoritative server, and its Present and CleanUp
// change nothing: the record is standing.
package persist

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Label is the DNS label prepended to the validated name
// (draft-ietf-acme-dns-persist §2, §8.2).
const Label = "_validation-persist"

// PolicyWildcard is the only policy value the drafts define (§4.1 item 4):
// the record then also authorizes the wildcard and subdomains of the name.
const PolicyWildcard = "wildcard"

// Draft is the version of draft-ietf-acme-dns-persist a CA speaks.
type Draft int

// Drafts Detour implements.
const (
	// Draft01 puts the account URL itself in accounturi.
	Draft01 Draft = 1
	// Draft02 puts a hashed account URI in accounturi.
	Draft02 Draft = 2
)

// String returns "draft-01" or "draft-02".
func (d Draft) String() string { return fmt.Sprintf("draft-%02d", int(d)) }

// HashAlgorithm is the RFC 6920 Hash Name String of the digest in a draft-02
// hashed account URI; sha-256 is the one every implementation must support
// (draft-02 §4.1).
const HashAlgorithm = "sha-256"

// Params are the inputs of one dns-persist-01 record.
type Params struct {
	// Identifier is the name validated, e.g. "example.com" or
	// "*.example.com" (the record lives at the base name), in lower-case
	// A-label form as ident.Parse returns it.
	Identifier string
	// IssuerDomainName names the CA (one of its issuer domain names).
	IssuerDomainName string
	// AccountURI is the ACME account URL (RFC 8555 §7.3).
	AccountURI string
	// Wildcard adds policy=wildcard: the record then also authorizes
	// *.<name> and every subdomain (§5).
	Wildcard bool
	// PersistUntil, when set, adds persistUntil=<unix seconds>: the CA
	// ignores the record after that instant (§4.1 item 5).
	PersistUntil time.Time
	// Draft selects the accounturi form; zero means Draft01.
	Draft Draft
	// HashPrefix is the CA's directory meta accountHashPrefix (draft-02).
	HashPrefix string
	// Thumbprint is the unpadded base64url SHA-256 JWK thumbprint (RFC
	// 7638) of the account's current key (draft-02).
	Thumbprint string
	// AnyDomain computes the draft-02 digest over "*" instead of the name,
	// so one value can be reused across names (draft-02 §4.1, the
	// domain-omitted opt-out).
	AnyDomain bool
}

// Record returns the owner name (fully qualified, with a trailing dot) and
// the TXT value of the dns-persist-01 record p describes.
func Record(p Params) (name, value string) {
	base := baseName(p.Identifier)
	uri := p.AccountURI
	if p.Draft == Draft02 {
		uri = HashedAccountURI(p.HashPrefix, domainInput(base, p.AnyDomain), p.Thumbprint, p.AccountURI)
	}
	var b strings.Builder
	b.WriteString(strings.ToLower(strings.TrimSuffix(p.IssuerDomainName, ".")))
	b.WriteString("; accounturi=")
	b.WriteString(uri)
	if p.Wildcard {
		b.WriteString("; policy=" + PolicyWildcard)
	}
	if !p.PersistUntil.IsZero() {
		b.WriteString("; persistUntil=" + strconv.FormatInt(p.PersistUntil.Unix(), 10))
	}
	return Label + "." + base + ".", b.String()
}

func baseName(id string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(id, "*."), "."))
}

func domainInput(base string, any bool) string {
	if any {
		return "*"
	}
	return base
}

// HashedAccountURI returns the draft-02 hashed account URI:
// prefix + "sha-256/" + base64url(SHA-256(len(domain) || domain ||
// thumbprint || accountURL)), domain being the validated name without a
// trailing dot, or "*" for the domain-omitted form (draft-02 §4.1 item 3).
func HashedAccountURI(prefix, domain, thumbprint, accountURL string) string {
	buf := make([]byte, 0, 1+len(domain)+len(thumbprint)+len(accountURL))
	buf = append(buf, byte(len(domain))) // a domain name is at most 255 octets
	buf = append(buf, domain...)
	buf = append(buf, thumbprint...)
	buf = append(buf, accountURL...)
	sum := sha256.Sum256(buf)
	return prefix + HashAlgorithm + "/" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// ZoneLine returns the record in zone-file form (RFC 1035 §5.1), the value
// split into quoted character-strings of at most 255 octets (§3.3.14), as
// draft §9.1 asks of long values.
func ZoneLine(name, value string) string {
	parts := splitStrings(value)
	quoted := make([]string, len(parts))
	for i, p := range parts {
		quoted[i] = quote(p)
	}
	if len(quoted) == 1 {
		return name + " IN TXT " + quoted[0]
	}
	return name + " IN TXT ( " + strings.Join(quoted, " ") + " )"
}

func splitStrings(v string) []string {
	var out []string
	for len(v) > 255 {
		out = append(out, v[:255])
		v = v[255:]
	}
	return append(out, v)
}

// quote writes s as an RFC 1035 quoted string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// IssueValue is a parsed dns-persist-01 TXT value.
type IssueValue struct {
	IssuerDomainName string
	AccountURI       string
	// Policy is "wildcard" or "" (any other value counts as absent, §4.1
	// item 4).
	Policy string
	// PersistUntil is zero when the record has none.
	PersistUntil time.Time
}

// ErrNotIssueValue is wrapped by ParseIssueValue errors.
var ErrNotIssueValue = errors.New("not a dns-persist-01 issue-value")

// ParseIssueValue parses a TXT value as an RFC 8659 §4.2 issue-value with the
// parameters the drafts define: tags are case-insensitive, may appear once,
// and unknown tags are ignored; values are printable ASCII without ';'.
func ParseIssueValue(v string) (IssueValue, error) {
	issuer, rest, _ := strings.Cut(v, ";")
	out := IssueValue{IssuerDomainName: strings.ToLower(trimWSP(issuer))}
	if out.IssuerDomainName == "" {
		return out, fmt.Errorf("%w: no issuer domain name before the first ';'", ErrNotIssueValue)
	}
	if !strings.Contains(v, ";") {
		return out, fmt.Errorf("%w: no accounturi parameter", ErrNotIssueValue)
	}
	seen := map[string]bool{}
	for param := range strings.SplitSeq(rest, ";") {
		param = trimWSP(param)
		if param == "" {
			return out, fmt.Errorf("%w: empty parameter (a doubled or trailing ';')", ErrNotIssueValue)
		}
		tag, val, ok := strings.Cut(param, "=")
		tag, val = strings.ToLower(trimWSP(tag)), trimWSP(val)
		if !ok || tag == "" {
			return out, fmt.Errorf("%w: parameter %q is not tag=value", ErrNotIssueValue, param)
		}
		if seen[tag] {
			return out, fmt.Errorf("%w: parameter %q appears twice", ErrNotIssueValue, tag)
		}
		seen[tag] = true
		for _, r := range val {
			if r < 0x21 || r > 0x7e || r == ';' {
				return out, fmt.Errorf("%w: value of %q holds a space or non-ASCII character", ErrNotIssueValue, tag)
			}
		}
		switch tag {
		case "accounturi":
			out.AccountURI = val
		case "policy":
			if strings.EqualFold(val, PolicyWildcard) {
				out.Policy = PolicyWildcard
			}
		case "persistuntil":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return out, fmt.Errorf("%w: persistUntil %q is not a base-10 UNIX time", ErrNotIssueValue, val)
			}
			out.PersistUntil = time.Unix(n, 0).UTC()
		}
	}
	if out.AccountURI == "" {
		return out, fmt.Errorf("%w: no accounturi parameter", ErrNotIssueValue)
	}
	return out, nil
}

// trimWSP trims RFC 5234 WSP (space, tab) from both ends.
func trimWSP(s string) string { return strings.Trim(s, " \t") }

// Authorizes reports whether the record value v authorizes p at time now:
// same issuer domain name, an accounturi equal (simple string comparison,
// RFC 3986 §6.2.1) to the one p yields — for draft-02 also the
// domain-omitted form — policy=wildcard when p asks for it, and no
// persistUntil at or before now. A false result comes with the reason.
func Authorizes(v string, p Params, now time.Time) (bool, string) {
	iv, err := ParseIssueValue(v)
	if err != nil {
		return false, err.Error()
	}
	_, want := Record(p)
	wantIV, _ := ParseIssueValue(want)
	if iv.IssuerDomainName != wantIV.IssuerDomainName {
		return false, fmt.Sprintf("for another CA (%s)", iv.IssuerDomainName)
	}
	accepted := []string{wantIV.AccountURI}
	if p.Draft == Draft02 {
		q := p
		q.AnyDomain = !p.AnyDomain
		_, other := Record(q)
		otherIV, _ := ParseIssueValue(other)
		accepted = append(accepted, otherIV.AccountURI)
	}
	match := false
	for _, a := range accepted {
		match = match || iv.AccountURI == a
	}
	if !match {
		return false, fmt.Sprintf("for another account (accounturi=%s)", iv.AccountURI)
	}
	if p.Wildcard && iv.Policy != PolicyWildcard {
		return false, "without policy=wildcard, which the wildcard needs"
	}
	if !iv.PersistUntil.IsZero() && !iv.PersistUntil.After(now) {
		return false, fmt.Sprintf("expired (persistUntil %s)", iv.PersistUntil.Format(time.RFC3339))
	}
	return true, ""
}
