package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/plan"
)

const flagJSON = "json"

func (a *app) listCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List certificates: names, expiry, days left",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.status(cmd, nil, asJSON, false, false)
		},
	}
	cmd.Flags().BoolVar(&asJSON, flagJSON, false, "print JSON")
	return cmd
}

func (a *app) statusCommand() *cobra.Command {
	var asJSON, check bool
	cmd := &cobra.Command{
		Use:   "status [NAME...]",
		Short: "Show each certificate's state, expiry, renewal window (ARI), next renewal and last result",
		Long: `Show each certificate: its state, expiry, the CA's renewal window (ARI), when it
will be renewed and the last result. Every run verifies the live files as a web
server reads them (they parse, the key is the certificate's, not expired, the
serial the record names) and reads every record, so the state is the truth:

  ok        nothing to do
  failing   the last renewal failed (it is retried with backoff)
  expired   the live certificate has expired
  revoked   revoked with detour revoke, or the CA asks for it to be replaced now
  broken    a record cannot be read, or the live pair is unusable
  pending   the running agent has still to obtain it

A problem is printed with what to do. With --check the command exits 1 when a
certificate is broken, expired, revoked, or in the last third of its life with
its last renewal failed: for monitoring scripts (--json carries the same
verdict, "alert").`,
		Example: "  detour status\n  detour status --check   # exit 1 when something needs attention\n  detour status www --json",
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.status(cmd, args, asJSON, true, check)
		},
	}
	cmd.Flags().BoolVar(&asJSON, flagJSON, false, "print JSON")
	cmd.Flags().BoolVar(&check, flagCheck, false, "exit 1 when a certificate is broken, expired, or near expiry with its last renewal failed")
	return cmd
}

func (a *app) status(cmd *cobra.Command, names []string, asJSON, detail, check bool) error {
	p, err := a.planner(false)
	if err != nil {
		return err
	}
	rows, err := p.Status(cmd.Context(), names)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			return err
		}
		return alerts(rows, check)
	}
	if len(rows) == 0 {
		fmt.Fprintf(a.stdout, "no certificates in %s\n", p.Store.Dir())
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	if !detail {
		fmt.Fprintln(tw, "NAME\tSTATE\tIDENTIFIERS\tNOT AFTER\tDAYS LEFT")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.State, strings.Join(r.Identifiers, ","), notAfter(r), daysLeft(r))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		a.printProblems(rows)
		return nil
	}
	fmt.Fprintln(tw, "NAME\tSTATE\tIDENTIFIERS\tNOT AFTER\tDAYS LEFT\tARI WINDOW\tRENEW AT\tLAST RESULT")
	for _, r := range rows {
		ari := "-"
		if r.ARIStart != nil {
			ari = r.ARIStart.UTC().Format("2006-01-02 15:04") + " .. " + r.ARIEnd.UTC().Format("2006-01-02 15:04")
		}
		last := "-"
		if r.LastOK != nil {
			last = "ok " + r.LastTime.UTC().Format(time.RFC3339)
			if !*r.LastOK {
				last = "FAILED " + r.LastTime.UTC().Format(time.RFC3339) + ": " + firstLine(r.LastError)
			}
		}
		renewAt := "-"
		if !r.RenewAt.IsZero() {
			renewAt = r.RenewAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.State, strings.Join(r.Identifiers, ","),
			notAfter(r), daysLeft(r), ari, renewAt, last)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	a.printProblems(rows)
	return alerts(rows, check)
}

// printProblems prints, below the table, what is wrong and what to do.
func (a *app) printProblems(rows []plan.CertStatus) {
	for _, r := range rows {
		if r.State == plan.StateOK || r.Problem == "" {
			continue
		}
		fmt.Fprintf(a.stdout, "\n%s: %s: %s\n", r.Name, r.State, r.Problem)
		if r.Fix != "" {
			fmt.Fprintf(a.stdout, "  fix: %s\n", r.Fix)
		}
	}
}

// alerts is the error of --check: the certificates that need attention.
func alerts(rows []plan.CertStatus, check bool) error {
	if !check {
		return nil
	}
	var bad []string
	for _, r := range rows {
		if r.Alert {
			bad = append(bad, r.Name+" ("+r.State+")")
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d certificate(s) need attention: %s", len(bad), strings.Join(bad, ", "))
	}
	return nil
}

func notAfter(r plan.CertStatus) string {
	if r.NotAfter.IsZero() {
		return "-"
	}
	return r.NotAfter.UTC().Format(time.RFC3339)
}

func daysLeft(r plan.CertStatus) string {
	if r.NotAfter.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%.1f", r.DaysLeft)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
