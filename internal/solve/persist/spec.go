package persist

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/solve"
)

// Kind is the kind of a persist path.
const Kind = "persist"

// Settings of a persist path.
const (
	// KeyPolicy is "wildcard" (the record also authorizes *.<name> and
	// subdomains, §5) or unset.
	KeyPolicy = "policy"
	// KeyPersistUntil is the RFC 3339 date (or date-time) after which the
	// CA ignores the record (persistUntil, §4.1).
	KeyPersistUntil = "persist_until"
)

// Spec declares the persist path kind.
var Spec = solve.Spec{
	Kind:       Kind,
	Summary:    "relies on one standing _validation-persist TXT record (dns-persist-01): no DNS change at renewal",
	For:        "the CA offers dns-persist-01: publish once the record `detour persist-record <name>` prints",
	Challenges: []string{solve.DNSPersist01},
	Settings: []solve.Setting{
		{Key: KeyPolicy, Type: solve.TypeEnum, Values: []string{PolicyWildcard}, Example: PolicyWildcard,
			Doc: `"wildcard": the record also covers *.<name> and every subdomain (a wildcard certificate needs it)`,
			Check: func(v string) error {
				if v != PolicyWildcard {
					return fmt.Errorf("%q is not a dns-persist-01 policy; write policy = \"wildcard\" (the record then also covers *.NAME and subdomains) or remove the line", v)
				}
				return nil
			}},
		{Key: KeyPersistUntil, Type: solve.TypeDate,
			Doc: "the date after which the CA ignores the record (RFC 3339, e.g. 2027-01-31)",
			Check: func(v string) error {
				_, err := CheckUntil(v)
				return err
			}},
	},
	Build: func(_ context.Context, s solve.Settings, env solve.Env) (solve.Solver, error) {
		var until time.Time
		if v := s.Get(KeyPersistUntil); v != "" {
			var err error
			if until, err = ParsePersistUntil(v); err != nil {
				return nil, fmt.Errorf("%s: %w", KeyPersistUntil, err)
			}
		}
		if env.Account == nil {
			return nil, fmt.Errorf("the %s path needs the ACME account and CA: %w", Kind, solve.ErrNoAccount)
		}
		dc, err := DNSClient(env.Resolver, env.Logger)
		if err != nil {
			return nil, err
		}
		return solve.Built(New(Options{
			Logger: env.Logger, Policy: s.Get(KeyPolicy), PersistUntil: until, Lookup: DNSLookup{Client: dc},
			Binding: func(ctx context.Context) (Binding, error) {
				acct, err := env.AccountOf(ctx, Kind)
				if err != nil {
					return Binding{}, err
				}
				return BindingFor(ctx, env.CA, acct)
			},
		}))
	},
	Example: "standing",
}

// ParsePersistUntil parses a persist_until value: an RFC 3339 date-time
// ("2027-01-31T00:00:00Z") or a full date ("2027-01-31", midnight UTC).
func ParsePersistUntil(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q is not an RFC 3339 date; write e.g. \"2027-01-31\" or \"2027-01-31T00:00:00Z\"", v)
}

// CheckUntil parses a persist_until date and requires it in the future.
func CheckUntil(v string) (time.Time, error) {
	t, err := ParsePersistUntil(v)
	if err != nil {
		return t, err
	}
	if !t.After(time.Now()) {
		return t, fmt.Errorf("%s is in the past, so the CA would ignore the record; set a later date (and publish the record detour persist-record prints)", v)
	}
	return t, nil
}

// BindingFor returns what a dns-persist-01 record for acct at ca needs:
// the account, and the CA's issuer domain names from its directory.
func BindingFor(ctx context.Context, ca solve.CA, acct solve.Account) (Binding, error) {
	meta, err := FetchMeta(ctx, MetaOptions{Directory: ca.Directory, RootBundle: ca.RootBundle})
	if err != nil {
		return Binding{}, err
	}
	if _, err := meta.Issuer(); err != nil {
		return Binding{}, fmt.Errorf("CA %s: %w", ca.Directory, err)
	}
	return Binding{AccountURL: acct.URL, Thumbprint: acct.Thumbprint, Meta: meta}, nil
}

// DNSClient returns the client that reads the record from the zone's
// authoritative servers. With a resolver given, those servers are asked on
// the resolver's port: a resolver on a port other than 53 is a rehearsal
// server (`detour sandbox`) that serves everything.
func DNSClient(resolver string, log *slog.Logger) (*dns.Client, error) {
	opts := dns.Options{Logger: log, Resolver: resolver}
	if resolver != "" {
		_, port, err := net.SplitHostPort(resolver)
		if err != nil {
			return nil, fmt.Errorf("resolver %q is not host:port", resolver)
		}
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("resolver %q: the port must be a number", resolver)
		}
	}
	return dns.New(opts)
}
