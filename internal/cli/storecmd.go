package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/store/migrate"
)

// Flags of `detour store migrate`.
const flagTo = "to"

// storeTargetEtcd is the one value --to takes.
const storeTargetEtcd = "etcd"

func (a *app) storeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Work on where the state is kept",
	}
	var to string
	var dryRun bool
	mig := &cobra.Command{
		Use:   "migrate --to etcd",
		Short: "Copy this host's state into the fleet's etcd",
		Long: `Copies this host's state directory (state_dir) into the fleet's etcd, named by
the [store] table of the configuration (kind = "etcd"): the ACME accounts, every
version of every certificate (with its number, and which one is live; private
keys encrypted with the fleet's key) and the records. live/ and what belongs to
this host (locks, sockets, firewall leases, unfinished renewals) stay here; the
state directory is only read.

It can be run again at any time: what etcd holds already is left alone, and
what it holds with other content is never overwritten but listed as a conflict,
with its etcd key and what to do. Unreadable files are listed too; everything
else is copied. The exit status is 1 while a conflict, an unreadable file or an
unfinished certificate remains.

An issued certificate this host has not stored yet is not copied: run
` + "`detour renew`" + ` with the single-host configuration first.`,
		Example: `  # state_dir is the single host's; [store] kind = "etcd" names the fleet
  detour --config /etc/detour/fleet.toml store migrate --to etcd --dry-run
  detour --config /etc/detour/fleet.toml store migrate --to etcd`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to != storeTargetEtcd {
				return usagef("--%s %q: the state can be migrated to etcd only: give --%s %s", flagTo, to, flagTo, storeTargetEtcd)
			}
			p, err := a.planner(true)
			if err != nil {
				return err
			}
			defer p.Close()
			from, st, client, err := p.MigrationStores()
			if err != nil {
				return err
			}
			rep, err := migrate.Run(cmd.Context(), migrate.Options{From: from, To: st, Client: client, DryRun: dryRun, Logger: a.log})
			printMigration(a, from.Dir(), st.Prefix(), st.FleetID(), rep)
			if err != nil {
				return err
			}
			return rep.Err()
		},
	}
	mig.Flags().StringVar(&to, flagTo, "", "where to: etcd (the configuration's [store] table)")
	mig.Flags().BoolVar(&dryRun, flagDryRun, false, "say what would be copied, write nothing")
	cmd.AddCommand(mig)
	return cmd
}

// printMigration prints one line per entry, the problems with what to do,
// and the counts.
func printMigration(a *app, dir, prefix, fleet string, rep migrate.Report) {
	verb := "copied"
	if rep.DryRun {
		verb = "would copy"
	}
	fmt.Fprintf(a.stdout, "%s -> etcd prefix %s (fleet %s)%s\n", dir, prefix, fleet, map[bool]string{true: ", dry run: nothing written"}[rep.DryRun])
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	for _, it := range rep.Items {
		outcome := string(it.Outcome)
		if it.Outcome == migrate.Copied {
			outcome = verb
		}
		if it.Outcome.Problem() {
			outcome = strings.ToUpper(outcome)
		}
		line := fmt.Sprintf("%s\t%s\t%s", outcome, it.Kind, it.Name)
		if it.Detail != "" && !it.Outcome.Problem() {
			line += "\t" + it.Detail
		}
		fmt.Fprintln(w, line)
	}
	w.Flush()
	if problems := rep.Problems(); len(problems) > 0 {
		fmt.Fprintln(a.stdout)
		for _, it := range problems {
			fmt.Fprintf(a.stdout, "%s %s %s", strings.ToUpper(string(it.Outcome)), it.Kind, it.Name)
			if it.File != "" {
				fmt.Fprintf(a.stdout, " (%s)", it.File)
			}
			if it.Err != nil {
				fmt.Fprintf(a.stdout, ": %v", it.Err)
			}
			fmt.Fprintf(a.stdout, "\n  %s\n", it.Detail)
		}
	}
	fmt.Fprintf(a.stdout, "\n%d %s, %d already in etcd, %d conflict(s), %d unreadable, %d unfinished, %d failed, %d not copied\n",
		rep.Count(migrate.Copied), verb, rep.Count(migrate.Already), rep.Count(migrate.Conflict), rep.Count(migrate.Unreadable),
		rep.Count(migrate.Unfinished), rep.Count(migrate.Failed), rep.Count(migrate.Skipped))
	if rep.Count(migrate.Copied) == 0 && len(rep.Problems()) == 0 {
		fmt.Fprintln(a.stdout, "nothing to do: everything is already in etcd")
	}
}
