// Package acmedns answers TXT challenges (dns-01, RFC 8555 §8.4, and the
// other types of solve.TXTChallenges) through an acme-dns server
// (github.com/joohoi/acme-dns, or `detour dns-server`).
//
// The owner of example.com creates one record, once, at the name the
// challenge type gives (solve.TXTName; for dns-01 _acme-challenge.<name>):
//
//	_acme-challenge.example.com. CNAME <subdomain>.auth.example.net.
//
// and the CA's resolver follows it (RFC 1034 §3.6.2) into the acme-dns
// server's zone, where Present sets the TXT value through the server's HTTP
// API. No credentials for example.com's DNS are needed, and the acme-dns
// credentials can change nothing but that one TXT record.
//
// The package is a solve.Records backend driven by the generic solve.TXT
// solver, which names the record and computes its value. The first time a
// domain is seen the backend registers an account on the server and stores
// its credentials (per server and domain, in the state store as a secret
// key, or in a lego/certbot compatible credentials file), then Check fails
// with a *CNAMEError naming the exact record to create, until the record
// resolves. Accounts are keyed by the identifier's base domain, whatever
// the record's name, so a wildcard and its base name share one account, and
// so do the challenge types. Present posts the value; Wait polls the
// acme-dns zone's authoritative servers until they serve it; CleanUp does
// nothing, since acme-dns servers keep only recent values (Detour's expires
// each after an hour; acme-dns keeps the last two).
package acmedns

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	ddns "github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
)

// DefaultPropagationTimeout bounds Wait when Options.PropagationTimeout is 0.
const DefaultPropagationTimeout = 2 * time.Minute

// Options configures a Solver.
type Options struct {
	// Logger receives progress messages; nil discards them.
	Logger *slog.Logger
	// Server is the base URL of the acme-dns API, e.g.
	// "https://auth.example.net". Required. Plain http:// is accepted only
	// for loopback addresses: the API key travels in a header.
	Server string
	// Storage keeps the accounts when CredentialsFile is empty.
	Storage store.Storage
	// CredentialsFile, when set, keeps the accounts in this JSON file
	// (accounts by domain, the format lego and certbot-dns-acmedns use),
	// created 0600 if missing.
	CredentialsFile string
	// AllowFrom restricts new accounts to update from these CIDR ranges.
	AllowFrom []string
	// Resolver (host:port) is asked whether the CNAME exists and where the
	// acme-dns zone's name servers are. Default: the first nameserver of
	// /etc/resolv.conf. Ignored when DNS is set.
	Resolver string
	// DNS, when set, is the client for those questions and for Wait, which
	// asks every authoritative server of the acme-dns zone directly.
	DNS *ddns.Client
	// PropagationTimeout bounds Wait. 0 means DefaultPropagationTimeout.
	PropagationTimeout time.Duration
	// HTTPClient sends the API requests. Default: a client with 30s
	// timeouts and the system roots.
	HTTPClient *http.Client
	// Challenge is the challenge type answered, one of
	// solve.TXTChallenges(); default dns-01.
	Challenge string
	// AccountURL returns the ACME account URL, for challenge types whose
	// record is named after the account (see solve.NeedsAccount).
	AccountURL func(ctx context.Context) (string, error)
}

// Solver is a solve.Solver for the TXT challenges through an acme-dns
// server: the generic solve.TXT over an acme-dns backend.
type Solver struct {
	*solve.TXT
	r *records
}

// records is the solve.Records backend: the acme-dns API client and the
// accounts it uses, one per domain.
type records struct {
	log       *slog.Logger
	server    string
	allowFrom []string
	dns       *ddns.Client
	timeout   time.Duration
	http      *http.Client
	creds     *credStore

	mu       sync.Mutex
	accounts map[string]Account // by domain, loaded or registered
}

var (
	_ solve.Solver  = (*Solver)(nil)
	_ solve.Waiter  = (*Solver)(nil)
	_ solve.Records = (*records)(nil)
)

// New returns a Solver configured by opts.
func New(opts Options) (*Solver, error) {
	u, err := CheckServerURL(opts.Server)
	if err != nil {
		return nil, fmt.Errorf("creating the acme-dns solver: %w", err)
	}
	if opts.Storage == nil && opts.CredentialsFile == "" {
		return nil, errors.New("creating the acme-dns solver: no place for the credentials (Options.Storage or Options.CredentialsFile is required)")
	}
	for _, c := range opts.AllowFrom {
		if _, err := netip.ParsePrefix(strings.NewReplacer("[", "", "]", "").Replace(c)); err != nil {
			return nil, fmt.Errorf("creating the acme-dns solver: allow_from entry %q is not a CIDR range such as 192.0.2.0/24", c)
		}
	}
	dc := opts.DNS
	if dc == nil {
		if dc, err = ddns.New(ddns.Options{Logger: opts.Logger, Resolver: opts.Resolver}); err != nil {
			return nil, fmt.Errorf("creating the acme-dns solver: %w", err)
		}
	}
	r := &records{
		log:       opts.Logger,
		server:    strings.TrimSuffix(u.String(), "/"),
		allowFrom: opts.AllowFrom,
		dns:       dc,
		timeout:   opts.PropagationTimeout,
		http:      opts.HTTPClient,
		creds:     &credStore{st: opts.Storage, file: opts.CredentialsFile, server: serverKey(u)},
		accounts:  make(map[string]Account),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.timeout <= 0 {
		r.timeout = DefaultPropagationTimeout
	}
	if r.http == nil {
		r.http = &http.Client{Timeout: 30 * time.Second}
	}
	txt, err := solve.NewTXT(solve.TXTOptions{Challenge: opts.Challenge, Records: r, AccountURL: opts.AccountURL})
	if err != nil {
		return nil, fmt.Errorf("creating the acme-dns solver: %w", err)
	}
	return &Solver{TXT: txt, r: r}, nil
}

// CheckServerURL parses an acme-dns API URL: https://, or http:// for a
// loopback host only.
func CheckServerURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("no acme-dns server URL given; set it, e.g. https://auth.example.net")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("acme-dns server %q is not a URL such as https://auth.example.net", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		host := u.Hostname()
		ip, err := netip.ParseAddr(host)
		if host != "localhost" && (err != nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("acme-dns server %q uses plain http: the API key would cross the network in clear; use https://", raw)
		}
	default:
		return nil, fmt.Errorf("acme-dns server %q must start with https://", raw)
	}
	return u, nil
}

// CNAMEError says that the one-time CNAME of a domain is missing or points
// elsewhere. Its message is the exact record to create.
type CNAMEError struct {
	Domain string // e.g. "example.com"
	// Name is the owner name that must be the CNAME, e.g.
	// "_acme-challenge.example.com."; "" means dns-01's.
	Name   string
	Record string // "<Name> CNAME <fulldomain>.", e.g. "_acme-challenge.example.com. CNAME <fulldomain>."
	Found  string // the current target, "" when there is none
	Err    error  // the lookup failure, if the CNAME could not be checked
}

func (e *CNAMEError) Error() string {
	switch {
	case e.Err != nil:
		return fmt.Sprintf("checking the acme-dns CNAME of %s: %v; the record must be: %s", e.Domain, e.Err, e.Record)
	case e.Found != "":
		name := e.Name
		if name == "" {
			name = challengeName(e.Domain)
		}
		return fmt.Sprintf("%s points to %s, not to the acme-dns account; change the record to: %s", strings.TrimSuffix(name, "."), e.Found, e.Record)
	}
	return fmt.Sprintf("the acme-dns CNAME of %s does not exist yet; create this record in the zone of %s, then try again: %s", e.Domain, e.Domain, e.Record)
}

// Unwrap returns the lookup failure.
func (e *CNAMEError) Unwrap() error { return e.Err }

// Account returns the account of domain (a DNS name; a wildcard's base name
// is used), registering one on the server the first time; created reports
// whether it was registered now.
func (s *Solver) Account(ctx context.Context, domain string) (a Account, created bool, err error) {
	return s.r.account(ctx, domain)
}

// domainOf returns the key of a domain's account: lower case, without a
// wildcard label or a trailing dot.
func domainOf(domain string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimPrefix(domain, "*.")), ".")
}

func (s *records) account(ctx context.Context, domain string) (a Account, created bool, err error) {
	domain = domainOf(domain)
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.accounts[domain]; ok {
		return a, false, nil
	}
	a, err = s.creds.load(ctx, domain)
	if err == nil {
		s.accounts[domain] = a
		return a, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return Account{}, false, err
	}
	if a, err = s.register(ctx); err != nil {
		return Account{}, false, err
	}
	if err := s.creds.save(ctx, domain, a); err != nil {
		return Account{}, false, fmt.Errorf("keeping the new acme-dns account of %s: %w", domain, err)
	}
	s.accounts[domain] = a
	s.log.Warn("acme-dns account registered; create this CNAME once, in the zone of "+domain,
		"identifier", domain, "record", a.CNAMERecord(domain), "credentials", s.creds.where(domain))
	return a, true, nil
}

// cnameError returns the error saying that r.Name must be a CNAME of a's
// name.
func cnameError(r solve.TXTRecord, a Account) *CNAMEError {
	return &CNAMEError{Domain: r.Challenge.Identifier.Base(), Name: fqdn(r.Name), Record: a.CNAMERecordAt(r.Name)}
}

// CheckTXT registers an account for r's domain on first use and verifies
// that r.Name (for dns-01, _acme-challenge.<domain>) is a CNAME, possibly
// through further CNAMEs, of the account's name; until it is, it returns a
// *CNAMEError with the exact record to create.
func (s *records) CheckTXT(ctx context.Context, r solve.TXTRecord) error {
	id := r.Challenge.Identifier
	if id.Type != ident.TypeDNS {
		return fmt.Errorf("%w: %s cannot validate the IP address %s (RFC 8738); use http-01 or tls-alpn-01", solve.ErrNotApplicable, r.Challenge.Type, id)
	}
	a, _, err := s.account(ctx, id.Base())
	if err != nil {
		return err
	}
	cerr := cnameError(r, a)
	end, chain, err := s.dns.FollowCNAMEs(ctx, r.Name)
	if err == nil && slices.Contains(chain[1:], fqdn(a.Fulldomain)) {
		return nil
	}
	switch {
	case err != nil:
		cerr.Err = err
	case len(chain) > 1:
		cerr.Found = end
	}
	s.log.Warn("acme-dns CNAME missing", "identifier", cerr.Domain, "record", cerr.Record, "found", cerr.Found, "resolver", s.dns.Resolver())
	return cerr
}

// SetTXT sets r.Value through the API, as the TXT value of the account's
// name. A domain seen for the first time gets an account, whose CNAME
// cannot exist yet: that is a *CNAMEError.
func (s *records) SetTXT(ctx context.Context, r solve.TXTRecord) error {
	id := r.Challenge.Identifier
	if id.Type != ident.TypeDNS {
		return fmt.Errorf("presenting %s for %s: %w: not a DNS name", r.Challenge.Type, id, solve.ErrNotApplicable)
	}
	domain := id.Base()
	a, created, err := s.account(ctx, domain)
	if err != nil {
		return err
	}
	if created {
		return cnameError(r, a)
	}
	if err := s.update(ctx, a, r.Value); err != nil {
		return s.explainUpdate(domain, err)
	}
	s.log.Info("TXT value set through acme-dns", "identifier", id.Value, "challenge", r.Challenge.Type,
		"name", fqdn(r.Name), "target", fqdn(a.Fulldomain))
	return nil
}

// DeleteTXT does nothing: acme-dns offers no removal, and the server drops
// old values by itself (Detour's after an hour, acme-dns beyond two).
func (s *records) DeleteTXT(context.Context, solve.TXTRecord) error { return nil }

// WaitTXT returns when every authoritative server of the acme-dns zone
// serves r.Value at the account's name (asked directly, with recursion
// off), or fails after the propagation timeout.
func (s *records) WaitTXT(ctx context.Context, r solve.TXTRecord) error {
	id := r.Challenge.Identifier
	a, _, err := s.account(ctx, id.Base())
	if err != nil {
		return err
	}
	name := fqdn(a.Fulldomain)
	if err := s.dns.Wait(ctx, name, r.Value, ddns.WaitOptions{Timeout: s.timeout}); err != nil {
		return fmt.Errorf("waiting for the acme-dns server to serve the value of %s: %w", id.Value, err)
	}
	s.log.Debug("TXT value visible", "identifier", id.Value, "challenge", r.Challenge.Type, "name", name)
	return nil
}
