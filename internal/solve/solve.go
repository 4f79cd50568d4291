// Package solve defines the contract every validation path implements and the
// pieces that compose paths: the challenge types and their applicability
// (challenge.go), the names of the TXT records that answer the DNS
// challenges, one solver for all of them over a small Records backend
// (txt.go), and the Spec each path kind declares in its own sub-package
// (spec.go; package solve/kinds lists them).
//
// A path answers one ACME challenge type: http-01 (RFC 8555 §8.3), dns-01
// (RFC 8555 §8.4), tls-alpn-01 (RFC 8737), dns-account-01
// (draft-ietf-acme-dns-account-label) or dns-persist-01
// (draft-ietf-acme-dns-persist). The orchestrator drives it as
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
	"errors"
	"strings"

	"github.com/detour-acme/detour/internal/ident"
)

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

// ValidToken reports whether tok is a plausible ACME token: non-empty
// base64url without padding (RFC 8555 §8.1). Solvers that use a token in a
// file name or URL path MUST check it.
func ValidToken(tok string) bool {
	if tok == "" || len(tok) > 256 {
		return false
	}
	return strings.Trim(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == ""
}
