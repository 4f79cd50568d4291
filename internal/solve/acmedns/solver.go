// Package acmedns answers dns-01 challenges (RFC 8555 §8.4) through an
// acme-dns server (github.com/joohoi/acme-dns, or `detour dns-server`).
//
// The owner of example.com creates one record, once:
//
//	_acme-challenge.example.com. CNAME <subdomain>.auth.example.net.
//
// and the CA's resolver follows it (RFC 1034 §3.6.2) into the acme-dns
// server's zone, where Present sets the TXT value through the server's HTTP
// API. No credentials for example.com's DNS are needed, and the acme-dns
// credentials can change nothing but that one TXT record.
//
// The first time a domain is seen the solver registers an account on the
// server and stores its credentials (per server and domain, in the state
// store as a secret key, or in a lego/certbot compatible credentials file),
// then Check fails with a *CNAMEError naming the exact record to create,
// until the record resolves. A wildcard and its base name share one
// _acme-challenge name and so one account. Present posts the value; Wait
// polls the acme-dns zone's authoritative servers until they serve it;
// CleanUp does nothing, since acme-dns servers keep only recent values
// (Detour's expires each after an hour; acme-dns keeps the last two).
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
}

// Solver is a solve.Solver for dns-01 through an acme-dns server.
type Solver struct {
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
	_ solve.Solver = (*Solver)(nil)
	_ solve.Waiter = (*Solver)(nil)
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
	s := &Solver{
		log:       opts.Logger,
		server:    strings.TrimSuffix(u.String(), "/"),
		allowFrom: opts.AllowFrom,
		dns:       dc,
		timeout:   opts.PropagationTimeout,
		http:      opts.HTTPClient,
		creds:     &credStore{st: opts.Storage, file: opts.CredentialsFile, server: serverKey(u)},
		accounts:  make(map[string]Account),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.timeout <= 0 {
		s.timeout = DefaultPropagationTimeout
	}
	if s.http == nil {
		s.http = &http.Client{Timeout: 30 * time.Second}
	}
	return s, nil
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

// Type returns solve.DNS01.
func (s *Solver) Type() string { return solve.DNS01 }

// CNAMEError says that the one-time CNAME of a domain is missing or points
// elsewhere. Its message is the exact record to create.
type CNAMEError struct {
	Domain string // e.g. "example.com"
	Record string // "_acme-challenge.example.com. CNAME <fulldomain>."
	Found  string // the current target, "" when there is none
	Err    error  // the lookup failure, if the CNAME could not be checked
}

func (e *CNAMEError) Error() string {
	switch {
	case e.Err != nil:
		return fmt.Sprintf("checking the acme-dns CNAME of %s: %v; the record must be: %s", e.Domain, e.Err, e.Record)
	case e.Found != "":
		return fmt.Sprintf("_acme-challenge.%s points to %s, not to the acme-dns account; change the record to: %s", e.Domain, e.Found, e.Record)
	}
	return fmt.Sprintf("the acme-dns CNAME of %s does not exist yet; create this record in the zone of %s, then try again: %s", e.Domain, e.Domain, e.Record)
}

// Unwrap returns the lookup failure.
func (e *CNAMEError) Unwrap() error { return e.Err }

// Account returns the account of domain (a DNS name; a wildcard's base name
// is used), registering one on the server the first time; created reports
// whether it was registered now.
func (s *Solver) Account(ctx context.Context, domain string) (a Account, created bool, err error) {
	domain = strings.TrimSuffix(strings.ToLower(strings.TrimPrefix(domain, "*.")), ".")
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

// Check registers an account for id on first use and verifies that
// _acme-challenge.<id> is a CNAME (possibly through further CNAMEs) of the
// account's name; until it is, it returns a *CNAMEError with the exact
// record to create.
func (s *Solver) Check(ctx context.Context, id ident.Identifier) error {
	if id.Type != ident.TypeDNS {
		return fmt.Errorf("%w: dns-01 cannot validate the IP address %s (RFC 8738); use http-01 or tls-alpn-01", solve.ErrNotApplicable, id)
	}
	domain := id.Base()
	a, _, err := s.Account(ctx, domain)
	if err != nil {
		return err
	}
	cerr := &CNAMEError{Domain: domain, Record: a.CNAMERecord(domain)}
	end, chain, err := s.dns.FollowCNAMEs(ctx, challengeName(domain))
	if err == nil && slices.Contains(chain[1:], fqdn(a.Fulldomain)) {
		return nil
	}
	switch {
	case err != nil:
		cerr.Err = err
	case len(chain) > 1:
		cerr.Found = end
	}
	s.log.Warn("acme-dns CNAME missing", "identifier", domain, "record", cerr.Record, "found", cerr.Found, "resolver", s.dns.Resolver())
	return cerr
}

// Present sets the challenge's TXT value through the API.
func (s *Solver) Present(ctx context.Context, ch solve.Challenge) error {
	if ch.Identifier.Type != ident.TypeDNS {
		return fmt.Errorf("presenting dns-01 for %s: %w: not a DNS name", ch.Identifier, solve.ErrNotApplicable)
	}
	domain := ch.Identifier.Base()
	a, created, err := s.Account(ctx, domain)
	if err != nil {
		return err
	}
	if created {
		return &CNAMEError{Domain: domain, Record: a.CNAMERecord(domain)}
	}
	if err := s.update(ctx, a, ch.DNS01Value()); err != nil {
		return s.explainUpdate(domain, err)
	}
	s.log.Info("dns-01 TXT value set through acme-dns", "identifier", ch.Identifier.Value, "name", fqdn(a.Fulldomain))
	return nil
}

// CleanUp does nothing: acme-dns offers no removal, and the server drops
// old values by itself (Detour's after an hour, acme-dns beyond two).
func (s *Solver) CleanUp(context.Context, solve.Challenge) error { return nil }

// Wait returns when every authoritative server of the acme-dns zone serves
// the challenge's TXT value at the account's name (asked directly, with
// recursion off), or fails after the propagation timeout.
func (s *Solver) Wait(ctx context.Context, ch solve.Challenge) error {
	a, _, err := s.Account(ctx, ch.Identifier.Base())
	if err != nil {
		return err
	}
	name := fqdn(a.Fulldomain)
	if err := s.dns.Wait(ctx, name, ch.DNS01Value(), ddns.WaitOptions{Timeout: s.timeout}); err != nil {
		return fmt.Errorf("waiting for the acme-dns server to serve the value of %s: %w", ch.Identifier.Value, err)
	}
	s.log.Debug("dns-01 TXT value visible", "identifier", ch.Identifier.Value, "name", name)
	return nil
}
