package cli

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/plan"
	"github.com/detour-acme/detour/internal/renew"
)

const flagForce = "force"

func (a *app) renewCommand() *cobra.Command {
	var force, dryRun bool
	cmd := &cobra.Command{
		Use:   "renew [NAME...]",
		Short: "Renew every certificate that is due, or the named ones",
		Long: `Renew certificates that are due: inside the CA's renewal window (ARI, RFC 9773)
when the CA gives one, else when a third of the lifetime is left. Certificates are
renewed the way they were obtained (recorded in the state directory); entries of
the config file take precedence. The live certificate is replaced only after the
new one is complete; a failure leaves it untouched and is retried with backoff.

Safe to run from cron or a systemd timer as often as you like: when nothing is
due, no network request is made.`,
		Example: `  detour renew                # everything that is due
  detour renew www --force    # renew www now
  detour renew --dry-run      # rehearse against the CA's staging directory`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.renew(cmd, args, force, dryRun)
		},
	}
	cmd.Flags().BoolVar(&force, flagForce, false, "renew even if not due")
	cmd.Flags().BoolVar(&dryRun, flagDryRun, false, "run against the CA's staging directory (if it has one), store nothing; implies --force")
	return cmd
}

func (a *app) renew(cmd *cobra.Command, names []string, force, dryRun bool) error {
	ctx := cmd.Context()
	p, err := a.planner(false)
	if err != nil {
		return err
	}
	p.SweepWindows(ctx)
	p.FinishInterrupted(ctx)
	renewals, err := p.Renewals(ctx, names, plan.RequestOptions{DryRun: dryRun})
	if errors.Is(err, plan.ErrNoCertificates) {
		fmt.Fprintln(a.stdout, err)
		return nil
	}
	if err != nil {
		return err
	}
	var failed []string
	notDue := 0
	for _, r := range renewals {
		t := r.Target
		if r.Broken != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", t.Name, plan.BrokenRecordError{Record: r.Broken}))
			continue
		}
		out := p.Manager.Renew(ctx, t, renew.StepOptions{Force: force || dryRun, DryRun: dryRun, Frac: rand.Float64(), RetryFrac: 1, Record: r.Record})
		if out.Err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", t.Name, out.Err))
			continue
		}
		if out.Superseded {
			fmt.Fprintf(a.stdout, "%s: renewed meanwhile by another process; nothing ordered\n", t.Name)
			continue
		}
		if !out.Ran {
			notDue++
			a.log.Debug("not due", "certificate", t.Name, "renew_at", out.Decision.At, "reason", out.Decision.Reason)
			continue
		}
		if !dryRun {
			if err := deployHere(ctx, p, out.Result); err != nil {
				failed = append(failed, fmt.Sprintf("%s: %v", t.Name, err))
				continue
			}
		}
		a.printResult(p, out.Result, dryRun)
		if derr := deployFailure(out.Result); derr != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", t.Name, derr))
		}
	}
	if notDue > 0 {
		fmt.Fprintf(a.stdout, "%d certificate(s) not due yet\n", notDue)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d certificate(s) failed to renew (the live ones are untouched):\n  %s", len(failed), strings.Join(failed, "\n  "))
	}
	return nil
}
