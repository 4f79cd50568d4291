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
	// Lengths and empty labels are checked by Parse itself, after the
	// conversion, so that its messages can say what to change.
	idna.VerifyDNSLength(false),
	idna.Transitional(false),
)

// DNS length limits (RFC 1035 §2.3.4): 63 octets per label, 255 octets on
// the wire, which is 253 characters of text without the trailing dot.
const (
	MaxLabelLen = 63
	MaxNameLen  = 253
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
	if err := checkDots(raw, s); err != nil {
		return Identifier{}, err
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
	ascii, err := profile.ToASCII(s)
	if err != nil {
		return Identifier{}, fmt.Errorf("%w %q: %v", ErrInvalid, raw, err)
	}
	ascii = strings.ToLower(ascii)
	// Lengths count the A-labels: mapping (U+3002 is a dot) and punycode
	// change labels and their length.
	form := ""
	if !strings.EqualFold(ascii, s) {
		form = " in its ASCII (punycode) form"
	}
	if err := checkLabels(raw, ascii, form); err != nil {
		return Identifier{}, err
	}
	full := len(ascii)
	if wildcard {
		full += len("*.")
	}
	if full > MaxNameLen {
		return Identifier{}, fmt.Errorf("%w %q: the name is %d characters long%s; a DNS name may have at most %d", ErrInvalid, raw, full, form, MaxNameLen)
	}
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

// checkDots explains a misplaced dot in s, the trimmed input: more than one
// at the end, one at the start, or two in a row. Each message shows the name
// to write instead.
func checkDots(raw, s string) error {
	trimmed := strings.TrimRight(s, ".")
	if trimmed == "" {
		return fmt.Errorf("%w %q: the name is only dots; write a name such as \"host.example.com\"", ErrInvalid, raw)
	}
	switch n := len(s) - len(trimmed); {
	case n == 2:
		return fmt.Errorf("%w %q: the name ends with two dots; write %q", ErrInvalid, raw, trimmed)
	case n > 2:
		return fmt.Errorf("%w %q: the name ends with %d dots; write %q", ErrInvalid, raw, n, trimmed)
	}
	if strings.HasPrefix(s, ".") {
		return fmt.Errorf("%w %q: the name starts with a dot; write %q", ErrInvalid, raw, strings.TrimLeft(trimmed, "."))
	}
	if strings.Contains(trimmed, "..") {
		labels := strings.FieldsFunc(trimmed, func(r rune) bool { return r == '.' })
		return fmt.Errorf("%w %q: the name has two dots in a row (an empty label); did you mean %q?", ErrInvalid, raw, strings.Join(labels, "."))
	}
	return nil
}

// checkLabels rejects empty labels and labels longer than MaxLabelLen in
// ascii, a converted name without wildcard or trailing dot; form says how
// it differs from what the user wrote.
func checkLabels(raw, ascii, form string) error {
	for _, label := range strings.Split(ascii, ".") {
		if label == "" {
			return fmt.Errorf("%w %q: the name has an empty label (two dots in a row, or a dot at either end); remove the extra dot", ErrInvalid, raw)
		}
		if len(label) > MaxLabelLen {
			return fmt.Errorf("%w %q: the label %.20q… is %d characters long%s; DNS allows at most %d per label", ErrInvalid, raw, label, len(label), form, MaxLabelLen)
		}
	}
	return nil
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
