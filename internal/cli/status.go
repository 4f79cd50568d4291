package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

const flagJSON = "json"

func (a *app) listCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List certificates: names, expiry, days left",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.status(cmd, nil, asJSON, false)
		},
	}
	cmd.Flags().BoolVar(&asJSON, flagJSON, false, "print JSON")
	return cmd
}

func (a *app) statusCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [NAME...]",
		Short: "Show each certificate's expiry, renewal window (ARI), next renewal and last result",
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.status(cmd, args, asJSON, true)
		},
	}
	cmd.Flags().BoolVar(&asJSON, flagJSON, false, "print JSON")
	return cmd
}

func (a *app) status(cmd *cobra.Command, names []string, asJSON, detail bool) error {
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
		return enc.Encode(rows)
	}
	if len(rows) == 0 {
		fmt.Fprintf(a.stdout, "no certificates in %s\n", p.Store.Dir())
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	if !detail {
		fmt.Fprintln(tw, "NAME\tIDENTIFIERS\tNOT AFTER\tDAYS LEFT")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\n", r.Name, strings.Join(r.Identifiers, ","), r.NotAfter.UTC().Format(time.RFC3339), r.DaysLeft)
		}
		return tw.Flush()
	}
	fmt.Fprintln(tw, "NAME\tIDENTIFIERS\tNOT AFTER\tDAYS LEFT\tARI WINDOW\tRENEW AT\tLAST RESULT")
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%s\t%s\t%s\n", r.Name, strings.Join(r.Identifiers, ","),
			r.NotAfter.UTC().Format(time.RFC3339), r.DaysLeft, ari, r.RenewAt.UTC().Format(time.RFC3339), last)
	}
	return tw.Flush()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
