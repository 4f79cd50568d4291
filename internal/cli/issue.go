package cli

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/plan"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
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
	flagChallenge      = "challenge"
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
	challenge      string
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

Validation paths (--path, in order of preference): a built-in path below,
"webroot" (with --webroot DIR), or NAME, a [path.NAME] table of the config file.
--http-addr, --tls-addr and --dns-addr set where the built-in paths listen;
'detour paths' describes every kind of path.

` + builtinHelp() + `
Before asking the CA, Detour fetches each answer the way the CA will and stops
if it is wrong (--no-self-check to skip, e.g. behind NAT without hairpin).

On a terminal, each step is shown as it ends, with its time: account, order,
each name's path (and why that one), self-check, validation, finalize, stored,
deployed. With --log-format json, or when stderr is not a terminal, the logs
are written instead.

Wildcards (*.example.com) need a DNS path; IP addresses need http-01 or tls-alpn-01.`,
		Example: `  detour issue -d example.com -d www.example.com --email ops@example.com --agree-tos
  detour issue -d '*.example.com' --path dns-embedded --ca letsencrypt-staging
  detour issue -d example.com --webroot /var/www/html --deploy-hook 'systemctl reload nginx'
  detour issue -d example.com --path side-port,stateless
  detour issue -d 192.0.2.10 --path standalone-tls-alpn --profile shortlived
  detour issue www            # the [[certificate]] named www in the config`,
		RunE: func(cmd *cobra.Command, args []string) error {
			live := a.liveProgress(cmd)
			if len(f.domains) > 0 {
				if len(args) > 0 {
					return usagef("give either -d/--domain (a one-off certificate) or certificate names from the config, not both")
				}
				return a.issueOneOff(cmd, f, live)
			}
			if err := oneOffOnly(cmd); err != nil {
				return err
			}
			return a.issueConfigured(cmd, args, f.dryRun, f.agreeTOS, live)
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
	fl.StringVar(&f.challenge, flagChallenge, "", "challenge the built-in paths answer when they can answer several: "+strings.Join(solve.Types(), ", ")+
		" (e.g. dns-account-01 on dns-embedded, so that several clients validate one name without sharing a record)")
	fl.StringVar(&f.eabKID, flagEABKID, "", "External Account Binding key ID (CAs such as ZeroSSL and Google)")
	fl.StringVar(&f.eabKey, flagEABHMAC, "", "External Account Binding HMAC key (base64url)")
	fl.BoolVar(&f.dryRun, flagDryRun, false, "run against the CA's staging directory (if it has one) and store nothing")
	fl.StringVar(&f.webroot, flagWebroot, "", "document root your web server serves for these names: adds a webroot path (used first unless --path lists \"webroot\" elsewhere)")
	fl.StringVar(&f.deployHook, flagDeployHook, "", "shell command run after each new certificate (e.g. \"systemctl reload nginx\"); DETOUR_FULLCHAIN, DETOUR_KEY ... in its environment")
	return cmd
}

// oneOffOnly rejects one-off flags used without -d.
func oneOffOnly(cmd *cobra.Command) error {
	for _, n := range []string{flagName, flagCA, flagCARoots, flagEmail, flagKeyType, flagProfile, flagPreferredChain, flagPath, flagHTTPAddr, flagTLSAddr, flagDNSAddr, flagChallenge, flagEABKID, flagEABHMAC, flagDeployHook, flagWebroot} {
		if cmd.Flags().Changed(n) {
			return usagef("--%s describes a one-off certificate and needs -d/--domain; for configured certificates set it in the config file", n)
		}
	}
	return nil
}

func (a *app) issueOneOff(cmd *cobra.Command, f issueFlags, live bool) error {
	p, err := a.planner(false)
	if err != nil {
		return err
	}
	opt := plan.RequestOptions{DryRun: f.dryRun, AgreeTOS: f.agreeTOS}
	t, err := p.OneOff(plan.OneOff{
		Domains: f.domains, Name: f.name, CA: f.ca, CARoots: f.caRoots, Email: f.email,
		EABKeyID: f.eabKID, EABHMACKey: f.eabKey, KeyType: f.keyType, Profile: f.profile,
		PreferredChain: f.preferredChain, Paths: f.paths, HTTPAddr: f.httpAddr, TLSAddr: f.tlsAddr,
		DNSAddr: f.dnsAddr, Challenge: f.challenge, Webroot: f.webroot, DeployHook: f.deployHook,
	}, opt)
	if err != nil {
		return usage(err)
	}
	return a.obtain(cmd, p, []renew.Target{t}, f.dryRun, live)
}

func (a *app) issueConfigured(cmd *cobra.Command, names []string, dryRun, agreeTOS, live bool) error {
	p, err := a.planner(true)
	if err != nil {
		return err
	}
	targets, err := p.Configured(names, plan.RequestOptions{DryRun: dryRun, AgreeTOS: agreeTOS})
	if err != nil {
		return err
	}
	return a.obtain(cmd, p, targets, dryRun, live)
}

// obtain issues each certificate in turn, due or not, and prints one line
// per result; with live, each step as it ends (see liveProgress).
func (a *app) obtain(cmd *cobra.Command, p *plan.Planner, targets []renew.Target, dryRun, live bool) error {
	var failed []string
	for _, t := range targets {
		opt := renew.StepOptions{Force: true, Manual: true, DryRun: dryRun, Frac: rand.Float64(), RetryFrac: 1}
		if live {
			opt.Progress = showProgress(a.stderr, t.Name, len(targets) > 1, time.Now())
		}
		out := p.Manager.Renew(cmd.Context(), t, opt)
		err := out.Err
		if err == nil && !dryRun {
			err = deployHere(cmd.Context(), p, out.Result)
		}
		if err == nil {
			a.printResult(p, out.Result, dryRun)
			err = deployFailure(out.Result)
		}
		if err != nil {
			a.log.Error("issuing failed", "certificate", t.Name, "error", err)
			failed = append(failed, fmt.Sprintf("%s: %v", t.Name, err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d certificates failed:\n  %s", len(failed), len(targets), strings.Join(failed, "\n  "))
	}
	return nil
}

func (a *app) printResult(p *plan.Planner, res renew.Result, dryRun bool) {
	if dryRun {
		fmt.Fprintf(a.stdout, "dry run: %s would be issued (valid until %s) in %s; nothing stored\n",
			res.Name, res.NotAfter.UTC().Format(time.RFC3339), res.Elapsed.Round(time.Millisecond))
		return
	}
	fmt.Fprintf(a.stdout, "%s: version %d, valid until %s, obtained in %s\n  %s\n  %s\n",
		res.Name, res.Version, res.NotAfter.UTC().Format(time.RFC3339), res.Elapsed.Round(time.Millisecond),
		p.Store.LivePath(res.Name, "fullchain.pem"), p.Store.LivePath(res.Name, "privkey.pem"))
}

// deployHere makes this node serve res in a fleet (its agent would, a
// moment later; a command run by hand does it at once); nothing on a
// single host.
func deployHere(ctx context.Context, p *plan.Planner, res renew.Result) error {
	if err := p.DeployNow(ctx, res.Name); err != nil {
		return fmt.Errorf("%s is stored in the fleet (version %d), but deploying it on this node failed (the agents of the nodes deploy it too): %w", res.Name, res.Version, err)
	}
	return nil
}

// deployFailure reports a deploy hook that failed after the certificate was
// stored: the new certificate is live, but the server may not use it yet.
func deployFailure(res renew.Result) error {
	if res.DeployErr == nil {
		return nil
	}
	return fmt.Errorf("the new certificate is live (version %d), but %w; fix the hook and run it again, or reload the server by hand", res.Version, res.DeployErr)
}
