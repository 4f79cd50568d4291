package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/plan"
	"github.com/detour-acme/detour/internal/renew"
)

type accountFlags struct {
	ca, caRoots, email string
	eabKID, eabKey     string
	agreeTOS           bool
}

func (f *accountFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.ca, flagCA, "", "CA: shortcut, [ca.NAME] or directory URL (default from the config)")
	fl.StringVar(&f.caRoots, flagCARoots, "", "PEM bundle of roots to trust for the CA's API")
	fl.StringVar(&f.email, flagEmail, "", "account contact email (selects the account)")
	fl.StringVar(&f.eabKID, flagEABKID, "", "External Account Binding key ID")
	fl.StringVar(&f.eabKey, flagEABHMAC, "", "External Account Binding HMAC key (base64url)")
	fl.BoolVar(&f.agreeTOS, flagAgreeTOS, false, "accept the CA's terms of service")
}

// input is what the flags select.
func (f accountFlags) input() plan.AccountInput {
	return plan.AccountInput{CA: f.ca, CARoots: f.caRoots, Email: f.email, EABKeyID: f.eabKID, EABHMACKey: f.eabKey, AgreeTOS: f.agreeTOS}
}

// accountCA opens the planner and returns the manager and the CA of the
// account the flags select.
func (a *app) accountCA(f accountFlags) (*renew.Manager, renew.CA, error) {
	p, err := a.planner(false)
	if err != nil {
		return nil, renew.CA{}, err
	}
	ca, err := p.AccountCA(f.input())
	if err != nil {
		return nil, renew.CA{}, usage(err)
	}
	return p.Manager, ca, nil
}

func (a *app) accountCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "account",
		Short: "Manage ACME accounts: register, show, key rollover, deactivate",
	}
	cmd.AddCommand(
		a.accountSubcommand("register", "Create (or find) the ACME account at a CA", a.showAccount),
		a.accountSubcommand("show", "Show the account URL and key thumbprint (registering it if needed)", a.showAccount),
		a.accountSubcommand("rollover", "Replace the account key (RFC 8555 §7.3.5); the old key is kept as account.previous.key",
			func(ctx context.Context, m *renew.Manager, ca renew.CA) error {
				acct, err := m.RolloverAccount(ctx, ca)
				if err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, "account key replaced")
				return a.printAccount(acct, ca)
			}),
		a.accountSubcommand("deactivate", "Deactivate the account at the CA (permanent)",
			func(ctx context.Context, m *renew.Manager, ca renew.CA) error {
				if err := m.DeactivateAccount(ctx, ca); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "account at %s deactivated\n", ca.Client.DirectoryURL())
				return nil
			}),
	)
	return cmd
}

// accountAction is what an account subcommand does once its CA and
// account settings are resolved.
type accountAction func(ctx context.Context, m *renew.Manager, ca renew.CA) error

// accountSubcommand builds an account subcommand with its own account
// flags: its RunE resolves the CA from them (accountCA) and runs do.
func (a *app) accountSubcommand(use, short string, do accountAction) *cobra.Command {
	var f accountFlags
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, ca, err := a.accountCA(f)
			if err != nil {
				return err
			}
			defer ca.Client.Close()
			return do(cmd.Context(), m, ca)
		},
	}
	f.register(cmd)
	return cmd
}

// showAccount finds the account at the CA (registering it if needed) and
// prints it: "account register" and "account show".
func (a *app) showAccount(ctx context.Context, m *renew.Manager, ca renew.CA) error {
	acct, err := m.Account(ctx, ca)
	if err != nil {
		return err
	}
	return a.printAccount(acct, ca)
}

func (a *app) printAccount(acct acme.Account, ca renew.CA) error {
	tp, err := acme.Thumbprint(acct)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "CA:         %s\naccount:    %s\nthumbprint: %s\n", ca.Client.DirectoryURL(), acct.Location, tp)
	return nil
}
