package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve/acmedns"
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
	cfg, err := a.config(f.path != "")
	if err != nil {
		return err
	}
	p := config.Path{Kind: config.KindACMEDNS, Settings: map[string]string{}}
	if f.path != "" {
		if p, err = cfg.Path(f.path); err != nil {
			return usagef("--%s: %v", flagPath, err)
		}
		if p.Kind != config.KindACMEDNS {
			return usagef("--%s %s is of kind %q, not %q", flagPath, f.path, p.Kind, config.KindACMEDNS)
		}
	}
	opts, err := acmeDNSOptions(p, a.log)
	if err != nil {
		return err
	}
	if f.server != "" {
		opts.Server = f.server
	}
	if f.credentialsFile != "" {
		opts.CredentialsFile = f.credentialsFile
	}
	if len(f.allowFrom) > 0 {
		opts.AllowFrom = f.allowFrom
	}
	if opts.Server == "" {
		return usagef("--%s is required (or --%s naming an acme-dns path of the config)", flagACMEDNSServer, flagPath)
	}
	if opts.CredentialsFile == "" {
		if opts.Storage, err = a.store(cfg); err != nil {
			return err
		}
	}
	opts.Resolver = a.resolver
	s, err := acmedns.New(opts)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	var failed []string
	for _, d := range domains {
		id, err := ident.Parse(d)
		if err == nil && id.Type != ident.TypeDNS {
			err = errors.New("acme-dns validates DNS names only, not IP addresses")
		}
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", d, err))
			continue
		}
		base := id.Base()
		acct, created, err := s.Account(ctx, base)
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", d, err))
			continue
		}
		state := "existing account"
		if created {
			state = "new account registered"
		}
		fmt.Fprintf(a.stdout, "%s: %s on %s\n  create in the zone of %s:\n    %s\n", base, state, opts.Server, base, acct.CNAMERecord(base))
		var cerr *acmedns.CNAMEError
		switch err := s.Check(ctx, id); {
		case err == nil:
			fmt.Fprintln(a.stdout, "  the CNAME is in place")
		case errors.As(err, &cerr) && cerr.Err == nil && cerr.Found == "":
			fmt.Fprintln(a.stdout, "  the CNAME does not resolve yet")
		default:
			fmt.Fprintf(a.stdout, "  %v\n", err)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d domains failed:\n  %s", len(failed), len(domains), strings.Join(failed, "\n  "))
	}
	return nil
}
