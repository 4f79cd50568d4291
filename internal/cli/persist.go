package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/plan"
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
	var until time.Time
	if f.until != "" {
		var err error
		if until, err = plan.PersistUntil(f.until); err != nil {
			return usagef("--%s: %v", flagPersistUntil, err)
		}
	}
	p, err := a.planner(false)
	if err != nil {
		return err
	}
	r, err := p.Persist(ctx, plan.PersistInput{Account: f.account.input(), Name: name, Wildcard: f.wildcard, Until: until, Check: f.check})
	var ie *plan.InputError
	if errors.As(err, &ie) && ie.Field == plan.FieldDomains {
		return usagef("%v", ie.Err)
	}
	if err != nil {
		return usage(err)
	}
	out := a.stdout
	fmt.Fprintf(out, "; dns-persist-01 record (%s) for %s\n", r.Draft, r.Covers)
	fmt.Fprintf(out, "; CA:      %s (issuer domain name %s", r.CA, r.Issuers[0])
	if len(r.Issuers) > 1 {
		fmt.Fprintf(out, "; it also accepts %s", strings.Join(r.Issuers[1:], ", "))
	}
	fmt.Fprintf(out, ")\n; account: %s\n", r.Account)
	if !until.IsZero() {
		fmt.Fprintf(out, "; the CA ignores it after %s\n", until.UTC().Format(time.RFC3339))
	}
	if r.Hashed {
		fmt.Fprintln(out, "; the value hashes the account key: republish it after 'detour account rollover'")
	}
	fmt.Fprintln(out, r.Zone)
	if !r.Checked {
		return nil
	}
	if !r.Live {
		fmt.Fprintln(out)
		if r.AskErr != nil {
			fmt.Fprintf(out, "check: cannot ask the authoritative servers: %v\n", r.AskErr)
		} else {
			fmt.Fprintln(out, "check: NOT live yet")
		}
		for _, sp := range r.Problems {
			fmt.Fprintf(out, "  %s: %s\n", sp.Server, sp.Problem)
		}
		return fmt.Errorf("the record is not live on every authoritative server of %s; publish the record above and run this command again (or pass --%s=false)", r.Base, flagCheck)
	}
	fmt.Fprintf(out, "\ncheck: live on every authoritative server (%s)\n", strings.Join(r.Servers, ", "))
	for _, t := range r.Expiring {
		fmt.Fprintf(out, "warning: the published record expires at %s; publish a new one before then\n", t.Format(time.RFC3339))
	}
	return nil
}
