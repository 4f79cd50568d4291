package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/doctor"
	"github.com/detour-acme/detour/internal/plan"
)

type doctorFlags struct {
	json     bool
	staging  bool
	agreeTOS bool
	ca       string
	keyFiles []string
	noProbe  bool
}

func (a *app) doctorCommand() *cobra.Command {
	var f doctorFlags
	cmd := &cobra.Command{
		Use:   "doctor [NAME...]",
		Short: "Find which validation path works on this host, and why: a configuration before anything is ordered",
		Long: `Look at this host the way the CA will, before anything is ordered, and say
which validation path works for each name:

  - the names' A and AAAA records, asked of their authoritative servers, against
    the addresses of this host's interfaces (NAT, a balancer, the AAAA trap);
  - who holds ports 80 and 443, which web server it is and what its
    configuration does for the name (document root, an existing forward of
    /.well-known/acme-challenge/, an nginx stream or HAProxy TCP frontend);
  - what the CA would fetch: a probe file written through the document root,
    and one answered by a side-port listener for a few seconds, fetched the
    way Let's Encrypt does (IPv6 first, redirects to ports 80/443 only);
  - the local firewall's verdict on inbound 80 and 443, and the cloud the
    host runs in (its firewall may apply too);
  - the DNS paths: the zone's name servers (a provider with an API), RFC 2136
    updates with the keys known, an acme-dns CNAME, a dns-persist-01 record,
    CAA and DNSSEC;
  - the CA's directory: profiles, ARI, CAA identities.

Then it ranks every path kind (works now / works after one change / impossible,
each with its evidence) and prints the configuration of the best, ready to
append to detour.toml and check with 'detour config check', or the one change
to make first. Without NAMEs it diagnoses the names of the configuration's
certificates.

Doctor changes nothing: the probe file and the listener are removed, no
firewall rule is touched, the RFC 2136 probe update changes no record. Exit
status: 0 when a path works now, 1 when a change is needed first or no path
can work.`,
		Example: `  detour doctor example.com www.example.com
  detour doctor --json example.com
  detour doctor --tsig-key-file /etc/bind/detour.key example.com`,
		RunE: func(cmd *cobra.Command, args []string) error { return a.doctor(cmd, args, f) },
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.json, "json", false, "print the report as JSON (documented in the README; stable)")
	fl.StringVar(&f.ca, flagCA, "", "the CA to check (a shortcut, a [ca.NAME] table or a directory URL; default: the configuration's default_ca)")
	fl.StringArrayVar(&f.keyFiles, plan.FieldTSIGKeyFile, nil, "a BIND key file (tsig-keygen output) to try RFC 2136 updates with (repeatable)")
	fl.BoolVar(&f.noProbe, "no-probe", false, "do not write a probe file into the document root or listen on the side-port address")
	fl.BoolVar(&f.staging, "staging", false, "then order a certificate at the CA's staging directory through the recommended path, validated from the CA's vantage points, step by step (never the production CA; nothing is stored)")
	fl.BoolVar(&f.agreeTOS, flagAgreeTOS, false, "with --staging: agree to the staging CA's terms of service")
	return cmd
}

func (a *app) doctor(cmd *cobra.Command, names []string, f doctorFlags) error {
	// Doctor changes nothing: not even a state directory is created.
	p, err := a.planner(false, func(o *plan.Options) { o.ReadOnly = true })
	if err != nil {
		return err
	}
	defer p.Close()
	rep, err := p.Doctor(cmd.Context(), plan.DoctorInput{Names: names, CA: f.ca, TSIGKeyFiles: f.keyFiles, NoProbe: f.noProbe})
	var ie *plan.InputError
	switch {
	case errors.As(err, &ie) && ie.Field == plan.FieldDomains:
		return usagef("%v", ie.Err) // the names are arguments, not a flag
	case errors.As(err, &ie):
		return usage(err)
	case err != nil:
		return err
	}
	if f.json {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printDoctor(a.stdout, rep)
	}
	if f.staging && rep.Recommendation.Ready {
		q, targets, err := p.DoctorStaging(rep, f.ca, f.agreeTOS)
		if errors.As(err, &ie) {
			return usage(fmt.Errorf("--staging: %w", err))
		}
		if err != nil {
			return fmt.Errorf("--staging: %w", err)
		}
		fmt.Fprintln(a.stderr, "\nOrdering at the CA's staging directory through the recommended configuration (nothing is stored):")
		if err := a.obtain(cmd, q, targets, true, true); err != nil {
			return fmt.Errorf("the staging order through the recommended path failed: %w", err)
		}
		return nil
	}
	if f.staging {
		fmt.Fprintln(a.stderr, "\n--staging: no order placed: the recommendation does not work yet (see above)")
	}
	switch rec := rep.Recommendation; {
	case rec.Blocked != "":
		return fmt.Errorf("no validation path can work for %s yet (see above)", strings.Join(namesOf(rep), ", "))
	case !rec.Ready:
		return fmt.Errorf("the recommended configuration needs a change first: %s", strings.Join(rec.Changes, "; "))
	}
	return nil
}

// printDoctor prints the report for people: the host checks, each name's
// checks and ranking, then the recommendation.
func printDoctor(out io.Writer, rep doctor.Report) {
	fmt.Fprintln(out, "Host")
	for _, r := range rep.Host {
		fmt.Fprintf(out, "  %s\n", indent(r.String()))
	}
	for _, n := range rep.Names {
		fmt.Fprintf(out, "\n%s\n", n.Name)
		for _, r := range n.Checks {
			fmt.Fprintf(out, "  %s\n", indent(r.String()))
		}
		fmt.Fprintln(out, "\n  Paths, best first:")
		for _, r := range n.Paths {
			what := r.Kind + " (" + r.Challenge + ")"
			if r.Window != "" {
				what += " + firewall window in " + r.Window
			}
			fmt.Fprintf(out, "    %-12s %s: %s\n", r.Verdict, what, r.Why)
			if r.Change != "" {
				fmt.Fprintf(out, "                 change: %s\n", r.Change)
			}
		}
	}
	rec := rep.Recommendation
	fmt.Fprintln(out)
	switch {
	case rec.Blocked != "":
		fmt.Fprintf(out, "No path can work yet: %s\n", rec.Blocked)
		return
	case rec.Ready:
		fmt.Fprintln(out, "Recommended configuration (works now; append it to detour.toml, then 'detour config check'):")
	default:
		fmt.Fprintln(out, "First make this change:")
		for _, c := range rec.Changes {
			fmt.Fprintf(out, "  - %s\n", c)
		}
		for _, s := range rec.Snippets {
			fmt.Fprintf(out, "\n%s\n", strings.TrimRight(s, "\n"))
		}
		fmt.Fprintln(out, "\nThen this configuration works (append it to detour.toml, then 'detour config check'):")
	}
	fmt.Fprintf(out, "\n%s", rec.TOML)
}

// indent indents a check's continuation lines under the list.
func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n  ") }

func namesOf(rep doctor.Report) []string {
	var out []string
	for _, n := range rep.Names {
		out = append(out, n.Name)
	}
	return out
}
