// Package dnsprovider answers dns-01 challenges (RFC 8555 §8.4) through a
// DNS provider's API, using the provider clients of lego v5
// (github.com/go-acme/lego/v5/providers/dns/<name>), each imported on its
// own: lego's aggregate package would pull in every provider's SDK.
//
// A Solver is the generic solve.TXT over a solve.Records backend that
// adapts lego's challenge.Provider: SetTXT and DeleteTXT call the
// provider's Present and CleanUp with the identifier's base name (a
// wildcard "*.example.com" and "example.com" both use
// _acme-challenge.example.com, each with its own token and value, so the
// two TXT values coexist), and WaitTXT runs Detour's own propagation check
// (internal/dns: follow the name's CNAMEs as the CA does, then ask every
// authoritative server of the zone directly) instead of lego's, whose
// Timeout method only supplies the default deadline. Calls for one name are
// serialised, since some providers (Route 53, Gandi) update a name's TXT set
// by read-modify-write.
//
// A lego provider computes the record's name itself
// (_acme-challenge.<domain>, lego's dns01.GetChallengeInfo) and cannot
// write another, so a provider driven through lego answers dns-01 only. A
// provider Detour talks to with its own client (Linode) implements
// nameWriter and writes the TXT record at the name the solver gives, so it
// answers dns-account-01 too (Factory.AnyName).
//
// Credentials come only from the file a path names in credentials_file
// (see readCredentials for the format), never from the process environment:
// each factory fills lego's Config itself instead of calling
// NewDefaultConfig or NewDNSProvider, which read environment variables.
//
// # The providers
//
// The catalog (catalog.go) merges three tables of Factory, by the name
// provider = "..." takes:
//
//   - providers (registry.go): Detour's own six, with lower-case keys
//     (api_token), in every build;
//   - handWritten (handwritten.go): lego providers whose constructors do
//     more than map variables to Config (Google Cloud DNS, Azure,
//     Namecheap, ...), keyed by lego's variable names;
//   - generated (zz_generated.go): every other lego provider, written by
//     `go generate` (gen/, which reads lego's source with go/ast from the
//     module cache), keyed by lego's variable names (LINODE_TOKEN, also
//     accepted in lower case).
//
// The slim build (-tags detour_slim, zz_slim.go) has the first table only,
// and none of the other providers' SDKs. notGenerated (zz_generated.go)
// says, for each lego provider not generated, why.
//
// # Adding a provider
//
// A lego provider whose NewDNSProvider follows lego's usual pattern is
// generated: after updating lego in go.mod, run
// `go generate ./internal/solve/dnsprovider` and commit zz_generated.go
// (TestGeneratedFileIsCurrent fails until then). For one the generator
// lists in notGenerated, add an entry to handWritten:
//
//	"example": {
//		Title: "Example DNS", URL: "https://example.net",
//		Keys: []Key{{Name: "EXAMPLE_API_TOKEN", Required: true, Secret: true, Doc: "a token allowed to edit DNS records"}},
//		New: func(c *Credentials, e Env) (challenge.Provider, error) {
//			return example.NewDNSProviderConfig(&example.Config{APIToken: c.Need("EXAMPLE_API_TOKEN"),
//				TTL: 120, PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()})
//		},
//	},
//
// with its credentials in handWrittenValues (generated_test.go), re-run
// the generator (it then lists the name as hand-written), and, for a
// provider many use, a test with a fake of its HTTP API (fakes_test.go).
//
// # Process-wide lego state
//
// lego providers find a name's zone (SOA) and follow _acme-challenge CNAMEs
// through one process-wide DNS client, which reads /etc/resolv.conf;
// SetNameservers replaces it. lego's own logging, which would go to
// standard output, is discarded when this package is loaded.
package dnsprovider

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
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
	"github.com/detour-acme/detour/internal/suggest"
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
	// Challenge is the type answered: dns-01 (the default), or
	// dns-account-01 for a provider whose client writes any name
	// (Factory.AnyName).
	Challenge string
	// AccountURL returns the ACME account URL, for dns-account-01.
	AccountURL func(ctx context.Context) (string, error)
}

// nameWriter is implemented by a provider client that writes a TXT record
// at any name it is given (Detour's own clients), rather than computing
// _acme-challenge.<domain> itself as lego's do.
type nameWriter interface {
	// SetTXTAt adds value to the TXT records at fqdn.
	SetTXTAt(ctx context.Context, fqdn, value string) error
	// DeleteTXTAt removes value from the TXT records at fqdn; the name's
	// other values stay.
	DeleteTXTAt(ctx context.Context, fqdn, value string) error
}

// Solver is a solve.Solver and solve.Waiter for dns-01 over a lego DNS
// provider: the generic TXT solver (package solve names the record and
// computes its value) driving the provider through a solve.Records
// backend.
type Solver struct {
	*solve.TXT
}

// records is the solve.Records backend over one lego provider. lego's
// challenge.Provider names the record itself (_acme-challenge.<domain>,
// see lego's dns01.GetChallengeInfo) and cannot write any other name, so
// it answers dns-01 only.
type records struct {
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
	_ solve.Solver  = (*Solver)(nil)
	_ solve.Waiter  = (*Solver)(nil)
	_ solve.Records = (*records)(nil)
)

// New builds the provider named in opts from its credentials file.
func New(opts Options) (*Solver, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	f, _, ok := lookup(opts.Provider)
	if !ok {
		return nil, unknownProvider(opts.Provider)
	}
	if err := checkChallenge(opts.Provider, f, opts.Challenge); err != nil {
		return nil, err
	}
	if opts.CredentialsFile == "" {
		return nil, fmt.Errorf("DNS provider %s needs credentials: set credentials_file to a file (mode 0600) with %s", opts.Provider, f.help())
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
	r := &records{
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
			r.timeout = t
		}
	}
	txt, err := solve.NewTXT(solve.TXTOptions{Challenge: cmp.Or(opts.Challenge, solve.DNS01), Records: r, AccountURL: opts.AccountURL})
	if err != nil {
		return nil, fmt.Errorf("creating the %s solver of DNS provider %s: %w", cmp.Or(opts.Challenge, solve.DNS01), opts.Provider, err)
	}
	return &Solver{TXT: txt}, nil
}

// checkChallenge refuses a challenge type the provider cannot answer.
func checkChallenge(name string, f Factory, typ string) error {
	switch {
	case typ == "" || typ == solve.DNS01:
		return nil
	case typ == solve.DNSAccount01 && f.AnyName:
		return nil
	case typ == solve.DNSAccount01:
		return fmt.Errorf("DNS provider %s cannot answer %s: lego's DNS providers can only write _acme-challenge.<name>, not the account's _<label>._acme-challenge.<name>; "+
			"set challenge = \"dns-01\", or use a provider whose client Detour writes itself (%s) or an rfc2136, acme-dns or dns-embedded path", name, typ, strings.Join(anyNameProviders(), ", "))
	}
	return fmt.Errorf("a %s path cannot answer %s; use dns-01", Kind, typ)
}

// anyNameProviders are the providers that answer dns-account-01.
func anyNameProviders() []string {
	var out []string
	for n, f := range catalog {
		if f.AnyName {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	if len(out) == 0 {
		return []string{"none in this build"}
	}
	return out
}

// build checks the credential keys and runs the provider's factory.
func build(name string, f Factory, c *Credentials, timeout time.Duration, rt http.RoundTripper) (challenge.Provider, error) {
	if err := checkKeys(name, f, c); err != nil {
		return nil, err
	}
	env := Env{Timeout: timeout, Interval: DefaultPollingInterval, transport: rt}
	if env.Timeout == 0 {
		env.Timeout = effectiveTimeout(f)
	}
	p, err := f.New(c, env)
	if missing := c.Missing(); len(missing) > 0 {
		return nil, fmt.Errorf("%s lacks %s, which DNS provider %s needs; it reads %s", c.file, strings.Join(missing, " and "), name, f.help())
	}
	if bad := c.Invalid(); len(bad) > 0 {
		return nil, fmt.Errorf("%s: %s (DNS provider %s)", c.file, strings.Join(bad, "; "), name)
	}
	if err != nil {
		return nil, fmt.Errorf("configuring DNS provider %s from %s: %w", name, c.file, err)
	}
	return p, nil
}

// reservedSuffixes end the names of lego's variables for settings Detour
// makes itself; a key with one gets a hint instead of "did you mean".
var reservedSuffixes = map[string]string{
	"_propagation_timeout": "set propagation_timeout in the path's table instead",
	"_polling_interval":    "Detour polls the authoritative servers itself",
	"_http_timeout":        "Detour bounds each API request itself",
}

// checkKeys refuses a key f does not read, with the closest key it does,
// and renames the keys of c to f's names: a key given by another name
// (Key.Also) or in another case is stored under its Name in lower case.
func checkKeys(name string, f Factory, c *Credentials) error {
	byName := map[string]string{} // lower-case name or alias -> lower-case Name
	var names []string
	for _, k := range f.Keys {
		byName[strings.ToLower(k.Name)] = strings.ToLower(k.Name)
		names = append(names, k.Name)
		for _, a := range k.Also {
			byName[strings.ToLower(a)] = strings.ToLower(k.Name)
		}
	}
	renamed := map[string]string{}
	for _, lower := range slices.Sorted(maps.Keys(c.vals)) {
		spelled := cmp.Or(c.spelled[lower], lower)
		to, ok := byName[lower]
		if !ok {
			hint := suggest.DidYouMean(spelled, names)
			for suffix, why := range reservedSuffixes {
				if strings.HasSuffix(lower, suffix) {
					hint = " (" + why + ")"
				}
			}
			return fmt.Errorf("%s: %s is not a credential of DNS provider %s%s; it reads %s", c.file, spelled, name, hint, strings.Join(names, ", "))
		}
		if other, dup := renamed[to]; dup {
			return fmt.Errorf("%s: %s and %s are one key of DNS provider %s; keep one", c.file, other, spelled, name)
		}
		renamed[to] = spelled
	}
	vals := make(map[string]string, len(c.vals))
	for lower, v := range c.vals {
		vals[byName[lower]] = v
	}
	c.vals = vals
	return nil
}

// writable reports whether the provider can write r: lego's providers
// write _acme-challenge.<name> and nothing else, so r must be a dns-01
// record at that name; a nameWriter also writes dns-account-01 records.
func (s *records) writable(r solve.TXTRecord) error {
	typ := r.Challenge.Type
	if typ == "" {
		typ = "a challenge without a type"
	}
	_, anyName := s.provider.(nameWriter)
	if typ != solve.DNS01 && !(anyName && typ == solve.DNSAccount01) {
		return fmt.Errorf("DNS provider %s cannot answer %s (record %s): lego's DNS providers can only write _acme-challenge.<name>; "+
			"use an rfc2136, acme-dns or dns-embedded path for %s", s.name, typ, r.Name, typ)
	}
	if id := r.Challenge.Identifier; id.Type != ident.TypeDNS {
		return fmt.Errorf("%w: %s cannot validate the IP address %s (RFC 8738); use http-01 or tls-alpn-01", solve.ErrNotApplicable, typ, id)
	}
	if typ != solve.DNS01 {
		return nil
	}
	if want := r.Challenge.DNS01Name(); r.Name != want {
		return fmt.Errorf("DNS provider %s cannot write the TXT record %s: lego's DNS providers can only write _acme-challenge.<name> (here %s)", s.name, r.Name, want)
	}
	return nil
}

// CheckTXT refuses a record the provider cannot write; any dns-01 record
// of a DNS name is fine (the provider's API tells at SetTXT whether it
// manages the zone).
func (s *records) CheckTXT(ctx context.Context, r solve.TXTRecord) error {
	if err := s.writable(r); err != nil {
		return err
	}
	return ctx.Err()
}

// SetTXT creates the record through the provider's API, which computes
// the name and value itself from the challenge's identifier and key
// authorization. An API error keeps the provider's own message.
func (s *records) SetTXT(ctx context.Context, r solve.TXTRecord) error {
	if err := s.writable(r); err != nil {
		return err
	}
	ch := r.Challenge
	domain := ch.Identifier.Base()
	unlock := s.lock(domain)
	defer unlock()
	var err error
	if w, ok := s.provider.(nameWriter); ok && ch.Type != solve.DNS01 {
		err = w.SetTXTAt(ctx, r.Name, r.Value)
	} else {
		err = s.provider.Present(ctx, domain, ch.Token, ch.KeyAuthorization)
	}
	s.mu.Lock()
	s.presented[ch.Token] = err == nil
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("creating the TXT record %s through %s: %w", r.Name, s.name, err)
	}
	s.log.InfoContext(ctx, ch.Type+" TXT record created", "identifier", ch.Identifier.Value, "name", r.Name, "provider", s.name)
	return nil
}

// DeleteTXT removes the TXT record SetTXT created. After a failed SetTXT
// it tries once, quietly, in case the provider created the record before
// failing; without a SetTXT it does nothing.
func (s *records) DeleteTXT(ctx context.Context, r solve.TXTRecord) error {
	ch := r.Challenge
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
	var err error
	if w, ok := s.provider.(nameWriter); ok && ch.Type != solve.DNS01 {
		err = w.DeleteTXTAt(ctx, r.Name, r.Value)
	} else {
		err = s.provider.CleanUp(ctx, domain, ch.Token, ch.KeyAuthorization)
	}
	switch {
	case err != nil && ok:
		return fmt.Errorf("removing the TXT record %s through %s: %w", r.Name, s.name, err)
	case err != nil:
		s.log.DebugContext(ctx, "no TXT record to remove after a failed Present", "identifier", ch.Identifier.Value, "provider", s.name, "error", err)
	default:
		s.log.InfoContext(ctx, ch.Type+" TXT record removed", "identifier", ch.Identifier.Value, "name", r.Name, "provider", s.name)
	}
	return nil
}

// WaitTXT blocks until every authoritative server answers r.Value,
// starting from r.Name and following its CNAMEs as the CA does, for at
// most the propagation timeout.
func (s *records) WaitTXT(ctx context.Context, r solve.TXTRecord) error {
	start := time.Now()
	err := s.dns.Wait(ctx, r.Name, r.Value, dns.WaitOptions{Timeout: s.timeout})
	if err != nil {
		return fmt.Errorf("waiting for the TXT record set through %s: %w", s.name, err)
	}
	s.log.InfoContext(ctx, "TXT record visible on every authoritative server", "identifier", r.Challenge.Identifier.Value,
		"name", r.Name, "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// lock serialises provider calls for one base name and returns the unlock.
func (s *records) lock(name string) func() {
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
