package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/firewall"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
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

// firewallBackend builds the backend a firewall setting names.
func firewallBackend(fw config.Firewall, log *slog.Logger) (firewall.Backend, error) {
	return firewall.New(fw.Backend, firewall.Options{Logger: log, OpenCommand: fw.OpenCommand, CloseCommand: fw.CloseCommand})
}

// firewalled wraps inner, the solver of path p, in p's firewall window.
func (ps *pathSet) firewalled(p config.Path, inner solve.Solver, log *slog.Logger) (solve.Solver, error) {
	closeInner := func() {
		if c, ok := inner.(interface{ Close() error }); ok {
			_ = c.Close()
		}
	}
	fw, err := config.FirewallOf(p)
	if err != nil {
		closeInner()
		return nil, err
	}
	locker, ok := ps.store.(store.Locker)
	if !ok {
		closeInner()
		return nil, errors.New("a firewall window needs a state directory that supports locking")
	}
	b, err := firewallBackend(fw, log)
	if err != nil {
		closeInner()
		return nil, err
	}
	k, err := firewall.NewKeeper(firewall.KeeperOptions{Backend: b, Store: ps.store, Locker: locker, Logger: log})
	if err != nil {
		closeInner()
		return nil, err
	}
	family, err := firewall.ParseFamily(fw.Family)
	if err != nil {
		closeInner()
		return nil, err
	}
	opts := firewall.SolverOptions{Logger: log, Keeper: k, Port: fw.Port, Family: family, Timeout: fw.Timeout}
	if os.Getenv(envHoldFirewall) == "1" {
		opts.AfterOpen = func(ctx context.Context, w firewall.Window) error {
			fmt.Fprintln(os.Stderr, holdFirewallLine)
			<-ctx.Done()
			return ctx.Err()
		}
	}
	s, err := firewall.Wrap(inner, opts)
	if err != nil {
		closeInner()
		return nil, err
	}
	return s, nil
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
	closeCmd := &cobra.Command{
		Use:   "close",
		Short: "Close every firewall window Detour holds open",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.firewallClose(cmd.Context(), backends)
		},
	}
	cmd.AddCommand(status, closeCmd)
	return cmd
}

// keepers returns a Keeper for each firewall named, or used by the
// config's paths.
func (a *app) keepers(names []string) ([]*firewall.Keeper, error) {
	cfg, err := a.config(false)
	if err != nil {
		return nil, err
	}
	st, err := a.store(cfg)
	if err != nil {
		return nil, err
	}
	byName := map[string]config.Firewall{}
	for _, name := range sortedKeys(cfg.Paths) {
		fw, err := config.FirewallOf(cfg.Paths[name])
		if err != nil {
			return nil, fmt.Errorf("path %s: %w", name, err)
		}
		if fw.Backend != "" {
			byName[fw.Backend] = fw
		}
	}
	if len(names) == 0 {
		names = sortedKeys(byName)
	}
	if len(names) == 0 {
		return nil, usagef("no path of the config file uses a firewall window; name the firewall with --%s (%s)",
			flagFirewall, strings.Join(firewall.Names(), ", "))
	}
	var out []*firewall.Keeper
	for _, n := range slices.Compact(slices.Sorted(slices.Values(names))) {
		fw, ok := byName[n]
		if !ok {
			fw = config.Firewall{Backend: n}
		}
		if n == firewall.NameExec && !ok {
			return nil, usagef("--%s exec: the commands come from a path of the config file with firewall = \"exec\"", flagFirewall)
		}
		b, err := firewallBackend(fw, a.log)
		if err != nil {
			return nil, usagef("--%s: %v", flagFirewall, err)
		}
		k, err := firewall.NewKeeper(firewall.KeeperOptions{Backend: b, Store: st, Locker: st, Logger: a.log})
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
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
