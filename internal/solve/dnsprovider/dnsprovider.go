// Package dnsprovider answers dns-01 challenges (RFC 8555 §8.4) through a
// DNS provider's API, using the provider clients of lego v5
// (github.com/go-acme/lego/v5/providers/dns/<name>), each imported on its
// own: lego's aggregate package would pull in every provider's SDK.
//
// A Solver adapts Detour's contract to lego's challenge.Provider: Present
// and CleanUp call the provider's Present and CleanUp with the identifier's
// base name (a wildcard "*.example.com" and "example.com" both use
// _acme-challenge.example.com, each with its own token and value, so the
// two TXT values coexist), and Wait runs Detour's own propagation check
// (internal/dns: follow the name's CNAMEs as the CA does, then ask every
// authoritative server of the zone directly) instead of lego's, whose
// Timeout method only supplies the default deadline. Calls for one name are
// serialised, since some providers (Route 53, Gandi) update a name's TXT set
// by read-modify-write.
//
// Credentials come only from the file a path names in credentials_file
// (see readCredentials for the format), never from the process environment:
// each factory fills lego's Config itself instead of calling
// NewDefaultConfig, which reads environment variables.
//
// # Adding a provider
//
// Import lego's package for it and add one entry to the providers map in
// registry.go, plus its name in internal/config/dnsprovider.go:
//
//	"example": {
//		Keys: []string{"api_token"},
//		Help: "api_token (a token allowed to edit DNS records)",
//		New: func(c *Credentials, e Env) (challenge.Provider, error) {
//			return example.NewDNSProviderConfig(&example.Config{APIToken: c.Need("api_token"),
//				TTL: 120, PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()})
//		},
//	},
//
// and a test with a fake of the provider's HTTP API (see fakes_test.go).
//
// # Process-wide lego state
//
// lego providers find a name's zone (SOA) and follow _acme-challenge CNAMEs
// through one process-wide DNS client, which reads /etc/resolv.conf;
// SetNameservers replaces it. lego's own logging, which would go to
// standard output, is discarded when this package is loaded.
package dnsprovider

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-acme/lego/v5/challenge"
	"github.com/go-acme/lego/v5/challenge/dns01"
	legolog "github.com/go-acme/lego/v5/log"

	"github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

func init() {
	// lego logs to standard output by default; Detour logs its own steps.
	legolog.SetDefault(slog.New(slog.DiscardHandler))
}

// Defaults of propagation waiting.
const (
	// DefaultPropagationTimeout applies when neither the path nor the
	// provider's Factory sets one.
	DefaultPropagationTimeout = 2 * time.Minute
	// DefaultPollingInterval is the interval of the provider's own waits.
	DefaultPollingInterval = 2 * time.Second
)

// Options configures a Solver.
type Options struct {
	// Logger receives progress messages; nil discards them.
	Logger *slog.Logger
	// Provider is the provider's name, one of Names(). Required.
	Provider string
	// CredentialsFile is the file the provider's credentials are read from
	// ("key = value" lines). Required.
	CredentialsFile string
	// PropagationTimeout bounds Wait (and the provider's own waits). 0
	// means the provider's default, else DefaultPropagationTimeout.
	PropagationTimeout time.Duration
	// Resolver is the host:port the propagation check asks about names
	// (CNAME, SOA, NS); empty means the first nameserver of
	// /etc/resolv.conf. Ignored when DNS is set.
	Resolver string
	// DNS is the client Wait checks propagation with. nil means one on
	// Resolver.
	DNS *dns.Client
	// Transport carries the provider's API requests; nil means
	// http.DefaultTransport. Tests point it at fakes of the APIs.
	Transport http.RoundTripper
}

// Solver is a solve.Solver and solve.Waiter for dns-01 over a lego DNS
// provider.
type Solver struct {
	log      *slog.Logger
	name     string
	provider challenge.Provider
	dns      *dns.Client
	timeout  time.Duration

	mu        sync.Mutex
	names     map[string]*nameLock // per base name, while in use
	presented map[string]bool      // by token: true if Present succeeded
}

type nameLock struct {
	mu   sync.Mutex
	refs int
}

var (
	_ solve.Solver = (*Solver)(nil)
	_ solve.Waiter = (*Solver)(nil)
)

// New builds the provider named in opts from its credentials file.
func New(opts Options) (*Solver, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	f, ok := providers[opts.Provider]
	if !ok {
		return nil, fmt.Errorf("unknown DNS provider %q; known providers: %s", opts.Provider, strings.Join(Names(), ", "))
	}
	if opts.CredentialsFile == "" {
		return nil, fmt.Errorf("DNS provider %s needs credentials: set credentials_file to a file (mode 0600) with %s", opts.Provider, f.Help)
	}
	if opts.PropagationTimeout < 0 {
		return nil, fmt.Errorf("propagation_timeout %v is negative; use a positive duration such as 5m", opts.PropagationTimeout)
	}
	creds, err := readCredentials(opts.CredentialsFile, opts.Logger)
	if err != nil {
		return nil, err
	}
	p, err := build(opts.Provider, f, creds, opts.PropagationTimeout, opts.Transport)
	if err != nil {
		return nil, err
	}
	if opts.DNS == nil {
		if opts.DNS, err = dns.New(dns.Options{Logger: opts.Logger, Resolver: opts.Resolver}); err != nil {
			return nil, fmt.Errorf("setting up the propagation check: %w", err)
		}
	}
	s := &Solver{
		log:       opts.Logger,
		name:      opts.Provider,
		provider:  p,
		dns:       opts.DNS,
		timeout:   DefaultPropagationTimeout,
		names:     map[string]*nameLock{},
		presented: map[string]bool{},
	}
	if pt, ok := p.(challenge.ProviderTimeout); ok {
		if t, _ := pt.Timeout(); t > 0 {
			s.timeout = t
		}
	}
	return s, nil
}

// build checks the credential keys and runs the provider's factory.
func build(name string, f Factory, c *Credentials, timeout time.Duration, rt http.RoundTripper) (challenge.Provider, error) {
	for k := range c.vals {
		if !slices.Contains(f.Keys, k) {
			return nil, fmt.Errorf("%s: %s is not a credential of DNS provider %s; it reads %s", c.file, k, name, strings.Join(f.Keys, ", "))
		}
	}
	env := Env{Timeout: timeout, Interval: DefaultPollingInterval, transport: rt}
	if env.Timeout == 0 {
		env.Timeout = f.Timeout
	}
	if env.Timeout == 0 {
		env.Timeout = DefaultPropagationTimeout
	}
	p, err := f.New(c, env)
	if missing := c.Missing(); len(missing) > 0 {
		return nil, fmt.Errorf("%s lacks %s, which DNS provider %s needs; it reads %s", c.file, strings.Join(missing, " and "), name, f.Help)
	}
	if err != nil {
		return nil, fmt.Errorf("configuring DNS provider %s from %s: %w", name, c.file, err)
	}
	return p, nil
}

// Type returns solve.DNS01.
func (s *Solver) Type() string { return solve.DNS01 }

// Check reports whether id can be validated through the provider: any DNS
// name (the provider's API tells at Present whether it manages the zone),
// no IP address.
func (s *Solver) Check(ctx context.Context, id ident.Identifier) error {
	if id.Type != ident.TypeDNS {
		return fmt.Errorf("%w: dns-01 cannot validate the IP address %s (RFC 8738); use http-01 or tls-alpn-01", solve.ErrNotApplicable, id)
	}
	return ctx.Err()
}

// Present creates the challenge's TXT record through the provider's API.
// An API error keeps the provider's own message.
func (s *Solver) Present(ctx context.Context, ch solve.Challenge) error {
	if ch.Identifier.Type != ident.TypeDNS {
		return fmt.Errorf("presenting dns-01 for %s: %w: not a DNS name", ch.Identifier, solve.ErrNotApplicable)
	}
	domain := ch.Identifier.Base()
	unlock := s.lock(domain)
	defer unlock()
	err := s.provider.Present(ctx, domain, ch.Token, ch.KeyAuthorization)
	s.mu.Lock()
	s.presented[ch.Token] = err == nil
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("creating the TXT record %s through %s: %w", ch.DNS01Name(), s.name, err)
	}
	s.log.InfoContext(ctx, "dns-01 TXT record created", "identifier", ch.Identifier.Value, "name", ch.DNS01Name(), "provider", s.name)
	return nil
}

// CleanUp removes the TXT record Present created. After a failed Present
// it tries once, quietly, in case the provider created the record before
// failing; without a Present it does nothing.
func (s *Solver) CleanUp(ctx context.Context, ch solve.Challenge) error {
	s.mu.Lock()
	ok, seen := s.presented[ch.Token]
	delete(s.presented, ch.Token)
	s.mu.Unlock()
	if !seen {
		return nil
	}
	domain := ch.Identifier.Base()
	unlock := s.lock(domain)
	defer unlock()
	err := s.provider.CleanUp(ctx, domain, ch.Token, ch.KeyAuthorization)
	switch {
	case err != nil && ok:
		return fmt.Errorf("removing the TXT record %s through %s: %w", ch.DNS01Name(), s.name, err)
	case err != nil:
		s.log.DebugContext(ctx, "no TXT record to remove after a failed Present", "identifier", ch.Identifier.Value, "provider", s.name, "error", err)
	default:
		s.log.InfoContext(ctx, "dns-01 TXT record removed", "identifier", ch.Identifier.Value, "name", ch.DNS01Name(), "provider", s.name)
	}
	return nil
}

// Wait blocks until every authoritative server answers the challenge's
// TXT value, starting from _acme-challenge.<name> and following its CNAMEs
// as the CA does, for at most the propagation timeout.
func (s *Solver) Wait(ctx context.Context, ch solve.Challenge) error {
	start := time.Now()
	err := s.dns.Wait(ctx, ch.DNS01Name(), ch.DNS01Value(), dns.WaitOptions{Timeout: s.timeout})
	if err != nil {
		return fmt.Errorf("waiting for the TXT record set through %s: %w", s.name, err)
	}
	s.log.InfoContext(ctx, "dns-01 TXT record visible on every authoritative server", "identifier", ch.Identifier.Value,
		"name", ch.DNS01Name(), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// lock serialises provider calls for one base name and returns the unlock.
func (s *Solver) lock(name string) func() {
	s.mu.Lock()
	l := s.names[name]
	if l == nil {
		l = &nameLock{}
		s.names[name] = l
	}
	l.refs++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.names, name)
		}
		s.mu.Unlock()
	}
}

// SetNameservers makes every lego provider find zones (SOA queries) and
// follow _acme-challenge CNAMEs through addrs ("host:port") instead of the
// resolvers of /etc/resolv.conf. The setting is process-wide, because lego
// keeps one DNS client for all providers; with no addrs the resolv.conf
// default is restored.
func SetNameservers(addrs ...string) {
	var opts *dns01.Options
	if len(addrs) > 0 {
		opts = &dns01.Options{RecursiveNameservers: slices.Clone(addrs), Timeout: 5 * time.Second}
	}
	dns01.SetDefaultClient(dns01.NewClient(opts))
}
