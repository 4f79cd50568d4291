package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/plan"
)

// Flags of detour acme-dns register.
const (
	flagACMEDNSServer   = "server"
	flagAllowFrom       = "allow-from"
	flagCredentialsFile = "credentials-file"
)

type acmeDNSRegisterFlags struct {
	server, credentialsFile, path string
	allowFrom                     []string
}

func (a *app) acmeDNSCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "acme-dns",
		Short: "Set up the acme-dns path: register accounts and print the CNAME to create",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.acmeDNSRegisterCommand())
	return cmd
}

func (a *app) acmeDNSRegisterCommand() *cobra.Command {
	var f acmeDNSRegisterFlags
	cmd := &cobra.Command{
		Use:   "register DOMAIN...",
		Short: "Register an acme-dns account for each domain and print the CNAME to create",
		Long: `Register an account on an acme-dns server (any acme-dns, or 'detour dns-server')
for each domain, keep its credentials (in the state directory, or in
--credentials-file), and print the one record to create in the domain's zone:

  _acme-challenge.example.com. CNAME <subdomain>.auth.example.net.

A domain that already has an account keeps it; the command then only prints the
record and whether it resolves yet. A wildcard shares its base name's account.
Issuing through an acme-dns path does the same on first use, so this command is
a way to prepare the record before the first certificate.`,
		Example: `  detour acme-dns register example.com --server https://auth.example.net
  detour acme-dns register example.com www.example.com --path adns   # a [path.adns] table, kind "acme-dns"`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.acmeDNSRegister(cmd, args, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.server, flagACMEDNSServer, "", "acme-dns API URL, e.g. https://auth.example.net")
	fl.StringSliceVar(&f.allowFrom, flagAllowFrom, nil, "CIDR ranges the new account may update from (repeat, or comma-separate)")
	fl.StringVar(&f.credentialsFile, flagCredentialsFile, "", "keep credentials in this JSON file (lego/certbot-dns-acmedns format) instead of the state directory")
	fl.StringVar(&f.path, flagPath, "", "take the settings from this [path.NAME] table of kind \"acme-dns\"")
	return cmd
}

func (a *app) acmeDNSRegister(cmd *cobra.Command, domains []string, f acmeDNSRegisterFlags) error {
	if f.server == "" && f.path == "" {
		return usagef("--%s is required (or --%s naming an acme-dns path of the config)", flagACMEDNSServer, flagPath)
	}
	p, err := a.planner(f.path != "")
	if err != nil {
		return err
	}
	accts, err := p.ACMEDNS(cmd.Context(), plan.ACMEDNSInput{Path: f.path, Server: f.server, CredentialsFile: f.credentialsFile, AllowFrom: f.allowFrom, Domains: domains})
	if err != nil {
		return usage(err)
	}
	var failed []string
	for _, r := range accts {
		if r.Err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", r.Domain, r.Err))
			continue
		}
		state := "existing account"
		if r.Created {
			state = "new account registered"
		}
		fmt.Fprintf(a.stdout, "%s: %s on %s\n  create in the zone of %s:\n    %s\n", r.Domain, state, r.Server, r.Domain, r.Record)
		if r.InPlace {
			fmt.Fprintln(a.stdout, "  the CNAME is in place")
		} else {
			fmt.Fprintf(a.stdout, "  %s\n", r.CNAME)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d domains failed:\n  %s", len(failed), len(domains), strings.Join(failed, "\n  "))
	}
	return nil
}
