package cli

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
)

// Flags of `detour issue`.
const (
	flagDomain         = "domain"
	flagName           = "name"
	flagCA             = "ca"
	flagCARoots        = "ca-roots"
	flagEmail          = "email"
	flagAgreeTOS       = "agree-tos"
	flagKeyType        = "key-type"
	flagProfile        = "profile"
	flagPreferredChain = "preferred-chain"
	flagPath           = "path"
	flagHTTPAddr       = "http-addr"
	flagTLSAddr        = "tls-addr"
	flagDNSAddr        = "dns-addr"
	flagEABKID         = "eab-kid"
	flagEABHMAC        = "eab-hmac-key"
	flagDryRun         = "dry-run"
	flagDeployHook     = "deploy-hook"
	flagWebroot        = "webroot"
)

type issueFlags struct {
	domains        []string
	name           string
	ca, caRoots    string
	email          string
	agreeTOS       bool
	keyType        string
	profile        string
	preferredChain string
	paths          []string
	httpAddr       string
	tlsAddr        string
	dnsAddr        string
	eabKID, eabKey string
	dryRun         bool
	deployHook     string
	webroot        string
}

func (a *app) issueCommand() *cobra.Command {
	var f issueFlags
	cmd := &cobra.Command{
		Use:   "issue [NAME...]",
		Short: "Obtain a certificate now (one-off with -d, or certificates named in the config)",
		Long: `Obtain a certificate now.

With -d/--domain, issue a one-off certificate described by flags; Detour records
how it was obtained, so a later 'detour renew' needs no flags. With certificate
names (or none), issue those configured in the config file.

Validation paths (--path, in order of preference):
  standalone-http       http-01: Detour binds --http-addr (default :80) itself
  standalone-tls-alpn   tls-alpn-01: Detour binds --tls-addr (default :443) itself
  webroot               http-01: Detour writes the token under --webroot DIR, which
                        your web server serves
  side-port             http-01: your web server forwards /.well-known/acme-challenge/
                        to 127.0.0.1:8402 ('detour snippet http' prints the block)
  stateless             http-01: your web server answers by itself
                        ('detour snippet stateless' prints the block)
  alpn-forward          tls-alpn-01: nginx stream / HAProxy send acme-tls/1 to
                        127.0.0.1:8403 ('detour snippet tls-alpn')
  front-door            tls-alpn-01: a running 'detour router' owns :443
  dns-embedded          dns-01: Detour answers on --dns-addr (default :53) for a
                        delegated _acme-challenge name
  NAME                  a [path.NAME] table of the config file

Before asking the CA, Detour fetches each answer the way the CA will and stops
if it is wrong (--no-self-check to skip, e.g. behind NAT without hairpin).

Wildcards (*.example.com) need dns-01; IP addresses need http-01 or tls-alpn-01.`,
		Example: `  detour issue -d example.com -d www.example.com --email ops@example.com --agree-tos
  detour issue -d '*.example.com' --path dns-embedded --ca letsencrypt-staging
  detour issue -d example.com --webroot /var/www/html --deploy-hook 'systemctl reload nginx'
  detour issue -d example.com --path side-port,stateless
  detour issue -d 192.0.2.10 --path standalone-tls-alpn --profile shortlived
  detour issue www            # the [[certificate]] named www in the config`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(f.domains) > 0 {
				if len(args) > 0 {
					return usagef("give either -d/--domain (a one-off certificate) or certificate names from the config, not both")
				}
				return a.issueOneOff(cmd, f)
			}
			if err := oneOffOnly(cmd); err != nil {
				return err
			}
			return a.issueConfigured(cmd, args, f.dryRun, f.agreeTOS)
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVarP(&f.domains, flagDomain, "d", nil, "name to include (repeat, or comma-separate): DNS name, *.wildcard or IP address")
	fl.StringVar(&f.name, flagName, "", "certificate name in the state directory (default: the first domain)")
	fl.StringVar(&f.ca, flagCA, "", "CA: "+strings.Join(config.Shortcuts(), ", ")+", a [ca.NAME] of the config, or a directory URL (default from the config, else letsencrypt)")
	fl.StringVar(&f.caRoots, flagCARoots, "", "PEM bundle of roots to trust for the CA's API (private CAs, the sandbox)")
	fl.StringVar(&f.email, flagEmail, "", "contact email for the ACME account")
	fl.BoolVar(&f.agreeTOS, flagAgreeTOS, false, "accept the CA's terms of service")
	fl.StringVar(&f.keyType, flagKeyType, "", "certificate key: ecdsa-p256 (default), ecdsa-p384, rsa2048, rsa3072, rsa4096")
	fl.StringVar(&f.profile, flagProfile, "", "ACME profile to request (the CA's directory lists them)")
	fl.StringVar(&f.preferredChain, flagPreferredChain, "", "prefer the chain whose top certificate is issued by this common name")
	fl.StringSliceVar(&f.paths, flagPath, nil, "validation path(s) in order of preference (default standalone-http)")
	fl.StringVar(&f.httpAddr, flagHTTPAddr, "", "address for standalone-http (default :80)")
	fl.StringVar(&f.tlsAddr, flagTLSAddr, "", "address for standalone-tls-alpn (default :443)")
	fl.StringVar(&f.dnsAddr, flagDNSAddr, "", "address for dns-embedded (default :53)")
	fl.StringVar(&f.eabKID, flagEABKID, "", "External Account Binding key ID (CAs such as ZeroSSL and Google)")
	fl.StringVar(&f.eabKey, flagEABHMAC, "", "External Account Binding HMAC key (base64url)")
	fl.BoolVar(&f.dryRun, flagDryRun, false, "run against the CA's staging directory (if it has one) and store nothing")
	fl.StringVar(&f.webroot, flagWebroot, "", "document root your web server serves for these names: adds a webroot path (used first unless --path lists \"webroot\" elsewhere)")
	fl.StringVar(&f.deployHook, flagDeployHook, "", "shell command run after each new certificate (e.g. \"systemctl reload nginx\"); DETOUR_FULLCHAIN, DETOUR_KEY ... in its environment")
	return cmd
}

// oneOffOnly rejects one-off flags used without -d.
func oneOffOnly(cmd *cobra.Command) error {
	for _, n := range []string{flagName, flagCA, flagCARoots, flagEmail, flagKeyType, flagProfile, flagPreferredChain, flagPath, flagHTTPAddr, flagTLSAddr, flagDNSAddr, flagEABKID, flagEABHMAC, flagDeployHook, flagWebroot} {
		if cmd.Flags().Changed(n) {
			return usagef("--%s describes a one-off certificate and needs -d/--domain; for configured certificates set it in the config file", n)
		}
	}
	return nil
}

// oneOffConfig turns issue flags into a certificate entry.
func (a *app) oneOffConfig(cfg *config.Config, f issueFlags) (config.Certificate, error) {
	ids, err := ident.ParseAll(f.domains)
	if err != nil {
		return config.Certificate{}, usagef("--%s: %v", flagDomain, err)
	}
	name := f.name
	if name == "" {
		name = strings.Replace(ids[0].Value, "*.", "wildcard.", 1)
		name = strings.ReplaceAll(name, ":", "-")
	}
	if err := store.ValidName(name); err != nil {
		return config.Certificate{}, usagef("--%s: %v", flagName, err)
	}
	if f.keyType != "" {
		if _, err := acme.ParseKeyType(f.keyType); err != nil {
			return config.Certificate{}, usagef("--%s: %v", flagKeyType, err)
		}
	}
	paths := f.paths
	if f.webroot != "" && !slices.Contains(paths, config.KindWebroot) {
		paths = append([]string{config.KindWebroot}, paths...)
	}
	if len(paths) == 0 {
		paths = config.DefaultPaths
	}
	c := config.Certificate{
		Name: name, Domains: f.domains, Identifiers: ids, CA: f.ca, KeyType: f.keyType,
		Profile: f.profile, PreferredChain: f.preferredChain, Paths: paths,
		SelfCheck: true, DeployHook: f.deployHook,
	}
	return c, nil
}

func (a *app) issueOneOff(cmd *cobra.Command, f issueFlags) error {
	cfg, err := a.config(false)
	if err != nil {
		return err
	}
	c, err := a.oneOffConfig(cfg, f)
	if err != nil {
		return err
	}
	// A private copy of the config carries the flag overrides.
	local := *cfg
	local.Paths = make(map[string]config.Path, len(cfg.Paths))
	for k, v := range cfg.Paths {
		local.Paths[k] = v
	}
	local.CAs = make(map[string]config.CA, len(cfg.CAs)+1)
	for k, v := range cfg.CAs {
		local.CAs[k] = v
	}
	if f.email != "" {
		local.Email = f.email
	}
	caRef := f.ca
	if caRef == "" {
		caRef = cfg.CA
	}
	ca, err := config.ResolveCA(cfg, caRef)
	if err != nil {
		return usagef("--%s: %v", flagCA, err)
	}
	if f.caRoots != "" {
		ca.RootBundle = f.caRoots
	}
	if f.eabKID != "" || f.eabKey != "" {
		if f.eabKID == "" || f.eabKey == "" {
			return usagef("--%s and --%s go together: give both", flagEABKID, flagEABHMAC)
		}
		ca.EABKeyID, ca.EABHMACKey = f.eabKID, f.eabKey
	}
	if f.email != "" {
		ca.Email = f.email
	}
	// Register the resolved CA under a private name so that flags win.
	const oneOff = "(command line)"
	ca.Name = oneOff
	if caRef != "" && !strings.Contains(caRef, "://") {
		ca.Name = caRef
	}
	local.CAs[ca.Name] = ca
	c.CA = ca.Name
	if f.webroot != "" {
		root, err := filepath.Abs(f.webroot)
		if err != nil {
			return usagef("--%s: %v", flagWebroot, err)
		}
		local.Paths[config.KindWebroot] = config.Path{Name: config.KindWebroot, Kind: config.KindWebroot, Challenge: config.ChallengeHTTP01, Root: root}
	}
	for _, n := range c.Paths {
		p, err := local.Path(n)
		if err != nil {
			return usagef("--%s: %v", flagPath, err)
		}
		if _, builtin := local.Paths[n]; !builtin {
			switch config.ChallengeOf(p) {
			case "http-01":
				p.Listen = orDefault(f.httpAddr, p.Listen)
			case "tls-alpn-01":
				p.Listen = orDefault(f.tlsAddr, p.Listen)
			case "dns-01":
				p.Listen = orDefault(f.dnsAddr, p.Listen)
			}
			local.Paths[n] = p
		}
	}
	return a.obtain(cmd, &local, []config.Certificate{c}, f.dryRun, f.agreeTOS)
}

func orDefault(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

func (a *app) issueConfigured(cmd *cobra.Command, names []string, dryRun, agreeTOS bool) error {
	cfg, err := a.config(true)
	if err != nil {
		return err
	}
	var certs []config.Certificate
	if len(names) == 0 {
		certs = cfg.Certificates
		if len(certs) == 0 {
			return fmt.Errorf("%s lists no [[certificate]]; add one, or issue a one-off with -d NAME", cfg.File)
		}
	}
	for _, n := range names {
		c, err := cfg.Certificate(n)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	return a.obtain(cmd, cfg, certs, dryRun, agreeTOS)
}

// obtain issues each certificate in turn and prints one line per result.
func (a *app) obtain(cmd *cobra.Command, cfg *config.Config, certs []config.Certificate, dryRun, agreeTOS bool) error {
	m, st, err := a.manager(cfg)
	if err != nil {
		return err
	}
	var failed []string
	for _, c := range certs {
		ps := a.newPathSet()
		req, err := a.requestFromConfig(cfg, c, ps, dryRun, agreeTOS)
		if err == nil {
			if rec, rerr := st.LoadRecord(cmd.Context(), c.Name); rerr == nil && rec.ARIID != "" && rec.CA == req.CA.Client.DirectoryURL() {
				req.Replaces = rec.ARIID
			}
			var res renew.Result
			res, err = m.Obtain(cmd.Context(), req)
			if err == nil {
				a.printResult(st, res, dryRun)
				err = deployFailure(res)
			}
		}
		ps.Close()
		if err != nil {
			a.log.Error("issuing failed", "certificate", c.Name, "error", err)
			failed = append(failed, fmt.Sprintf("%s: %v", c.Name, err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d certificates failed:\n  %s", len(failed), len(certs), strings.Join(failed, "\n  "))
	}
	return nil
}

func (a *app) printResult(st *store.FS, res renew.Result, dryRun bool) {
	if dryRun {
		fmt.Fprintf(a.stdout, "dry run: %s would be issued (valid until %s) in %s; nothing stored\n",
			res.Name, res.NotAfter.UTC().Format(time.RFC3339), res.Elapsed.Round(time.Millisecond))
		return
	}
	fmt.Fprintf(a.stdout, "%s: version %d, valid until %s, obtained in %s\n  %s\n  %s\n",
		res.Name, res.Version, res.NotAfter.UTC().Format(time.RFC3339), res.Elapsed.Round(time.Millisecond),
		st.LivePath(res.Name, "fullchain.pem"), st.LivePath(res.Name, "privkey.pem"))
}

// deployFailure reports a deploy hook that failed after the certificate was
// stored: the new certificate is live, but the server may not use it yet.
func deployFailure(res renew.Result) error {
	if res.DeployErr == nil {
		return nil
	}
	return fmt.Errorf("the new certificate is live (version %d), but %w; fix the hook and run it again, or reload the server by hand", res.Version, res.DeployErr)
}
