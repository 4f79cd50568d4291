package hostcheck

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/doctor/check"
	"github.com/detour-acme/detour/internal/firewall"
)

// checkFirewall evaluates the local rulesets for inbound TCP to each
// port from an arbitrary Internet address: "firewall.inbound".
func checkFirewall(ctx context.Context, opts Options) ([]FirewallPort, check.Result) {
	r := check.New("firewall.inbound", "", check.OK, "")
	var out []FirewallPort
	var dropped, unknown []string
	var setting string
	var cannot []string
	for _, port := range opts.Ports {
		v, err := firewall.Inbound(ctx, port, opts.Firewall)
		if err != nil {
			r.Status = check.Skipped
			if errors.Is(err, firewall.ErrPermission) {
				r.Summary = "the firewall rulesets could not be read: run detour doctor as root"
			} else {
				r.Status = check.Warning
				r.Summary = "the firewall rulesets could not be read"
				r.Fix = "make the rulesets readable (the error names the tool that failed), or check by hand that inbound TCP " +
					joinInts(opts.Ports) + " is accepted"
			}
			r.Add("%v", err)
			return out, r
		}
		fp := FirewallPort{Port: port, V4: simpleAction(v.IPv4.Action), V6: simpleAction(v.IPv6.Action), Verdict: v}
		fp.Backend, fp.Rule = v.IPv4.Backend, v.IPv4.Rule
		if fp.V4 == FirewallAccept && fp.V6 != FirewallAccept || v.IPv4.Backend == "" && v.IPv6.Backend != "" {
			fp.Backend, fp.Rule = v.IPv6.Backend, v.IPv6.Rule
		}
		if v.IPv4.Rule != v.IPv6.Rule && v.IPv4.Rule != "" && v.IPv6.Rule != "" {
			fp.Rule = "IPv4: " + v.IPv4.Rule + "; IPv6: " + v.IPv6.Rule
		}
		out = append(out, fp)
		r.Add("%s", v.String())
		for _, fv := range []firewall.FamilyVerdict{v.IPv4, v.IPv6} {
			if fv.Window {
				r.Add("port %d is open now only by one of Detour's firewall windows", port)
			}
		}
		switch {
		case fp.V4 == FirewallDrop || fp.V6 == FirewallDrop:
			dropped = append(dropped, fmt.Sprintf("%d (%s)", port, families(fp, FirewallDrop)))
			out[len(out)-1].Window, out[len(out)-1].NoWindow = windowCheck(ctx, opts, windowSetting(fp.Backend), port, fp)
			if w := out[len(out)-1]; w.Window == "" {
				r.Add("port %d: Detour cannot open a window in %s here: %s", port, windowSetting(fp.Backend), w.NoWindow)
				cannot = append(cannot, fmt.Sprintf("port %d: %s", port, w.NoWindow))
			} else if setting == "" {
				setting = w.Window
			}
		case fp.V4 == FirewallUnknown || fp.V6 == FirewallUnknown:
			unknown = append(unknown, fmt.Sprintf("%d (%s)", port, families(fp, FirewallUnknown)))
		}
	}
	switch {
	case len(dropped) > 0 && setting == "":
		r.Status = check.Problem
		r.Summary = "the local firewall drops inbound TCP " + strings.Join(dropped, ", ") + ", and Detour cannot open a window there"
		r.Fix = "accept the port yourself in the chain named above (or make it an input chain Detour can add to), or use a DNS path: " +
			strings.Join(cannot, "; ")
	case len(dropped) > 0:
		r.Status = check.Problem
		r.Summary = "the local firewall drops inbound TCP " + strings.Join(dropped, ", ") + ": a firewall window is needed"
		r.Fix = fmt.Sprintf("set firewall = %q on the path: Detour then opens the port only while the CA validates, "+
			"and the kernel closes it by itself after a timeout", setting)
		for _, fp := range out {
			if (fp.V4 == FirewallDrop || fp.V6 == FirewallDrop) && (fp.Verdict.IPv4.BySource || fp.Verdict.IPv6.BySource) {
				r.Fix += fmt.Sprintf(" (port %d: a rule accepts some source addresses; a CA reaching the host through one of them gets through)", fp.Port)
			}
		}
	case len(unknown) > 0:
		r.Status = check.Warning
		r.Summary = "the local firewall's verdict on inbound TCP " + strings.Join(unknown, ", ") + " could not be decided"
		r.Fix = "check the rule named in the evidence by hand; if it drops the CA's connections, set firewall = " +
			fmt.Sprintf("%q", windowSetting(out[0].Backend)) + " on the path"
	default:
		r.Summary = "the local firewall accepts inbound TCP " + joinInts(opts.Ports)
	}
	return out, r
}

// simpleAction maps a firewall action to accept/drop/unknown (a reject
// does not get through either).
func simpleAction(a firewall.Action) string {
	switch a {
	case firewall.Accept:
		return FirewallAccept
	case firewall.Drop, firewall.Reject:
		return FirewallDrop
	}
	return FirewallUnknown
}

func families(fp FirewallPort, action string) string {
	switch {
	case fp.V4 == action && fp.V6 == action:
		return "IPv4 and IPv6"
	case fp.V4 == action:
		return "IPv4"
	}
	return "IPv6"
}

// windowSetting is the `firewall` setting of the backend that decided.
func windowSetting(backend string) string {
	switch {
	case backend == firewall.NameUfw:
		return firewall.NameUfw
	case backend == firewall.NameFirewalld:
		return firewall.NameFirewalld
	case strings.Contains(backend, "tables-"): // iptables-nft, ip6tables-legacy...
		return firewall.NameIptables
	}
	return firewall.NameNftables
}

// windowCheck asks the backend named setting whether it could open a
// window on port now (its Check changes nothing): a prerouting chain that
// drops by policy, a table a daemon owns or missing permissions make it
// refuse, and then no window path can work whatever the verdict says.
func windowCheck(ctx context.Context, opts Options, setting string, port int, fp FirewallPort) (window, why string) {
	fam := firewall.Inet
	switch {
	case fp.V4 == FirewallDrop && fp.V6 != FirewallDrop:
		fam = firewall.IPv4
	case fp.V6 == FirewallDrop && fp.V4 != FirewallDrop:
		fam = firewall.IPv6
	}
	b, err := firewall.New(setting, firewall.Options{Runner: opts.Firewall.Runner, NetNS: opts.Firewall.NetNS, Zone: opts.Firewall.Zone})
	if err != nil {
		return "", err.Error()
	}
	if err := b.Check(ctx, firewall.Window{Port: port, Family: fam, Timeout: 10 * time.Minute, Identifier: "detour doctor"}); err != nil {
		return "", strings.Join(strings.Fields(err.Error()), " ")
	}
	return setting, ""
}
