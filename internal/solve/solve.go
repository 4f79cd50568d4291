// Package solve defines the contract every validation path implements and the
// pieces that compose paths.
//
// A path answers one ACME challenge type: http-01 (RFC 8555 §8.3), dns-01
// (RFC 8555 §8.4) or tls-alpn-01 (RFC 8737). The orchestrator drives it as
//
//	Check(identifier)   before the order: can this path work right now?
//	Present(challenge)  make the CA's check succeed
//	Wait(challenge)     optional: block until the answer is visible (DNS)
//	CleanUp(challenge)  undo Present; always called, even after failure
//
// Check is called before anything is asked of the CA, so a path that cannot
// work costs the user no failed validation (and no rate limit).
package solve

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/detour-acme/detour/internal/ident"
)

// Challenge types.
const (
	HTTP01    = "http-01"
	TLSALPN01 = "tls-alpn-01"
	DNS01     = "dns-01"
	// DNSPersist01 is draft-ietf-acme-dns-persist: a standing TXT record
	// at _validation-persist.<name> authorizes the account.
	DNSPersist01 = "dns-persist-01"
)

// Challenge is what a solver needs to answer one authorization's challenge.
type Challenge struct {
	Type       string           // HTTP01, TLSALPN01 or DNS01
	Identifier ident.Identifier // the name being validated (wildcards keep "*.")
	Token      string           // the challenge token (base64url)
	// KeyAuthorization is token "." base64url(account key thumbprint),
	// RFC 8555 §8.1.
	KeyAuthorization string
	// IssuerDomainNames are the CA's issuer domain names offered in a
	// dns-persist-01 challenge (draft-ietf-acme-dns-persist §3.1).
	IssuerDomainNames []string
	// AccountURL is the URL of the ACME account the order runs under
	// (RFC 8555 §7.3), which a dns-persist-01 record must name.
	AccountURL string
}

// HTTP01Path is the request path the CA fetches for http-01.
func (c Challenge) HTTP01Path() string { return "/.well-known/acme-challenge/" + c.Token }

// DNS01Name is the owner name of the dns-01 TXT record, with a trailing dot.
func (c Challenge) DNS01Name() string { return "_acme-challenge." + c.Identifier.Base() + "." }

// DNS01Value is the TXT value for dns-01: base64url(SHA-256(key authorization)).
func (c Challenge) DNS01Value() string {
	sum := sha256.Sum256([]byte(c.KeyAuthorization))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Solver is one validation path for one challenge type.
//
// Implementations MUST be safe for concurrent use: an order with several
// identifiers presents them all before the CA is asked. CleanUp MUST undo
// exactly what Present did and SHOULD succeed when Present failed halfway.
// Callers run CleanUp under context.WithoutCancel plus a timeout, so that a
// cancelled renewal still removes what it put in place.
type Solver interface {
	// Type returns the challenge type this solver answers.
	Type() string
	// Check reports whether the path can work for id right now, without
	// contacting the CA. An error says what is wrong and how to fix it.
	Check(ctx context.Context, id ident.Identifier) error
	// Present puts the answer to ch in place.
	Present(ctx context.Context, ch Challenge) error
	// CleanUp removes what Present put in place.
	CleanUp(ctx context.Context, ch Challenge) error
}

// Waiter is implemented by solvers whose answer takes time to become visible
// to the CA (DNS propagation). The orchestrator presents every challenge of an
// order first, then waits for all of them in parallel.
type Waiter interface {
	Wait(ctx context.Context, ch Challenge) error
}

// Path is a named solver, as listed in a certificate's configuration.
type Path struct {
	Name   string
	Solver Solver
}

// ErrNotApplicable is returned (wrapped) by Check when a path cannot serve an
// identifier at all, for example http-01 for a wildcard.
var ErrNotApplicable = errors.New("path not applicable")

// Applicable reports whether challenge type typ can, by the rules of RFC 8555
// and RFC 8738, validate id: wildcards need dns-01, IP addresses cannot use
// dns-01.
func Applicable(typ string, id ident.Identifier) bool {
	switch {
	case id.IsWildcard():
		return typ == DNS01 || typ == DNSPersist01
	case id.Type == ident.TypeIP:
		return typ == HTTP01 || typ == TLSALPN01
	}
	return true
}

// ValidToken reports whether tok is a plausible ACME token: non-empty
// base64url without padding (RFC 8555 §8.1). Solvers that use a token in a
// file name or URL path MUST check it.
func ValidToken(tok string) bool {
	if tok == "" || len(tok) > 256 {
		return false
	}
	return strings.Trim(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == ""
}
