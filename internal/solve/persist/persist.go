package persist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// Binding is what ties records to one account at one CA.
type Binding struct {
	// AccountURL is the ACME account URL (RFC 8555 §7.3).
	AccountURL string
	// Thumbprint is the unpadded base64url SHA-256 JWK thumbprint of the
	// account key (RFC 7638), used by draft-02.
	Thumbprint string
	// Meta is the CA's directory meta object.
	Meta Meta
}

// Options configure a Solver.
type Options struct {
	Logger *slog.Logger
	// Binding returns the account and CA the records name; it may register
	// the account. Required. A successful result is cached.
	Binding func(ctx context.Context) (Binding, error)
	// Policy is "" or PolicyWildcard; a wildcard identifier needs
	// PolicyWildcard.
	Policy string
	// PersistUntil, when set, goes into the printed record.
	PersistUntil time.Time
	// Lookup reads the record from the authoritative servers. Required.
	Lookup Lookup
	// Now is the clock; default time.Now.
	Now func() time.Time
	// ExpiryWarning is how long before a record's persistUntil Check starts
	// warning. Default 14 days.
	ExpiryWarning time.Duration
}

// Solver is the dns-persist-01 path. Check does all the work; Present only
// verifies the challenge against the binding, CleanUp does nothing.
type Solver struct {
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	bound *Binding
}

var _ solve.Solver = (*Solver)(nil)

// New returns a Solver.
func New(opts Options) (*Solver, error) {
	if opts.Binding == nil {
		return nil, errors.New("persist: no account binding")
	}
	if opts.Lookup == nil {
		return nil, errors.New("persist: no DNS lookup")
	}
	if opts.Policy != "" && opts.Policy != PolicyWildcard {
		return nil, fmt.Errorf("persist: policy %q: use \"wildcard\" or leave it unset", opts.Policy)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ExpiryWarning <= 0 {
		opts.ExpiryWarning = 14 * 24 * time.Hour
	}
	return &Solver{opts: opts, log: opts.Logger}, nil
}

// Type returns solve.DNSPersist01.
func (s *Solver) Type() string { return solve.DNSPersist01 }

// binding returns the cached binding, resolving it on first use.
func (s *Solver) binding(ctx context.Context) (Binding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bound != nil {
		return *s.bound, nil
	}
	b, err := s.opts.Binding(ctx)
	if err != nil {
		return Binding{}, err
	}
	s.bound = &b
	return b, nil
}

// Params returns the record parameters for id under binding b.
func (s *Solver) Params(b Binding, id ident.Identifier) (Params, error) {
	issuer, err := b.Meta.Issuer()
	if err != nil {
		return Params{}, err
	}
	return Params{
		Identifier: id.Value, IssuerDomainName: issuer, AccountURI: b.AccountURL,
		Wildcard: s.opts.Policy == PolicyWildcard, PersistUntil: s.opts.PersistUntil,
		Draft: b.Meta.Draft(), HashPrefix: b.Meta.AccountHashPrefix, Thumbprint: b.Thumbprint,
	}, nil
}

// Check reports whether a record authorizing this account at this CA for
// id is live on every authoritative server of its zone. When it is not, the
// error is a *NotLiveError carrying the exact record to publish.
func (s *Solver) Check(ctx context.Context, id ident.Identifier) error {
	if id.Type != ident.TypeDNS {
		return fmt.Errorf("%w: dns-persist-01 validates DNS names, not %s addresses", solve.ErrNotApplicable, id.Type)
	}
	if id.IsWildcard() && s.opts.Policy != PolicyWildcard {
		return fmt.Errorf("%s is a wildcard: set policy = \"wildcard\" on this path and publish the record it prints with policy=wildcard", id.Value)
	}
	b, err := s.binding(ctx)
	if err != nil {
		return fmt.Errorf("preparing the dns-persist-01 record: %w", err)
	}
	p, err := s.Params(b, id)
	if err != nil {
		return err
	}
	res, err := s.Verify(ctx, p, id.IsWildcard())
	if err != nil {
		return err
	}
	for _, until := range res.Expiring {
		s.log.WarnContext(ctx, "the dns-persist-01 record expires soon; publish a new one", "identifier", id.Value,
			"persist_until", until, "record", ZoneLine(res.Name, res.Value))
	}
	return nil
}

// Result is the outcome of Verify when the record is live everywhere.
type Result struct {
	Name, Value string
	// Servers are the authoritative servers that answer it.
	Servers []string
	// Expiring lists persistUntil instants within the warning period.
	Expiring []time.Time
}

// Verify looks the record for p up on every authoritative server. A record
// authorizes when Authorizes accepts it (needWildcard requires
// policy=wildcard); every server must hold one. The error, when not every
// server does, is a *NotLiveError.
func (s *Solver) Verify(ctx context.Context, p Params, needWildcard bool) (Result, error) {
	name, value := Record(p)
	res := Result{Name: name, Value: value}
	answers, err := s.opts.Lookup.Authoritative(ctx, name)
	if err != nil {
		return res, &NotLiveError{Name: name, Value: value, Err: err}
	}
	match := p
	match.Wildcard = needWildcard
	now := s.opts.Now()
	nle := &NotLiveError{Name: name, Value: value}
	for _, a := range answers {
		if a.Problem != "" {
			nle.Servers = append(nle.Servers, ServerProblem{Server: a.Server, Problem: a.Problem})
			continue
		}
		var reasons []string
		found := false
		for _, v := range a.Values {
			ok, why := Authorizes(v, match, now)
			if !ok {
				reasons = append(reasons, fmt.Sprintf("%q is %s", v, strings.TrimPrefix(why, "for ")))
				continue
			}
			found = true
			if iv, _ := ParseIssueValue(v); !iv.PersistUntil.IsZero() && iv.PersistUntil.Sub(now) < s.opts.ExpiryWarning {
				res.Expiring = append(res.Expiring, iv.PersistUntil)
			}
			break
		}
		switch {
		case found:
			res.Servers = append(res.Servers, a.Server)
		case len(a.Values) == 0:
			nle.Servers = append(nle.Servers, ServerProblem{Server: a.Server, Problem: "no TXT record"})
		default:
			nle.Servers = append(nle.Servers, ServerProblem{Server: a.Server, Problem: "no matching record: " + strings.Join(reasons, "; ")})
		}
	}
	if len(answers) == 0 {
		nle.Err = errors.New("the zone lists no authoritative server")
	}
	if len(nle.Servers) > 0 || nle.Err != nil {
		return res, nle
	}
	return res, nil
}

// NotLiveError reports that the record is not answered by every
// authoritative server. Its message ends with the exact record to publish.
type NotLiveError struct {
	Name, Value string
	Servers     []ServerProblem
	// Err is set when the servers could not be asked at all.
	Err error
}

// ServerProblem is one server that does not answer the record.
type ServerProblem struct {
	Server, Problem string
}

func (e *NotLiveError) Error() string {
	var b strings.Builder
	if e.Err != nil {
		fmt.Fprintf(&b, "cannot check %s on its authoritative servers: %v", strings.TrimSuffix(e.Name, "."), e.Err)
	} else {
		fmt.Fprintf(&b, "not every authoritative server answers a dns-persist-01 record for this account and CA at %s", strings.TrimSuffix(e.Name, "."))
		for _, s := range e.Servers {
			fmt.Fprintf(&b, "; %s: %s", s.Server, s.Problem)
		}
	}
	fmt.Fprintf(&b, "; publish exactly this record: %s", ZoneLine(e.Name, e.Value))
	return b.String()
}

// Unwrap returns the lookup error, if any.
func (e *NotLiveError) Unwrap() error { return e.Err }

// LogValue implements slog.LogValuer.
func (e *NotLiveError) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("name", e.Name), slog.String("value", e.Value)}
	for _, s := range e.Servers {
		attrs = append(attrs, slog.String(s.Server, s.Problem))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	return slog.GroupValue(attrs...)
}

// maxIssuers is the most issuer domain names a challenge may carry (§3.1).
const maxIssuers = 10

// Present changes nothing: the record is standing. It verifies that the
// challenge can be answered by the record Check found: the order's account
// is the bound one, and the CA offers the bound issuer domain name.
func (s *Solver) Present(ctx context.Context, ch solve.Challenge) error {
	b, err := s.binding(ctx)
	if err != nil {
		return fmt.Errorf("preparing the dns-persist-01 record: %w", err)
	}
	issuer, err := b.Meta.Issuer()
	if err != nil {
		return err
	}
	if ch.AccountURL != "" && ch.AccountURL != b.AccountURL {
		return fmt.Errorf("the order runs under account %s but the published record names %s; run detour persist-record %s and publish the record it prints",
			ch.AccountURL, b.AccountURL, ch.Identifier.Base())
	}
	switch n := len(ch.IssuerDomainNames); {
	case n > maxIssuers:
		return fmt.Errorf("the CA's dns-persist-01 challenge for %s lists %d issuer domain names, more than the %d the draft allows; it is malformed (report it to the CA)", ch.Identifier.Value, n, maxIssuers)
	case n == 0 && b.Meta.Draft() == Draft01:
		return fmt.Errorf("the CA's dns-persist-01 challenge for %s lists no issuer-domain-names; it is malformed (report it to the CA)", ch.Identifier.Value)
	case n == 0:
		// Draft-02 renamed the field to issuerDomainNames, which the wire
		// layer does not decode yet; the directory's list is binding on
		// the CA (§3.2), so the record still applies.
		s.log.DebugContext(ctx, "challenge carries no issuer-domain-names; relying on the directory's issuerDomainNames", "identifier", ch.Identifier.Value)
	default:
		offered := make([]string, len(ch.IssuerDomainNames))
		for i, n := range ch.IssuerDomainNames {
			offered[i] = normalizeIssuer(n)
		}
		if !slices.Contains(offered, issuer) {
			return fmt.Errorf("the CA offers issuer domain names %s for %s, but the record names %s; the CA's directory and its challenges disagree (report it to the CA)",
				strings.Join(offered, ", "), ch.Identifier.Value, issuer)
		}
	}
	s.log.DebugContext(ctx, "standing dns-persist-01 record answers the challenge", "identifier", ch.Identifier.Value, "issuer", issuer)
	return nil
}

// CleanUp does nothing: the record stays for the next renewal.
func (s *Solver) CleanUp(context.Context, solve.Challenge) error { return nil }
