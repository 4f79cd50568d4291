package script

import (
	"context"
	"fmt"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// HTTPSolver answers http-01 (RFC 8555 §8.3) through the hooks: auth
// publishes the key authorization at /.well-known/acme-challenge/<token>,
// cleanup removes it. It is safe for concurrent use.
type HTTPSolver struct {
	hooks *hooks
}

var _ solve.Solver = (*HTTPSolver)(nil)

// Type returns solve.HTTP01.
func (s *HTTPSolver) Type() string { return solve.HTTP01 }

// Check refuses wildcards (RFC 8555 §7.1.3: only DNS challenges validate
// them) and hooks that are missing or that others could change. Whether
// the hook publishes the answer where the CA looks, the self-check shows
// after Present.
func (s *HTTPSolver) Check(ctx context.Context, id ident.Identifier) error {
	if !solve.Applicable(solve.HTTP01, id) {
		return fmt.Errorf("%w: http-01 cannot validate %s; a wildcard needs an exec path with challenge = \"dns-01\", or another DNS path",
			solve.ErrNotApplicable, id.Value)
	}
	if err := s.hooks.check(ctx); err != nil {
		return err
	}
	s.hooks.noteChecked(id)
	return nil
}

// Present runs the auth hook for ch.
func (s *HTTPSolver) Present(ctx context.Context, ch solve.Challenge) error {
	v, err := s.vars(ch)
	if err != nil {
		return err
	}
	return s.hooks.present(ctx, v)
}

// CleanUp runs the cleanup hook for ch, if the path has one.
func (s *HTTPSolver) CleanUp(ctx context.Context, ch solve.Challenge) error {
	v, err := s.vars(ch)
	if err != nil {
		return err
	}
	return s.hooks.cleanUp(ctx, v)
}

// vars checks ch: an http-01 challenge whose token is base64url, since
// hooks make a file name or URL of it.
func (s *HTTPSolver) vars(ch solve.Challenge) (challengeVars, error) {
	if ch.Type == "" {
		ch.Type = solve.HTTP01
	}
	if ch.Type != solve.HTTP01 {
		return challengeVars{}, fmt.Errorf("an http-01 exec path was given a %s challenge", ch.Type)
	}
	if !solve.ValidToken(ch.Token) {
		return challengeVars{}, fmt.Errorf("refusing the token %q for %s: not base64url (RFC 8555 §8.1), and the hook would make a file name of it", ch.Token, ch.Identifier.Value)
	}
	return challengeVars{ch: ch, validation: ch.KeyAuthorization}, nil
}
