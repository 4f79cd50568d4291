package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/firewall"
)

// envHoldFirewall is a test hook: when set to 1, a renewal stops right
// after its firewall window opens, prints holdFirewallLine to standard
// error and waits until it is killed or interrupted. The end-to-end tests
// use it to kill Detour with the window open.
const envHoldFirewall = "DETOUR_TEST_HOLD_FIREWALL"

// holdFirewallLine is what the hook prints once the window is open.
const holdFirewallLine = "detour-test: firewall window open; holding"

// flagFirewall names a backend on `detour firewall status|close`.
const flagFirewall = "firewall"

// flagStale limits `detour firewall close` to windows past their timeout.
const flagStale = "stale"

// holdFirewall is the firewall window hook of envHoldFirewall.
func holdFirewall(ctx context.Context) error {
	fmt.Fprintln(os.Stderr, holdFirewallLine)
	<-ctx.Done()
	return ctx.Err()
}

func (a *app) firewallCommand() *cobra.Command {
	var backends []string
	cmd := &cobra.Command{
		Use:   "firewall",
		Short: "Show or close the firewall windows Detour holds open",
		Long: `A path with firewall = "..." opens its port (80 or 443) only while the CA
validates, and the firewall closes it by itself after firewall_timeout even if
Detour dies. These commands show what is open now and close all of it.

The firewalls are those named by the paths of the config file, or by --firewall.`,
	}
	cmd.PersistentFlags().StringSliceVar(&backends, flagFirewall, nil, "firewall(s) to look at: "+strings.Join(firewall.Names(), ", ")+
		" (default: those the config's paths use)")
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the ports Detour holds open, until when, and for whom",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.firewallStatus(cmd.Context(), backends)
		},
	}
	var stale bool
	closeCmd := &cobra.Command{
		Use:   "close",
		Short: "Close every firewall window Detour holds open (--stale: only those past their timeout)",
		Long: `Close every firewall window Detour holds open, whoever holds it.

With --stale, close only the windows left open past their firewall_timeout by
Detour runs that were killed, and only when no Detour run is validating now.
A cloud firewall's rule (digitalocean, aws-sg, hetzner) does not expire by
itself: the agent and 'detour renew' do this at start, and the systemd timer
packaging/systemd/detour-firewall-sweep.timer runs it every 5 minutes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if stale {
				return a.firewallCloseStale(cmd.Context(), backends)
			}
			return a.firewallClose(cmd.Context(), backends)
		},
	}
	closeCmd.Flags().BoolVar(&stale, flagStale, false, "close only the windows past their timeout that killed runs left")
	cmd.AddCommand(status, closeCmd)
	return cmd
}

// keepers returns a Keeper for each firewall named, or used by the
// config's paths.
func (a *app) keepers(names []string) ([]*firewall.Keeper, error) {
	p, err := a.planner(false)
	if err != nil {
		return nil, err
	}
	ks, err := p.Keepers(names)
	return ks, usage(err)
}

func (a *app) firewallStatus(ctx context.Context, names []string) error {
	keepers, err := a.keepers(names)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FIREWALL\tPORT\tFAMILY\tUNTIL\tHELD FOR\tWHERE")
	var errs []error
	rows := 0
	now := time.Now()
	for _, k := range keepers {
		holes, leases, err := k.Status(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k.Backend().Name(), err))
			continue
		}
		holders := func(port int) string {
			var ids []string
			for _, l := range leases {
				if l.Port == port {
					ids = append(ids, fmt.Sprintf("%s (pid %d)", l.Identifier, l.PID))
				}
			}
			if len(ids) == 0 {
				return "-"
			}
			return strings.Join(ids, ", ")
		}
		seen := map[int]bool{}
		for _, h := range holes {
			seen[h.Port] = true
			fmt.Fprintf(tw, "%s\t%d/%s\t%s\t%s\t%s\t%s\n", h.Backend, h.Port, h.Proto, h.Family, until(h.Until, now), holders(h.Port), h.Where)
			rows++
		}
		for _, l := range leases {
			if !seen[l.Port] {
				fmt.Fprintf(tw, "%s\t%d/%s\t%s\t%s\t%s\t%s\n", l.Backend, l.Port, l.Proto, l.Family, until(l.Until, now),
					holders(l.Port), "(from Detour's lease; the firewall itself was not read)")
				rows++
			}
		}
	}
	if rows == 0 {
		fmt.Fprintln(a.stdout, "No firewall window is open.")
	} else {
		_ = tw.Flush()
	}
	return errors.Join(errs...)
}

// until renders a deadline for status.
func until(t, now time.Time) string {
	if t.IsZero() {
		return "(no timeout)"
	}
	return fmt.Sprintf("%s (in %s)", t.Local().Format(time.DateTime), t.Sub(now).Round(time.Second))
}

func (a *app) firewallClose(ctx context.Context, names []string) error {
	keepers, err := a.keepers(names)
	if err != nil {
		return err
	}
	var errs []error
	for _, k := range keepers {
		if err := k.CloseAll(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k.Backend().Name(), err))
			continue
		}
		fmt.Fprintf(a.stdout, "%s: every window Detour held is closed.\n", k.Backend().Name())
	}
	return errors.Join(errs...)
}

func (a *app) firewallCloseStale(ctx context.Context, names []string) error {
	p, err := a.planner(false)
	if err != nil {
		return err
	}
	if err := p.SweepStale(ctx, names); err != nil {
		return usage(err)
	}
	fmt.Fprintln(a.stdout, "Every firewall window past its timeout is closed.")
	return nil
}
