package cli

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/plan"
)

const (
	flagReason   = "reason"
	flagCertFile = "cert-file"
	flagKeyFile  = "key-file"
)

func (a *app) revokeCommand() *cobra.Command {
	var reason, certFile, keyFile, caRef, caRoots string
	cmd := &cobra.Command{
		Use:   "revoke [NAME]",
		Short: "Revoke a certificate, by name or from a certificate file",
		Long: `Revoke a certificate at its CA (RFC 8555 §7.6).

By NAME, the live certificate of that name is revoked, signed with its own key.
With --cert-file, the certificate in the file is revoked: signed with --key-file
when given, else with your ACME account at --ca.
Reasons: unspecified, keyCompromise, affiliationChanged, superseded,
cessationOfOperation.`,
		Example: `  detour revoke www --reason superseded
  detour revoke --cert-file old.pem --key-file old.key --ca letsencrypt --reason keyCompromise`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			code, err := acme.ParseReason(reason)
			if err != nil {
				return usagef("--%s: %v", flagReason, err)
			}
			if (len(args) == 1) == (certFile != "") {
				return usagef("give either a certificate NAME or --%s", flagCertFile)
			}
			in := plan.RevokeInput{CA: caRef, CARoots: caRoots, Reason: code}
			if len(args) == 1 {
				in.Name = args[0]
			} else {
				if in.Cert, err = readCertFile(certFile); err != nil {
					return err
				}
				if keyFile != "" {
					data, err := os.ReadFile(keyFile)
					if err != nil {
						return fmt.Errorf("--%s: %w", flagKeyFile, err)
					}
					if in.Key, err = acme.DecodeKey(data); err != nil {
						return fmt.Errorf("--%s %s: %w", flagKeyFile, keyFile, err)
					}
				}
			}
			p, err := a.planner(false)
			if err != nil {
				return err
			}
			r, err := p.Revoke(cmd.Context(), in)
			if err != nil {
				return usage(err)
			}
			fmt.Fprintf(a.stdout, "revoked certificate %s (serial %s), reason %s\n", r.Label, r.Serial, reason)
			if r.Marked {
				fmt.Fprintf(a.stdout, "%s is replaced by the next `detour renew` (cron or the systemd timer), or by a running agent when it next asks the CA for the renewal window (within hours); run `detour renew %s` to replace it now\n", in.Name, in.Name)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&reason, flagReason, "unspecified", "revocation reason")
	fl.StringVar(&certFile, flagCertFile, "", "PEM certificate file to revoke")
	fl.StringVar(&keyFile, flagKeyFile, "", "the certificate's private key (PEM), to sign the request with")
	fl.StringVar(&caRef, flagCA, "", "CA of --cert-file (shortcut, [ca.NAME] or directory URL)")
	fl.StringVar(&caRoots, flagCARoots, "", "PEM bundle of roots to trust for the CA's API")
	return cmd
}

func readCertFile(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flagCertFile, err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("--%s %s: no PEM certificate found", flagCertFile, path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("--%s %s: %w", flagCertFile, path, err)
	}
	return c, nil
}
