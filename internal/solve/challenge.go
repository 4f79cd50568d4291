package solve

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"

	"github.com/detour-acme/detour/internal/ident"
)

// Challenge types, as the CA names them in an authorization (RFC 8555 §8).
const (
	// HTTP01 is RFC 8555 §8.3: a file on port 80.
	HTTP01 = "http-01"
	// TLSALPN01 is RFC 8737: a certificate on port 443, ALPN acme-tls/1.
	TLSALPN01 = "tls-alpn-01"
	// DNS01 is RFC 8555 §8.4: a TXT record at _acme-challenge.<name>.
	DNS01 = "dns-01"
	// DNSAccount01 is draft-ietf-acme-dns-account-label: a TXT record at
	// _<account label>._acme-challenge.<name>, so that several clients,
	// each with its own ACME account, validate one name at once.
	DNSAccount01 = "dns-account-01"
	// DNSPersist01 is draft-ietf-acme-dns-persist: a standing TXT record
	// at _validation-persist.<name> authorizes the account.
	DNSPersist01 = "dns-persist-01"
)

// txtChallenge is a challenge answered by one TXT value per
// authorization: where the record goes, and whether its name depends on
// the ACME account.
type txtChallenge struct {
	typ string
	// account reports that the owner name depends on the account URL.
	account bool
	// name returns the owner name (absolute, with a trailing dot) for the
	// identifier's base name.
	name func(base, accountURL string) string
}

// txtChallenges lists, in order of preference, the challenge types whose
// answer is a TXT record holding base64url(SHA-256(key authorization)).
// Every DNS path kind that can set TXT records answers each of them.
var txtChallenges = []txtChallenge{
	{typ: DNS01, name: func(base, _ string) string { return "_acme-challenge." + base + "." }},
	{typ: DNSAccount01, account: true, name: func(base, accountURL string) string {
		return "_" + AccountLabel(accountURL) + "._acme-challenge." + base + "."
	}},
}

// AccountLabel is the dns-account-01 label of the account at accountURL
// (draft-ietf-acme-dns-account-label §3.2): the first 10 bytes of the
// SHA-256 of the URL in base32, lower-cased (16 characters, no padding).
func AccountLabel(accountURL string) string {
	sum := sha256.Sum256([]byte(accountURL))
	return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:10]))
}

// TXTChallenges returns the challenge types answered by a TXT value at a
// name this package computes (see TXTName), dns-01 first.
func TXTChallenges() []string {
	out := make([]string, len(txtChallenges))
	for i, c := range txtChallenges {
		out[i] = c.typ
	}
	return out
}

func txtChallengeOf(typ string) (txtChallenge, bool) {
	for _, c := range txtChallenges {
		if c.typ == typ {
			return c, true
		}
	}
	return txtChallenge{}, false
}

// IsDNS reports whether typ is validated through DNS (a TXT record the
// CA looks up), so that it can validate wildcards and cannot validate IP
// addresses.
func IsDNS(typ string) bool {
	_, txt := txtChallengeOf(typ)
	return txt || typ == DNSPersist01
}

// Types returns every challenge type Detour answers.
func Types() []string {
	return append([]string{HTTP01, TLSALPN01}, append(TXTChallenges(), DNSPersist01)...)
}

// NeedsAccount reports whether the TXT record of typ is named after the
// ACME account, so that its name is known only once the account is.
func NeedsAccount(typ string) bool {
	c, ok := txtChallengeOf(typ)
	return ok && c.account
}

// TXTName returns the owner name (with a trailing dot) of the TXT record
// that answers a challenge of type typ for id under the account at
// accountURL (used only by types for which NeedsAccount is true). A
// wildcard and its base name share the name.
func TXTName(typ string, id ident.Identifier, accountURL string) (string, error) {
	c, ok := txtChallengeOf(typ)
	if !ok {
		return "", fmt.Errorf("%s is not answered by a TXT record; use one of %v", typ, TXTChallenges())
	}
	if id.Type != ident.TypeDNS {
		return "", fmt.Errorf("%w: %s cannot validate the IP address %s (RFC 8738); use http-01 or tls-alpn-01", ErrNotApplicable, typ, id.Value)
	}
	if c.account && accountURL == "" {
		return "", fmt.Errorf("the %s record of %s is named after the ACME account, which is not known here", typ, id.Value)
	}
	return c.name(id.Base(), accountURL), nil
}

// TXTValue is the TXT value of every TXT challenge:
// base64url(SHA-256(key authorization)), RFC 8555 §8.4.
func TXTValue(keyAuthorization string) string {
	sum := sha256.Sum256([]byte(keyAuthorization))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Applicable reports whether challenge type typ can, by the rules of RFC 8555
// and RFC 8738, validate id: wildcards need a DNS challenge, IP addresses
// cannot use one.
func Applicable(typ string, id ident.Identifier) bool {
	switch {
	case id.IsWildcard():
		return IsDNS(typ)
	case id.Type == ident.TypeIP:
		return typ == HTTP01 || typ == TLSALPN01
	}
	return true
}

// NotApplicableReason says why typ cannot validate id (see Applicable) and
// what to add instead; dnsKinds, when given, names the kinds that answer a
// DNS challenge, for the advice.
func NotApplicableReason(typ string, id ident.Identifier, dnsKinds []string) string {
	switch {
	case id.IsWildcard():
		advice := "`detour paths` lists the kinds that answer one"
		if len(dnsKinds) > 0 {
			advice = "a path of kind " + orList(dnsKinds)
		}
		dns := slices.DeleteFunc(Types(), func(t string) bool { return !IsDNS(t) })
		return fmt.Sprintf("a wildcard can only be validated with %s (or %s); list a DNS path too: %s",
			dns[0], orList(dns[1:]), advice)
	case id.Type == ident.TypeIP:
		return "an IP address cannot be validated through DNS (RFC 8738); list an http-01 or tls-alpn-01 path too"
	}
	return "not applicable"
}

// orList renders "a, b or c".
func orList(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return fmt.Sprintf("%s or %s", strings.Join(items[:len(items)-1], ", "), items[len(items)-1])
}

// Challenge is what a solver needs to answer one authorization's challenge.
type Challenge struct {
	Type       string           // one of Types()
	Identifier ident.Identifier // the name being validated (wildcards keep "*.")
	Token      string           // the challenge token (base64url)
	// KeyAuthorization is token "." base64url(account key thumbprint),
	// RFC 8555 §8.1.
	KeyAuthorization string
	// IssuerDomainNames are the CA's issuer domain names offered in a
	// dns-persist-01 challenge (draft-ietf-acme-dns-persist §3.1).
	IssuerDomainNames []string
	// AccountURL is the URL of the ACME account the order runs under
	// (RFC 8555 §7.3), which a dns-persist-01 record must name and some
	// TXT record names are derived from.
	AccountURL string
}

// HTTP01Path is the request path the CA fetches for http-01.
func (c Challenge) HTTP01Path() string { return "/.well-known/acme-challenge/" + c.Token }

// TXT returns the owner name and value of the TXT record that answers c,
// a challenge of one of TXTChallenges().
func (c Challenge) TXT() (name, value string, err error) {
	name, err = TXTName(c.Type, c.Identifier, c.AccountURL)
	return name, TXTValue(c.KeyAuthorization), err
}

// DNS01Name is the owner name of the dns-01 TXT record, with a trailing dot.
func (c Challenge) DNS01Name() string { return "_acme-challenge." + c.Identifier.Base() + "." }

// DNS01Value is the TXT value for dns-01: base64url(SHA-256(key authorization)).
func (c Challenge) DNS01Value() string { return TXTValue(c.KeyAuthorization) }
