package firewall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// cleanupTimeout bounds closing a window when the caller's context is
// already done.
const cleanupTimeout = 30 * time.Second

// SolverOptions configure Wrap.
type SolverOptions struct {
	Logger *slog.Logger
	// Keeper opens and closes the windows. Required.
	Keeper *Keeper
	// Port is the port the CA connects to: 80 for http-01 and 443 for
	// tls-alpn-01 on a public CA. Required.
	Port int
	// Family limits the families opened, e.g. to IPv4 when the path
	// listens on an IPv4 address only. Empty means both.
	Family Family
	// Timeout is how long a window may stay open; the firewall closes it
	// by itself after that. Zero means DefaultTimeout.
	Timeout time.Duration
	// AfterOpen, when set, runs right after a window opens and before the
	// inner Present; an error fails Present (tests hold the window open
	// here to kill the process).
	AfterOpen func(ctx context.Context, w Window) error
}

// Solver wraps an http-01 or tls-alpn-01 solver in a firewall window: the
// port opens just before the inner Present and closes right after the
// inner CleanUp, which the renewal runs once the CA has validated.
type Solver struct {
	inner solve.Solver
	opts  SolverOptions
	log   *slog.Logger

	mu     sync.Mutex
	leases map[string]Lease // by challenge
}

var _ solve.Solver = (*Solver)(nil)

// Wrap returns inner wrapped in a firewall window.
func Wrap(inner solve.Solver, opts SolverOptions) (*Solver, error) {
	switch inner.Type() {
	case solve.HTTP01, solve.TLSALPN01:
	default:
		return nil, fmt.Errorf("a firewall window wraps http-01 or tls-alpn-01 paths, not %s (%s needs no open port)", inner.Type(), inner.Type())
	}
	if opts.Keeper == nil {
		return nil, errors.New("firewall window: no keeper")
	}
	if opts.Port < 1 || opts.Port > 65535 {
		return nil, fmt.Errorf("firewall window port %d: use a port from 1 to 65535", opts.Port)
	}
	if opts.Family == "" {
		opts.Family = Inet
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Logger == nil {
		opts.Logger = discard
	}
	return &Solver{inner: inner, opts: opts, log: opts.Logger, leases: map[string]Lease{}}, nil
}

// Inner returns the wrapped solver.
func (s *Solver) Inner() solve.Solver { return s.inner }

// Type implements solve.Solver.
func (s *Solver) Type() string { return s.inner.Type() }

// window returns the window validating id needs.
func (s *Solver) window(id ident.Identifier) (Window, error) {
	f := FamilyFor(id.Value).Intersect(s.opts.Family)
	if f == "" {
		return Window{}, fmt.Errorf("%s is an %s address but the path serves %s only: set the listen address to match, "+
			"or use another path for it", id.Value, FamilyFor(id.Value), s.opts.Family)
	}
	return Window{Port: s.opts.Port, Family: f, Proto: ProtoTCP, Timeout: s.opts.Timeout, Identifier: id.Value}, nil
}

// Check implements solve.Solver: the firewall can be changed here
// (permission, kernel support, a ruleset Detour can change safely) and
// the inner path can work. Nothing is changed but the removal of stale
// rules left by killed runs.
func (s *Solver) Check(ctx context.Context, id ident.Identifier) error {
	w, err := s.window(id)
	if err != nil {
		return err
	}
	if err := s.opts.Keeper.Check(ctx, w); err != nil {
		return fmt.Errorf("firewall window (%s): %w", s.opts.Keeper.Backend().Name(), err)
	}
	return s.inner.Check(ctx, id)
}

func key(ch solve.Challenge) string { return ch.Type + " " + ch.Identifier.Value + " " + ch.Token }

// Present implements solve.Solver.
func (s *Solver) Present(ctx context.Context, ch solve.Challenge) error {
	w, err := s.window(ch.Identifier)
	if err != nil {
		return err
	}
	l, err := s.opts.Keeper.Open(ctx, w)
	if err != nil {
		return fmt.Errorf("opening the firewall window (%s): %w", s.opts.Keeper.Backend().Name(), err)
	}
	s.mu.Lock()
	s.leases[key(ch)] = l
	s.mu.Unlock()
	if s.opts.AfterOpen != nil {
		if err := s.opts.AfterOpen(ctx, w); err != nil {
			return err
		}
	}
	return s.inner.Present(ctx, ch)
}

// CleanUp implements solve.Solver: the inner CleanUp, then the window
// closes, even when ctx is already cancelled.
func (s *Solver) CleanUp(ctx context.Context, ch solve.Challenge) error {
	innerErr := s.inner.CleanUp(ctx, ch)
	s.mu.Lock()
	l, ok := s.leases[key(ch)]
	delete(s.leases, key(ch))
	s.mu.Unlock()
	if !ok {
		return innerErr
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := s.opts.Keeper.Close(cctx, l); err != nil {
		closes := "the firewall closes it by itself at the timeout"
		if IsCloud(l.Backend) {
			closes = "a cloud rule stays until the next Detour run or `detour firewall close --stale` (the systemd timer) removes it after the timeout"
		}
		s.log.ErrorContext(cctx, "closing the firewall window failed; "+closes, "port", l.Port, "until", l.Until, "error", err)
		return errors.Join(innerErr, fmt.Errorf("closing the firewall window: %w", err))
	}
	return innerErr
}

// Close closes the inner solver when it holds resources.
func (s *Solver) Close() error {
	if c, ok := s.inner.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
