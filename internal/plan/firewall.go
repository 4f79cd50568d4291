package plan

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/detour-acme/detour/internal/firewall"
	"github.com/detour-acme/detour/internal/solve/kinds"
)

// windows returns the firewalls the configuration's paths open windows
// in, each with the settings of the first path (by name) using it: one
// per host firewall, one per cloud firewall and target (two paths may
// name two security groups).
func (p *Planner) windows() (map[string]windowUse, error) {
	out := map[string]windowUse{}
	for _, name := range slices.Sorted(maps.Keys(p.cfg.Paths)) {
		cp := p.cfg.Paths[name]
		spec, ok := kinds.Lookup(cp.Kind)
		if !ok || spec.Window == nil {
			continue
		}
		fw, err := firewall.WindowOf(cp.SolveSettings(), *spec.Window)
		if err != nil {
			return nil, fmt.Errorf("path %s: %w", name, err)
		}
		for _, b := range fw.Backends {
			key := b
			if firewall.IsCloud(b) {
				key += " id:" + fw.Cloud.FirewallID + " instance:" + fw.Cloud.Instance
			}
			if _, ok := out[key]; !ok {
				out[key] = windowUse{backend: b, fw: fw}
			}
		}
	}
	return out, nil
}

type windowUse struct {
	backend string
	fw      firewall.WindowConfig
}

// Keepers returns a keeper for each firewall named, or else each firewall
// the configuration's paths use.
func (p *Planner) Keepers(names []string) ([]*firewall.Keeper, error) {
	uses, err := p.windows()
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		for _, u := range uses {
			names = append(names, u.backend)
		}
	}
	if len(names) == 0 {
		return nil, inputErr(FieldFirewall, fmt.Errorf("no path of the config file uses a firewall window; name the firewall (%s)", strings.Join(firewall.Names(), ", ")))
	}
	var out []*firewall.Keeper
	for _, n := range slices.Compact(slices.Sorted(slices.Values(names))) {
		var found []windowUse
		for _, k := range slices.Sorted(maps.Keys(uses)) {
			if uses[k].backend == n {
				found = append(found, uses[k])
			}
		}
		if len(found) == 0 {
			switch {
			case n == firewall.NameExec:
				return nil, inputErr(FieldFirewall, errors.New(`exec: the commands come from a path of the config file with firewall = "exec"`))
			case firewall.IsCloud(n):
				return nil, inputErr(FieldFirewall, fmt.Errorf("%s: the firewall and its credentials come from a path of the config file with firewall = %q", n, n))
			}
			found = []windowUse{{backend: n}}
		}
		for _, u := range found {
			u.fw.Cloud.Getenv = p.opts.Getenv
			k, err := firewall.KeeperFor(u.backend, u.fw, p.Store, p.log)
			if err != nil {
				return nil, inputErr(FieldFirewall, err)
			}
			out = append(out, k)
		}
	}
	return out, nil
}

// SweepWindows removes the windows killed runs left open past their
// timeout in every cloud firewall the configuration's paths use: the
// agent and `detour renew` do it at start. A cloud firewall's rules do
// not expire by themselves, so this (and `detour firewall close --stale`)
// is what removes them; a host firewall closes its windows by itself
// (ufw's leftovers go when a path next uses it). Failures are logged: a
// firewall that cannot be reached now must not stop the renewals that do
// not need it.
func (p *Planner) SweepWindows(ctx context.Context) {
	uses, err := p.windows()
	if err != nil {
		p.log.Warn("not removing stale cloud firewall rules", "error", err)
		return
	}
	var clouds []string
	for _, u := range uses {
		if firewall.IsCloud(u.backend) {
			clouds = append(clouds, u.backend)
		}
	}
	if len(clouds) == 0 {
		return
	}
	if err := p.SweepStale(ctx, clouds); err != nil {
		p.log.Warn("removing cloud firewall rules left open by killed runs", "error", err)
	}
}

// SweepStale removes, in each firewall named (else each the paths use),
// the windows past their timeout, when no live Detour run holds one. A
// firewall that cannot be reached does not stop the others.
func (p *Planner) SweepStale(ctx context.Context, names []string) error {
	uses, err := p.windows()
	if err != nil {
		return err
	}
	if len(names) == 0 {
		for _, u := range uses {
			names = append(names, u.backend)
		}
	}
	if len(names) == 0 {
		_, err := p.Keepers(nil) // says that no path uses a window
		return err
	}
	var errs []error
	for _, n := range slices.Compact(slices.Sorted(slices.Values(names))) {
		ks, err := p.Keepers([]string{n})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n, err))
			continue
		}
		for _, k := range ks {
			if err := k.SweepStale(ctx); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", k.Backend().Name(), err))
			}
		}
	}
	return errors.Join(errs...)
}
