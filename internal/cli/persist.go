package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/persist"
)

// Flags of persist-record.
const (
	flagWildcard     = "wildcard"
	flagPersistUntil = "persist-until"
	flagCheck        = "check"
)

type persistFlags struct {
	account  accountFlags
	wildcard bool
	until    string
	check    bool
}

func (a *app) persistRecordCommand() *cobra.Command {
	var f persistFlags
	cmd := &cobra.Command{
		Use:   "persist-record NAME",
		Short: "Print the standing dns-persist-01 TXT record for NAME and check that it is live",
		Long: `Print, in zone-file form, the one TXT record at _validation-persist.NAME that lets
the configured ACME account get certificates for NAME from the CA with no DNS
change at renewal (dns-persist-01, draft-ietf-acme-dns-persist). The issuer
domain name comes from the CA's directory; the account is created if needed.

Then check that every authoritative server of NAME's zone answers the record
(asked directly, recursion off); the command fails while one does not. Publish
the record once and use a [path.NAME] table with kind = "persist".

--wildcard adds policy=wildcard: the record then also covers *.NAME and every
subdomain, and a certificate for "*.NAME" needs it. --persist-until makes the
CA ignore the record after that date.

A CA on draft-02 of the draft (its directory announces accountHashPrefix)
gets a hashed account URI bound to the account key: run this command again
after 'detour account rollover' and republish.

--resolver (a global flag) names the DNS server that finds the zone's name
servers; the servers are then asked on the resolver's port (for rehearsals
against 'detour sandbox').`,
		Example: `  detour persist-record example.com --email you@example.com --agree-tos
  detour persist-record example.com --wildcard --persist-until 2027-12-31`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("name one DNS name, e.g. detour persist-record example.com (got %d arguments)", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return a.persistRecord(cmd.Context(), args[0], f) },
	}
	f.account.register(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&f.wildcard, flagWildcard, false, "add policy=wildcard: the record also covers *.NAME and subdomains")
	fl.StringVar(&f.until, flagPersistUntil, "", "RFC 3339 date after which the CA ignores the record, e.g. 2027-12-31")
	fl.BoolVar(&f.check, flagCheck, true, "check that every authoritative server answers the record")
	return cmd
}

func (a *app) persistRecord(ctx context.Context, name string, f persistFlags) error {
	id, err := ident.Parse(name)
	if err != nil {
		return usagef("%v", err)
	}
	if id.Type != ident.TypeDNS {
		return usagef("%s is an IP address; dns-persist-01 validates DNS names only", id.Value)
	}
	wildcard := f.wildcard || id.IsWildcard()
	var until time.Time
	if f.until != "" {
		if until, err = config.ParsePersistUntil(f.until); err != nil {
			return usagef("--%s: %v", flagPersistUntil, err)
		}
		if !until.After(time.Now()) {
			return usagef("--%s %s is in the past; the CA would ignore the record", flagPersistUntil, f.until)
		}
	}
	m, ca, err := a.accountCA(f.account)
	if err != nil {
		return err
	}
	acct, err := m.Account(ctx, ca)
	if err != nil {
		return err
	}
	b, err := persistBinding(ctx, ca, acct)
	if err != nil {
		return err
	}
	dc, err := dnsClient(a.resolver, a.log)
	if err != nil {
		return err
	}
	policy := ""
	if wildcard {
		policy = persist.PolicyWildcard
	}
	s, err := persist.New(persist.Options{Logger: a.log, Policy: policy, PersistUntil: until, Lookup: persist.DNSLookup{Client: dc},
		Binding: func(context.Context) (persist.Binding, error) { return b, nil }})
	if err != nil {
		return err
	}
	p, err := s.Params(b, id)
	if err != nil {
		return err
	}
	recName, value := persist.Record(p)
	covers := id.Base()
	if wildcard {
		covers += ", *." + id.Base() + " and every subdomain"
	}
	issuers := b.Meta.Issuers()
	out := a.stdout
	fmt.Fprintf(out, "; dns-persist-01 record (%s) for %s\n", b.Meta.Draft(), covers)
	fmt.Fprintf(out, "; CA:      %s (issuer domain name %s", ca.Client.DirectoryURL(), issuers[0])
	if len(issuers) > 1 {
		fmt.Fprintf(out, "; it also accepts %s", strings.Join(issuers[1:], ", "))
	}
	fmt.Fprintf(out, ")\n; account: %s\n", acct.Location)
	if !until.IsZero() {
		fmt.Fprintf(out, "; the CA ignores it after %s\n", until.UTC().Format(time.RFC3339))
	}
	if b.Meta.Draft() == persist.Draft02 {
		fmt.Fprintln(out, "; the value hashes the account key: republish it after 'detour account rollover'")
	}
	fmt.Fprintln(out, persist.ZoneLine(recName, value))
	if !f.check {
		return nil
	}
	res, err := s.Verify(ctx, p, wildcard)
	var nle *persist.NotLiveError
	if errors.As(err, &nle) {
		fmt.Fprintln(out)
		if nle.Err != nil {
			fmt.Fprintf(out, "check: cannot ask the authoritative servers: %v\n", nle.Err)
		} else {
			fmt.Fprintln(out, "check: NOT live yet")
		}
		for _, sp := range nle.Servers {
			fmt.Fprintf(out, "  %s: %s\n", sp.Server, sp.Problem)
		}
		return fmt.Errorf("the record is not live on every authoritative server of %s; publish the record above and run this command again (or pass --%s=false)", id.Base(), flagCheck)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\ncheck: live on every authoritative server (%s)\n", strings.Join(res.Servers, ", "))
	for _, t := range res.Expiring {
		fmt.Fprintf(out, "warning: the published record expires at %s; publish a new one before then\n", t.Format(time.RFC3339))
	}
	return nil
}

// persistBinding returns what a dns-persist-01 record for acct at ca needs.
func persistBinding(ctx context.Context, ca renew.CA, acct acme.Account) (persist.Binding, error) {
	tp, err := acme.Thumbprint(acct)
	if err != nil {
		return persist.Binding{}, err
	}
	meta, err := persist.FetchMeta(ctx, persist.MetaOptions{Directory: ca.Client.DirectoryURL(), RootBundle: ca.RootBundle})
	if err != nil {
		return persist.Binding{}, err
	}
	if _, err := meta.Issuer(); err != nil {
		return persist.Binding{}, fmt.Errorf("CA %s: %w", ca.Client.DirectoryURL(), err)
	}
	return persist.Binding{AccountURL: acct.Location, Thumbprint: tp, Meta: meta}, nil
}

// dnsClient returns the DNS client of the dns-persist-01 check. With a
// resolver given, authoritative servers are asked on its port: a resolver
// on a port other than 53 is a rehearsal server that serves everything.
func dnsClient(resolver string, log *slog.Logger) (*dns.Client, error) {
	opts := dns.Options{Logger: log, Resolver: resolver}
	if resolver != "" {
		_, port, err := net.SplitHostPort(resolver)
		if err != nil {
			return nil, usagef("--%s %q is not host:port", flagResolver, resolver)
		}
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, usagef("--%s %q: the port must be a number", flagResolver, resolver)
		}
	}
	return dns.New(opts)
}

// persistSolver builds the solver of a [path.NAME] table of kind persist,
// bound to the request's account and CA.
func (ps *pathSet) persistSolver(p config.Path, log *slog.Logger) (solve.Solver, error) {
	if ps.account == nil || ps.ca == nil {
		return nil, errors.New("the persist path needs the ACME account and CA, which are not available here")
	}
	var until time.Time
	if v := p.Setting(config.KeyPersistUntil); v != "" {
		var err error
		if until, err = config.ParsePersistUntil(v); err != nil {
			return nil, fmt.Errorf("%s: %w", config.KeyPersistUntil, err)
		}
	}
	dc, err := dnsClient(ps.resolver, log)
	if err != nil {
		return nil, err
	}
	ca, account := *ps.ca, ps.account
	return persist.New(persist.Options{
		Logger: log, Policy: p.Setting(config.KeyPersistPolicy), PersistUntil: until, Lookup: persist.DNSLookup{Client: dc},
		Binding: func(ctx context.Context) (persist.Binding, error) {
			acct, err := account()
			if err != nil {
				return persist.Binding{}, fmt.Errorf("loading the ACME account: %w", err)
			}
			return persistBinding(ctx, ca, acct)
		},
	})
}
