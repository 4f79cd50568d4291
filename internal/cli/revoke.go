package cli

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/config"
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
			cfg, err := a.config(false)
			if err != nil {
				return err
			}
			m, st, err := a.manager(cfg)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var cert *x509.Certificate
			var key crypto.Signer
			var ca config.CA
			if len(args) == 1 {
				rec, err := st.LoadRecord(ctx, args[0])
				if err != nil {
					return fmt.Errorf("no certificate named %q: %w", args[0], err)
				}
				b, _, err := st.LoadCertificate(ctx, args[0])
				if err != nil {
					return err
				}
				if cert, err = b.Leaf(); err != nil {
					return err
				}
				if key, err = acme.DecodeKey(b.KeyPEM); err != nil {
					return err
				}
				ca = config.CA{Name: rec.CAName, Directory: rec.CA, RootBundle: rec.RootBundle, Email: rec.Email}
			} else {
				if cert, err = readCertFile(certFile); err != nil {
					return err
				}
				if keyFile != "" {
					data, err := os.ReadFile(keyFile)
					if err != nil {
						return fmt.Errorf("--%s: %w", flagKeyFile, err)
					}
					if key, err = acme.DecodeKey(data); err != nil {
						return fmt.Errorf("--%s %s: %w", flagKeyFile, keyFile, err)
					}
				}
				ref := caRef
				if ref == "" {
					ref = cfg.CA
				}
				if ca, err = config.ResolveCA(cfg, ref); err != nil {
					return usagef("--%s: %v", flagCA, err)
				}
				if ca.Email == "" {
					ca.Email = cfg.Email
				}
			}
			if caRoots != "" {
				ca.RootBundle = caRoots
			}
			rca, err := a.caClient(ca, false, true)
			if err != nil {
				return err
			}
			var acct acme.Account
			if key == nil {
				if acct, err = m.Account(ctx, rca); err != nil {
					return err
				}
			}
			if err := rca.Client.Revoke(ctx, acct, cert, key, code); err != nil {
				if acme.IsProblem(err, "urn:ietf:params:acme:error:alreadyRevoked") {
					return fmt.Errorf("certificate %s (serial %s) is already revoked at %s; nothing to do",
						certLabel(cert), cert.SerialNumber.Text(16), rca.Client.DirectoryURL())
				}
				return err
			}
			fmt.Fprintf(a.stdout, "revoked certificate %s (serial %s), reason %s\n", certLabel(cert), cert.SerialNumber.Text(16), reason)
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

// certLabel names cert in messages: its common name, else its first subject
// alternative name (CAs such as Let's Encrypt may leave the common name out).
func certLabel(c *x509.Certificate) string {
	switch {
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	case len(c.IPAddresses) > 0:
		return c.IPAddresses[0].String()
	}
	return "without a name"
}
