package solve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/detour-acme/detour/internal/ident"
)

// TXTRecord is one TXT value a DNS challenge needs.
type TXTRecord struct {
	// Name is the owner name, absolute with a trailing dot, e.g.
	// "_acme-challenge.example.com." (see TXTName).
	Name string
	// Value is the TXT value; "" in CheckTXT, before any challenge exists.
	Value string
	// Challenge is what the record answers. In CheckTXT only its Type,
	// Identifier and (for a record named after the account) AccountURL
	// are set.
	Challenge Challenge
}

// Records is a DNS backend that puts TXT records in place: RFC 2136
// updates, Detour's embedded DNS server, an acme-dns API, a DNS provider's
// API. One solver, TXT, drives every backend for every challenge type of
// TXTChallenges, so that no backend names a record itself.
//
// Implementations MUST be safe for concurrent use and MUST keep other
// values at the same name: a wildcard and its base name share one name,
// and both values must be served while both are validated.
type Records interface {
	// CheckTXT reports, before anything is ordered, whether a record can
	// be set at r.Name for r.Challenge.Identifier: credentials accepted,
	// zone found, a required CNAME in place. The error says what to fix.
	CheckTXT(ctx context.Context, r TXTRecord) error
	// SetTXT adds r.Value at r.Name.
	SetTXT(ctx context.Context, r TXTRecord) error
	// WaitTXT returns once every server the CA may ask (every
	// authoritative server of the zone) answers r.Value at r.Name.
	WaitTXT(ctx context.Context, r TXTRecord) error
	// DeleteTXT removes exactly r.Value from r.Name; removing a value
	// that is not there is not an error.
	DeleteTXT(ctx context.Context, r TXTRecord) error
}

// TXTOptions configure a TXT solver.
type TXTOptions struct {
	// Challenge is the type answered, one of TXTChallenges(); default
	// DNS01.
	Challenge string
	// Records puts the records in place. Required.
	Records Records
	// AccountURL returns the ACME account URL, for challenge types whose
	// record is named after it (see NeedsAccount); Check calls it. The
	// challenges given to Present carry their own.
	AccountURL func(ctx context.Context) (string, error)
}

// TXT is the solver of every TXT challenge type (dns-01 and the types of
// TXTChallenges) over a Records backend: it names the record and computes
// its value, the backend sets it, waits for it and removes it.
type TXT struct {
	typ        string
	records    Records
	accountURL func(ctx context.Context) (string, error)
}

var (
	_ Solver = (*TXT)(nil)
	_ Waiter = (*TXT)(nil)
)

// NewTXT returns the solver of opts.Challenge over opts.Records.
func NewTXT(opts TXTOptions) (*TXT, error) {
	if opts.Records == nil {
		return nil, errors.New("creating a TXT solver: no Records backend")
	}
	if opts.Challenge == "" {
		opts.Challenge = DNS01
	}
	if !slices.Contains(TXTChallenges(), opts.Challenge) {
		return nil, fmt.Errorf("%q is not answered by a TXT record; use one of %v", opts.Challenge, TXTChallenges())
	}
	return &TXT{typ: opts.Challenge, records: opts.Records, accountURL: opts.AccountURL}, nil
}

// Type returns the challenge type answered.
func (s *TXT) Type() string { return s.typ }

// Records returns the backend.
func (s *TXT) Records() Records { return s.records }

// Check refuses IP addresses (RFC 8738 §7), names the record id's
// challenge needs and asks the backend whether it can be set.
func (s *TXT) Check(ctx context.Context, id ident.Identifier) error {
	if id.Type != ident.TypeDNS {
		return fmt.Errorf("%w: %s cannot validate the IP address %s (RFC 8738); use http-01 or tls-alpn-01", ErrNotApplicable, s.typ, id)
	}
	acct := ""
	if NeedsAccount(s.typ) {
		if s.accountURL == nil {
			return fmt.Errorf("the %s record of %s is named after the ACME account, which is not known here", s.typ, id.Value)
		}
		var err error
		if acct, err = s.accountURL(ctx); err != nil {
			return err
		}
	}
	name, err := TXTName(s.typ, id, acct)
	if err != nil {
		return err
	}
	return s.records.CheckTXT(ctx, TXTRecord{Name: name, Challenge: Challenge{Type: s.typ, Identifier: id, AccountURL: acct}})
}

// record returns the TXT record answering ch.
func (s *TXT) record(ch Challenge) (TXTRecord, error) {
	if ch.Type == "" {
		ch.Type = s.typ
	}
	if ch.Type != s.typ {
		return TXTRecord{}, fmt.Errorf("a %s path was given a %s challenge", s.typ, ch.Type)
	}
	name, value, err := ch.TXT()
	if err != nil {
		return TXTRecord{}, err
	}
	return TXTRecord{Name: name, Value: value, Challenge: ch}, nil
}

// Present sets the record answering ch.
func (s *TXT) Present(ctx context.Context, ch Challenge) error {
	r, err := s.record(ch)
	if err != nil {
		return err
	}
	return s.records.SetTXT(ctx, r)
}

// Wait returns once the record answering ch is served everywhere the CA
// may ask.
func (s *TXT) Wait(ctx context.Context, ch Challenge) error {
	r, err := s.record(ch)
	if err != nil {
		return err
	}
	return s.records.WaitTXT(ctx, r)
}

// CleanUp removes the record answering ch.
func (s *TXT) CleanUp(ctx context.Context, ch Challenge) error {
	r, err := s.record(ch)
	if err != nil {
		return err
	}
	return s.records.DeleteTXT(ctx, r)
}

// Close closes the backend when it holds resources.
func (s *TXT) Close() error {
	if c, ok := s.records.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
