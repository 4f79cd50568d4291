package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/importer"
	"github.com/detour-acme/detour/internal/plan"
)

// Flags of `detour import lego`: lego's own names, so that the flags lego
// was run with can be repeated as they are.
const (
	flagLegoServer      = "server"
	flagLegoHTTP        = "http"
	flagLegoHTTPPort    = "http.port"
	flagLegoHTTPWebroot = "http.webroot"
	flagLegoTLS         = "tls"
	flagLegoTLSPort     = "tls.port"
	flagLegoDNS         = "dns"
)

// importFlags are the flags both import commands take.
type importFlags struct {
	dryRun           bool
	caRoots, profile string
}

func (f *importFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.dryRun, flagDryRun, false, "print the mapping and what would be written; write nothing")
	fl.StringVar(&f.caRoots, flagCARoots, "", "PEM bundle of roots renewals trust for the CA's API (a private CA)")
	fl.StringVar(&f.profile, flagProfile, "", "ACME profile renewals of the imported certificates ask for (the sources record none)")
}

func (a *app) importCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Take over the certificates and ACME accounts of certbot or lego",
		Long: `Take over what another ACME client keeps: its accounts (key and URL, so that no
new account is registered), every kept version of its certificates, and how each
is renewed, mapped to Detour's paths. The first renewal by Detour then tells the
CA which certificate it replaces (ARI "replaces"), and whatever is bound to the
account (rate-limit history, a dns-persist-01 record) keeps working.

The other client's directory is only read. What has no Detour path is listed
with the reason and what to do; the rest is imported. Run it with --dry-run
first; running it again imports what was fixed and leaves the rest alone.

Afterwards, stop the other client from renewing (systemctl disable --now
certbot.timer), and point servers at Detour's live/<name>/ files.`,
	}
	cmd.AddCommand(a.importCertbotCommand(), a.importLegoCommand())
	return cmd
}

func (a *app) importCertbotCommand() *cobra.Command {
	var f importFlags
	cmd := &cobra.Command{
		Use:   "certbot [DIR]",
		Short: "Import certbot's accounts and certificates (DIR: " + importer.CertbotDir + ")",
		Long: `Import certbot's configuration directory (` + importer.CertbotDir + `, or what certbot's
--config-dir named): each lineage of renewal/ with every version of archive/ (the
live one stays live), and the account it renews with.

Renewal settings carried over: the webroot authenticator (webroot_path,
webroot_map) as webroot paths; standalone (http01_port, http01_address) as a
standalone path on that address; dns-rfc2136 as an rfc2136 path (the TSIG secret
goes to a file of the state directory); the deploy hook; an nginx or apache
installer as a reload after each new certificate; key type, preferred chain.
The nginx, apache and manual authenticators and other DNS plugins are listed
with a suggested path: describe the certificate in the configuration
([[certificate]] of the same name with your paths) and import again.`,
		Example: `  detour import certbot --dry-run
  detour import certbot
  detour import certbot /srv/backup/letsencrypt --state-dir /var/lib/detour`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := importer.ReadCertbot(firstArg(args))
			if err != nil {
				return err
			}
			return a.runImport(cmd, src, f)
		},
	}
	f.register(cmd)
	return cmd
}

func (a *app) importLegoCommand() *cobra.Command {
	var f importFlags
	var o importer.LegoOptions
	cmd := &cobra.Command{
		Use:   "lego [DIR]",
		Short: "Import lego's account and certificates (DIR: lego's --path, ./" + importer.LegoDir + ")",
		Long: `Import lego's --path directory (./` + importer.LegoDir + ` by default): the account of --server
and --email, and every certificate of certificates/ that CA issued.

lego keeps no record of how it validated, so give the challenge flags lego was
run with, by lego's names: --http with --http.port (a standalone path on that
address) or --http.webroot (a webroot path), --tls with --tls.port, --dns
PROVIDER (a dns-provider path; lego took the credentials from environment
variables, so write them to a file and add --credentials-file FILE). Without
them every certificate is listed as not mapped.`,
		Example: `  detour import lego --email ops@example.com --http.webroot /var/www/html --dry-run
  detour import lego /srv/lego --server https://acme-v02.api.letsencrypt.org/directory --http --http.port :80
  detour import lego --dns cloudflare --credentials-file /etc/detour/cloudflare.ini`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// As with lego, the settings of a challenge need its flag.
			for flag, needs := range map[string]bool{flagLegoHTTPPort: o.HTTP, flagLegoTLSPort: o.TLS, flagCredentialsFile: o.DNS != ""} {
				if cmd.Flags().Changed(flag) && !needs {
					return usagef("--%s is a setting of a challenge flag that is not given: add --%s", flag, map[string]string{
						flagLegoHTTPPort: flagLegoHTTP, flagLegoTLSPort: flagLegoTLS, flagCredentialsFile: flagLegoDNS}[flag])
				}
			}
			src, err := importer.ReadLego(firstArg(args), o)
			if err != nil {
				return err
			}
			return a.runImport(cmd, src, f)
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&o.Server, flagLegoServer, importer.LegoDefaultServer, "lego's --server: the CA's directory URL")
	fl.StringVar(&o.Email, flagEmail, "", "lego's --email: the account (default: the only one lego keeps for --server)")
	fl.BoolVar(&o.HTTP, flagLegoHTTP, false, "lego's --http: http-01 answered on --http.port")
	fl.StringVar(&o.HTTPPort, flagLegoHTTPPort, ":80", "lego's --http.port: the address it listened on")
	fl.StringVar(&o.HTTPWebroot, flagLegoHTTPWebroot, "", "lego's --http.webroot: the document root it wrote answers into")
	fl.BoolVar(&o.TLS, flagLegoTLS, false, "lego's --tls: tls-alpn-01 answered on --tls.port")
	fl.StringVar(&o.TLSPort, flagLegoTLSPort, ":443", "lego's --tls.port: the address it listened on")
	fl.StringVar(&o.DNS, flagLegoDNS, "", "lego's --dns: the DNS provider that answered dns-01")
	fl.StringVar(&o.CredentialsFile, flagCredentialsFile, "", "with --dns: a file (mode 0600) of the provider's credentials as key = value lines (detour paths dns-provider)")
	return cmd
}

func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// runImport maps and applies src, and prints the outcome.
func (a *app) runImport(cmd *cobra.Command, src importer.Source, f importFlags) error {
	cfg, err := a.config(false)
	if err != nil {
		return err
	}
	p, rep, err := plan.Import(cmd.Context(), src, plan.ImportOptions{Config: cfg, StateDir: a.stateDir, DryRun: f.dryRun,
		RootBundle: f.caRoots, Profile: f.profile, Logger: a.log})
	if len(p.Certificates) > 0 || len(p.Accounts) > 0 || err == nil {
		printImport(a.stdout, p, rep)
	}
	if err != nil {
		return err
	}
	return rep.Err()
}

// printImport prints the mapping, certificate by certificate, with the
// outcome of each entry, then what was left out and the counts.
func printImport(w io.Writer, p importer.ImportPlan, rep importer.Report) {
	head := fmt.Sprintf("%s %s -> %s", p.Client, p.Dir, p.StateDir)
	if rep.DryRun {
		head += " (dry run: nothing written)"
	}
	fmt.Fprintln(w, head)
	outcome := func(it importer.Item) string {
		o := string(it.Outcome)
		if rep.DryRun && it.Outcome == importer.Imported {
			o = "would import"
		}
		if it.Outcome.Problem() {
			o = strings.ToUpper(o)
		}
		return o
	}
	if len(p.Accounts) > 0 {
		fmt.Fprintln(w, "\naccounts:")
	}
	for _, ap := range p.Accounts {
		it, _ := rep.Item(importer.KindAccount, ap.Prefix)
		fmt.Fprintf(w, "  %s: %s\n", ap.Prefix, outcome(it))
		fmt.Fprintf(w, "      %s at %s\n", ap.URL, ap.Directory)
		fmt.Fprintf(w, "      from %s; renews %s\n", ap.File, strings.Join(ap.Certificates, ", "))
		if it.Outcome.Problem() {
			printProblem(w, it)
		}
	}
	if len(p.Certificates) > 0 {
		fmt.Fprintln(w, "\ncertificates:")
	}
	for _, cp := range p.Certificates {
		it, _ := rep.Item(importer.KindCertificate, cp.Name)
		fmt.Fprintf(w, "  %s: %s\n", cp.Name, outcome(it))
		if cp.Source != cp.Name {
			fmt.Fprintf(w, "      %s's name: %s\n", p.Client, cp.Source)
		}
		fmt.Fprintf(w, "      from %s\n", cp.File)
		if len(cp.Identifiers) > 0 {
			fmt.Fprintf(w, "      names: %s\n", strings.Join(cp.Identifiers, ", "))
		}
		if len(cp.Versions) > 0 {
			ns := make([]string, len(cp.Versions))
			for i, v := range cp.Versions {
				ns[i] = fmt.Sprint(v.N)
			}
			fmt.Fprintf(w, "      versions: %s (the last is live), expires %s\n", strings.Join(ns, ", "),
				cp.Versions[len(cp.Versions)-1].Leaf.NotAfter.UTC().Format("2006-01-02"))
		}
		if cp.Account != nil {
			fmt.Fprintf(w, "      account: %s\n", cp.Account.URL)
		}
		if u := cp.Unmapped; u != nil {
			// Nothing of it is imported: why, and what to do.
			fmt.Fprintf(w, "      why: %s\n      do:  %s\n", u.Reason, u.Suggestion)
			continue
		}
		for _, mp := range cp.Paths {
			fmt.Fprintf(w, "      path %s: %s %s\n          from %s\n", mp.Ref.Name, mp.Ref.Kind, settingsText(mp.Ref.Settings), mp.From)
		}
		if cp.Configured {
			fmt.Fprintln(w, "      renewed as the configuration's [[certificate]] of this name describes")
		} else if cp.Record.DeployHook != "" {
			fmt.Fprintf(w, "      deploy hook: %s\n", cp.Record.DeployHook)
		}
		for _, n := range cp.Notes {
			printNote(w, n)
		}
		if it.Outcome.Problem() {
			printProblem(w, it)
		}
	}
	if len(p.Notes) > 0 || len(p.Skipped) > 0 {
		fmt.Fprintln(w, "\nleft out:")
	}
	for _, n := range p.Notes {
		printNote(w, n)
	}
	for _, s := range p.Skipped {
		fmt.Fprintf(w, "  %s\n", s)
	}
	verb := "imported"
	if rep.DryRun {
		verb = "would be imported"
	}
	fmt.Fprintln(w)
	for _, kind := range []string{importer.KindCertificate, importer.KindAccount} {
		count := func(o importer.Outcome) int {
			n := 0
			for _, it := range rep.Items {
				if it.Kind == kind && it.Outcome == o {
					n++
				}
			}
			return n
		}
		fmt.Fprintf(w, "%ss: %d %s, %d already imported", kind, count(importer.Imported), verb, count(importer.Already))
		for _, o := range []importer.Outcome{importer.NotMapped, importer.Conflict, importer.Unreadable, importer.Failed} {
			if n := count(o); n > 0 {
				fmt.Fprintf(w, ", %d %s", n, o)
			}
		}
		fmt.Fprintln(w)
	}
	switch {
	case rep.Count(importer.Imported) == 0 && rep.Count(importer.Already) > 0:
		fmt.Fprintln(w, "nothing to do: everything that maps is imported already")
	case rep.Count(importer.Imported) > 0 && !rep.DryRun:
		stop := "remove the cron job or timer that runs lego renew"
		if p.Client == importer.Certbot {
			stop = "systemctl disable --now certbot.timer (or remove certbot's cron job)"
		}
		fmt.Fprintf(w, "next: stop %s renewing them: %s; point your servers at %s/live/<name>/; check one renewal with: detour renew --force NAME\n",
			p.Client, stop, p.StateDir)
	}
}

func printNote(w io.Writer, n importer.Note) {
	fmt.Fprintf(w, "      note: %s (%s): %s\n", n.Setting, n.Where, n.Reason)
	if n.Suggestion != "" {
		fmt.Fprintf(w, "          instead: %s\n", n.Suggestion)
	}
}

func printProblem(w io.Writer, it importer.Item) {
	if it.Err != nil {
		fmt.Fprintf(w, "      error: %v\n", it.Err)
	}
	fmt.Fprintf(w, "      %s\n", it.Detail)
}

// settingsText renders a path's settings as key=value, sorted.
func settingsText(s map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s)) {
		parts = append(parts, k+"="+s[k])
	}
	return strings.Join(parts, " ")
}
