package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
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
	cfg, err := a.config(false)
	if err != nil {
		return err
	}
	m, st, err := a.manager(cfg)
	if err != nil {
		return err
	}
	recs, err := st.ListRecords(ctx)
	if err != nil {
		return err
	}
	byName := make(map[string]store.Record, len(recs))
	for _, r := range recs {
		byName[r.Name] = r
	}
	a.sweepPending(ctx, cfg, m, byName)
	configured := make(map[string]config.Certificate, len(cfg.Certificates))
	for _, c := range cfg.Certificates {
		configured[c.Name] = c
	}
	if len(names) == 0 {
		seen := map[string]bool{}
		for _, c := range cfg.Certificates {
			names = append(names, c.Name)
			seen[c.Name] = true
		}
		for _, r := range recs {
			if !seen[r.Name] {
				names = append(names, r.Name)
			}
		}
	} else {
		for _, n := range names {
			if _, ok := byName[n]; !ok {
				if _, ok := configured[n]; !ok {
					return fmt.Errorf("no certificate named %q: `detour list` shows the known ones", n)
				}
			}
		}
	}
	if len(names) == 0 {
		fmt.Fprintln(a.stdout, "no certificates yet: issue one with `detour issue -d NAME`")
		return nil
	}
	now := time.Now()
	var failed []string
	renewed, notDue := 0, 0
	for _, n := range names {
		rec, hasRec := byName[n]
		if hasRec && !force && !dryRun {
			d := renew.Due(rec, now, rand.Float64())
			if !d.Due {
				notDue++
				a.log.Debug("not due", "certificate", n, "renew_at", d.At, "reason", d.Reason)
				continue
			}
			a.log.Info("due", "certificate", n, "reason", d.Reason)
		}
		ps := a.newPathSet()
		var req renew.Request
		if c, ok := configured[n]; ok {
			req, err = a.requestFromConfig(cfg, withFallbackCA(cfg, c, rec, hasRec), ps, dryRun, false)
		} else {
			req, err = a.requestFromRecord(cfg, rec, ps, dryRun)
		}
		if err == nil {
			if hasRec && rec.ARIID != "" && rec.CA == req.CA.Client.DirectoryURL() {
				req.Replaces = rec.ARIID
			}
			var res renew.Result
			res, err = m.Obtain(ctx, req)
			if err == nil {
				renewed++
				a.printResult(st, res, dryRun)
				if derr := deployFailure(res); derr != nil {
					failed = append(failed, fmt.Sprintf("%s: %v", n, derr))
				}
			}
		}
		ps.Close()
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", n, err))
			if hasRec && !dryRun {
				a.recordFailure(cmd, st, rec, err)
			}
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

// recordFailure notes a failed attempt in the record, for backoff and status.
func (a *app) recordFailure(cmd *cobra.Command, st *store.FS, rec store.Record, cause error) {
	ctx := cmd.Context()
	fresh, err := st.LoadRecord(ctx, rec.Name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil {
		rec = fresh
	}
	failures := 1
	if rec.Last != nil && !rec.Last.OK {
		failures = rec.Last.Failures + 1
	}
	rec.Last = &store.Attempt{Time: time.Now(), OK: false, Error: cause.Error(), Failures: failures, RetryAfter: retryAfterOf(cause)}
	if err := st.SaveRecord(ctx, rec); err != nil {
		a.log.Error("recording the failure", "certificate", rec.Name, "error", err)
	}
}
