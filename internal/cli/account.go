package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/config"
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

func (a *app) accountCA(f accountFlags) (*renew.Manager, renew.CA, error) {
	cfg, err := a.config(false)
	if err != nil {
		return nil, renew.CA{}, err
	}
	ref := f.ca
	if ref == "" {
		ref = cfg.CA
	}
	ca, err := config.ResolveCA(cfg, ref)
	if err != nil {
		return nil, renew.CA{}, usagef("--%s: %v", flagCA, err)
	}
	if f.caRoots != "" {
		ca.RootBundle = f.caRoots
	}
	if f.email != "" {
		ca.Email = f.email
	} else if ca.Email == "" {
		ca.Email = cfg.Email
	}
	if f.eabKID != "" {
		ca.EABKeyID, ca.EABHMACKey = f.eabKID, f.eabKey
	}
	rca, err := a.caClient(ca, false, f.agreeTOS || cfg.AgreeTOS)
	if err != nil {
		return nil, renew.CA{}, err
	}
	m, _, err := a.manager(cfg)
	return m, rca, err
}

func (a *app) accountCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "account",
		Short: "Manage ACME accounts: register, show, key rollover, deactivate",
	}
	var reg, show, roll, deact accountFlags
	register := &cobra.Command{
		Use:   "register",
		Short: "Create (or find) the ACME account at a CA",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, ca, err := a.accountCA(reg)
			if err != nil {
				return err
			}
			acct, err := m.Account(cmd.Context(), ca)
			if err != nil {
				return err
			}
			return a.printAccount(acct, ca)
		},
	}
	reg.register(register)
	showCmd := &cobra.Command{
		Use:   "show",
		Short: "Show the account URL and key thumbprint (registering it if needed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, ca, err := a.accountCA(show)
			if err != nil {
				return err
			}
			acct, err := m.Account(cmd.Context(), ca)
			if err != nil {
				return err
			}
			return a.printAccount(acct, ca)
		},
	}
	show.register(showCmd)
	rollover := &cobra.Command{
		Use:   "rollover",
		Short: "Replace the account key (RFC 8555 §7.3.5); the old key is kept as account.previous.key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, ca, err := a.accountCA(roll)
			if err != nil {
				return err
			}
			acct, err := m.RolloverAccount(cmd.Context(), ca)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "account key replaced")
			return a.printAccount(acct, ca)
		},
	}
	roll.register(rollover)
	deactivate := &cobra.Command{
		Use:   "deactivate",
		Short: "Deactivate the account at the CA (permanent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, ca, err := a.accountCA(deact)
			if err != nil {
				return err
			}
			if err := m.DeactivateAccount(cmd.Context(), ca); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "account at %s deactivated\n", ca.Client.DirectoryURL())
			return nil
		},
	}
	deact.register(deactivate)
	cmd.AddCommand(register, showCmd, rollover, deactivate)
	return cmd
}

func (a *app) printAccount(acct acme.Account, ca renew.CA) error {
	tp, err := acme.Thumbprint(acct)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "CA:         %s\naccount:    %s\nthumbprint: %s\n", ca.Client.DirectoryURL(), acct.Location, tp)
	return nil
}
