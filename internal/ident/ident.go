// Package ident parses and normalises ACME identifiers: DNS names (RFC 8555
// §7.1.4, wildcards §7.1.3) and IP addresses (RFC 8738).
//
// Every name Detour handles passes through Parse, so the rest of the program
// can assume lower-case A-labels without a trailing dot.
package ident

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// Identifier types defined by RFC 8555 §9.7.7 and RFC 8738 §3.
const (
	TypeDNS = "dns"
	TypeIP  = "ip"
)

// Identifier is one name a certificate covers.
type Identifier struct {
	Type  string // TypeDNS or TypeIP
	Value string // normalised: lower-case A-label, no trailing dot; or canonical IP text
}

// String returns the identifier's value.
func (id Identifier) String() string { return id.Value }

// IsWildcard reports whether id is a DNS wildcard ("*.example.com").
func (id Identifier) IsWildcard() bool {
	return id.Type == TypeDNS && strings.HasPrefix(id.Value, "*.")
}

// Base returns the name without a leading wildcard label.
func (id Identifier) Base() string { return strings.TrimPrefix(id.Value, "*.") }

// ErrInvalid is wrapped by every error Parse returns.
var ErrInvalid = errors.New("invalid identifier")

var profile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.StrictDomainName(true),
	idna.ValidateLabels(true),
	idna.VerifyDNSLength(true),
	idna.Transitional(false),
)

// Parse normalises s into an identifier. IP addresses (v4 or v6, no zone)
// become TypeIP; anything else must be a DNS name of letters, digits and
// hyphens, optionally with a single leading "*." wildcard label. Unicode
// names are converted to their A-label (punycode) form. Errors explain what
// to change.
func Parse(s string) (Identifier, error) {
	raw := s
	s = strings.TrimSpace(s)
	if s == "" {
		return Identifier{}, fmt.Errorf("%w: empty name", ErrInvalid)
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return Identifier{}, fmt.Errorf("%w %q: names cannot contain spaces; list each name separately", ErrInvalid, raw)
	}
	addr := s
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		addr = s[1 : len(s)-1] // "[2001:db8::1]", as written in URLs
	}
	if ip, err := netip.ParseAddr(addr); err == nil {
		if ip.Zone() != "" {
			return Identifier{}, fmt.Errorf("%w %q: an IP address with a zone (%%%s) cannot be in a certificate", ErrInvalid, raw, ip.Zone())
		}
		return Identifier{Type: TypeIP, Value: ip.Unmap().String()}, nil
	}
	s = strings.TrimSuffix(s, ".")
	wildcard := false
	if s == "*" {
		return Identifier{}, fmt.Errorf("%w %q: a bare wildcard is not allowed; use \"*.example.com\"", ErrInvalid, raw)
	}
	if strings.HasPrefix(s, "*.") {
		wildcard = true
		s = s[2:]
	}
	if strings.Contains(s, "*") {
		return Identifier{}, fmt.Errorf("%w %q: a wildcard may only be the whole first label, as in \"*.example.com\"", ErrInvalid, raw)
	}
	if strings.Contains(s, "_") {
		return Identifier{}, fmt.Errorf("%w %q: underscores are not allowed in certificate names (CA/Browser Forum rules); use a hyphen", ErrInvalid, raw)
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) > 63 {
			return Identifier{}, fmt.Errorf("%w %q: the label %.20q… is %d characters long; DNS allows at most 63 per label", ErrInvalid, raw, label, len(label))
		}
	}
	ascii, err := profile.ToASCII(s)
	if err != nil {
		return Identifier{}, fmt.Errorf("%w %q: %v", ErrInvalid, raw, err)
	}
	ascii = strings.ToLower(ascii)
	if !strings.Contains(ascii, ".") {
		return Identifier{}, fmt.Errorf("%w %q: a certificate name needs at least two labels (e.g. \"host.example.com\")", ErrInvalid, raw)
	}
	if tld := ascii[strings.LastIndexByte(ascii, '.')+1:]; strings.Trim(tld, "0123456789") == "" {
		return Identifier{}, fmt.Errorf("%w %q: the last label is numeric; is this a mistyped IP address?", ErrInvalid, raw)
	}
	if wildcard {
		ascii = "*." + ascii
	}
	return Identifier{Type: TypeDNS, Value: ascii}, nil
}

// ParseAll parses every name, stopping at the first error, and rejects
// duplicates after normalisation.
func ParseAll(names []string) ([]Identifier, error) {
	out := make([]Identifier, 0, len(names))
	seen := make(map[Identifier]bool, len(names))
	for _, n := range names {
		id, err := Parse(n)
		if err != nil {
			return nil, err
		}
		if seen[id] {
			return nil, fmt.Errorf("%w %q: listed twice", ErrInvalid, n)
		}
		seen[id] = true
		out = append(out, id)
	}
	return out, nil
}

// Values returns the identifiers' values in order.
func Values(ids []Identifier) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.Value
	}
	return out
}
