// Package stateless implements the "stateless" http-01 path: the web server
// itself answers GET /.well-known/acme-challenge/<token> with
// "<token>.<thumbprint>", where the thumbprint is the account key's RFC 7638
// JWK thumbprint (base64url of its SHA-256).
//
// That is exactly the key authorization of RFC 8555 §8.1, which depends on
// nothing but the token and the account key, so one static rule in the web
// server's configuration (internal/snippet prints it with the thumbprint
// filled in) answers every http-01 challenge of that account: no Detour
// process, no listener and no file take part in validation. Present only
// verifies that the challenge belongs to the account the rule was written
// for; the self-check proves the server really answers.
package stateless

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// Options configures a stateless solver.
type Options struct {
	// Logger receives diagnostics. Nil discards everything.
	Logger *slog.Logger
	// Thumbprint is the ACME account key's RFC 7638 thumbprint (SHA-256,
	// base64url without padding): the value the web server's rule appends
	// to the token. Required.
	Thumbprint string
}

var discardLogger = slog.New(slog.DiscardHandler)

// Solver is the stateless http-01 path. It holds no state and is safe for
// concurrent use.
type Solver struct {
	log        *slog.Logger
	thumbprint string
}

var _ solve.Solver = (*Solver)(nil)

// New returns a stateless solver for the account whose key has the given
// thumbprint.
func New(opts Options) (*Solver, error) {
	if err := ValidThumbprint(opts.Thumbprint); err != nil {
		return nil, err
	}
	s := &Solver{log: opts.Logger, thumbprint: opts.Thumbprint}
	if s.log == nil {
		s.log = discardLogger
	}
	return s, nil
}

// ValidThumbprint checks that tp looks like an RFC 7638 SHA-256 thumbprint:
// 43 base64url characters without padding encoding 32 bytes. It is safe to
// paste into a web server's configuration once it passes.
func ValidThumbprint(tp string) error {
	if tp == "" {
		return errors.New("stateless path: the account thumbprint is empty; `detour snippet stateless` prints it with the web server rule")
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(tp)
	if err != nil || len(b) != sha256.Size {
		return fmt.Errorf("stateless path: %q is not an account key thumbprint (43 base64url characters, RFC 7638); copy it from `detour snippet stateless`", tp)
	}
	return nil
}

// Thumbprint returns the account thumbprint the solver expects.
func (s *Solver) Thumbprint() string { return s.thumbprint }

// Type returns solve.HTTP01.
func (s *Solver) Type() string { return solve.HTTP01 }

// Check reports whether id can be validated by the web server's stateless
// rule: only wildcards cannot (they need dns-01). Whether the rule is in
// place is proved by the self-check after Present.
func (s *Solver) Check(ctx context.Context, id ident.Identifier) error {
	if !solve.Applicable(solve.HTTP01, id) {
		return fmt.Errorf("%w: http-01 cannot validate %q; wildcard names need a dns-01 path", solve.ErrNotApplicable, id.Value)
	}
	return ctx.Err()
}

// Present puts nothing in place: it verifies that the web server's rule,
// which answers "<token>.<thumbprint>", gives ch's key authorization, that
// is that the challenge belongs to the account the rule was written for.
func (s *Solver) Present(ctx context.Context, ch solve.Challenge) error {
	if ch.Type != "" && ch.Type != solve.HTTP01 {
		return fmt.Errorf("presenting %s challenge with the http-01 stateless solver: wrong challenge type", ch.Type)
	}
	if !solve.Applicable(solve.HTTP01, ch.Identifier) {
		return fmt.Errorf("%w: http-01 cannot validate %q", solve.ErrNotApplicable, ch.Identifier.Value)
	}
	if !solve.ValidToken(ch.Token) {
		return fmt.Errorf("presenting http-01 for %q: token %q is not base64url; the web server rule would not match it", ch.Identifier.Value, ch.Token)
	}
	if want := ch.Token + "." + s.thumbprint; ch.KeyAuthorization != want {
		return fmt.Errorf("presenting http-01 for %q: the web server's stateless rule answers with thumbprint %s, but this order's account has another key; the rule was generated for another account: rerun `detour snippet stateless` and put its output in the web server's configuration", ch.Identifier.Value, s.thumbprint)
	}
	s.log.Debug("stateless http-01: the web server answers", "identifier", ch.Identifier.Value, "token", ch.Token)
	return ctx.Err()
}

// CleanUp does nothing: Present put nothing in place.
func (s *Solver) CleanUp(context.Context, solve.Challenge) error { return nil }
