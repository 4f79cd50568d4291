package script

import (
	"context"
	"fmt"
	"time"

	"github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/solve"
)

// DNSSolver answers dns-01 (RFC 8555 §8.4) through the hooks: the generic
// solve.TXT names the record and computes its value, the records backend
// runs auth to add it and cleanup to remove it, and waits with Detour's
// propagation check until every authoritative server answers it.
type DNSSolver struct {
	*solve.TXT
}

// records is the solve.Records backend over the hooks.
type records struct {
	hooks   *hooks
	dns     *dns.Client
	timeout time.Duration
}

var (
	_ solve.Solver  = (*DNSSolver)(nil)
	_ solve.Waiter  = (*DNSSolver)(nil)
	_ solve.Records = (*records)(nil)
)

func newDNS(h *hooks, opts Options) (*DNSSolver, error) {
	c := opts.DNS
	if c == nil {
		var err error
		if c, err = dns.New(dns.Options{Logger: h.log, Resolver: opts.Resolver}); err != nil {
			return nil, fmt.Errorf("setting up the propagation check: %w", err)
		}
	}
	txt, err := solve.NewTXT(solve.TXTOptions{Challenge: solve.DNS01, Records: &records{hooks: h, dns: c, timeout: opts.PropagationTimeout}})
	if err != nil {
		return nil, err
	}
	return &DNSSolver{TXT: txt}, nil
}

// CheckTXT refuses hooks that are missing or that others could change.
// Whether the hook can set the record, only its run shows.
func (r *records) CheckTXT(ctx context.Context, rec solve.TXTRecord) error {
	if err := r.hooks.check(ctx); err != nil {
		return err
	}
	r.hooks.noteChecked(rec.Challenge.Identifier)
	return nil
}

// SetTXT runs the auth hook to add rec.Value at rec.Name.
func (r *records) SetTXT(ctx context.Context, rec solve.TXTRecord) error {
	return r.hooks.present(ctx, vars(rec))
}

// WaitTXT returns once every authoritative server of the zone answers
// rec.Value at rec.Name (following its CNAMEs, as the CA does), or fails
// after the propagation timeout naming those that do not.
func (r *records) WaitTXT(ctx context.Context, rec solve.TXTRecord) error {
	start := time.Now()
	if err := r.dns.Wait(ctx, rec.Name, rec.Value, dns.WaitOptions{Timeout: r.timeout}); err != nil {
		return fmt.Errorf("waiting for the TXT record the auth hook %s set: %w", r.hooks.auth, err)
	}
	r.hooks.log.InfoContext(ctx, "TXT record visible on every authoritative server", "identifier", rec.Challenge.Identifier.Value,
		"challenge", rec.Challenge.Type, "name", rec.Name, "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// DeleteTXT runs the cleanup hook to remove rec.Value from rec.Name, if
// the path has one.
func (r *records) DeleteTXT(ctx context.Context, rec solve.TXTRecord) error {
	return r.hooks.cleanUp(ctx, vars(rec))
}

// vars are the variables of a run for rec.
func vars(rec solve.TXTRecord) challengeVars {
	return challengeVars{ch: rec.Challenge, validation: rec.Value, record: rec.Name}
}
