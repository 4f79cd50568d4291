package config

import (
	"github.com/detour-acme/detour/internal/suggest"

	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Settings of a firewall window, accepted by the kinds that bind or serve
// port 80/443 (standalone, side-port, webroot):
//
//	firewall         = "nftables" | "iptables" | "iptables-legacy" | "iptables-nft" | "ufw" | "firewalld" | "exec"
//	firewall_timeout = "10m"   the firewall closes the port by itself after this
//	firewall_port    = "80"    the port the CA connects to, when not the listen port
//	firewall_open    = "/usr/local/bin/open-port"   exec only
//	firewall_close   = "/usr/local/bin/close-port"  exec only
const (
	SettingFirewall        = keyFirewall
	SettingFirewallTimeout = keyFirewallTimeout
	SettingFirewallPort    = "firewall_port"
	SettingFirewallOpen    = "firewall_open"
	SettingFirewallClose   = "firewall_close"
)

// FirewallBackends are the values of the firewall setting (the backends
// of package firewall).
var FirewallBackends = []string{"nftables", "iptables", "iptables-legacy", "iptables-nft", "ufw", "firewalld", "exec"}

// Bounds of firewall_timeout: long enough for one validation, short
// enough that a port left open by a dead process does not stay open long.
const (
	DefaultFirewallTimeout = 10 * time.Minute
	minFirewallTimeout     = time.Second
	maxFirewallTimeout     = 24 * time.Hour
)

func init() {
	for _, kind := range []string{KindStandalone, KindSidePort, KindWebroot} {
		spec := kinds[kind]
		spec.settings = append(spec.settings, SettingFirewallPort, SettingFirewallOpen, SettingFirewallClose)
		prev := spec.check
		spec.check = func(p Path) []SettingProblem {
			var probs []SettingProblem
			if prev != nil {
				probs = prev(p)
			}
			return append(probs, checkFirewall(p)...)
		}
		kinds[kind] = spec
	}
}

// Firewall is a path's firewall window, decoded from its settings.
type Firewall struct {
	// Backend is the firewall setting; "" means no window.
	Backend string
	// Timeout is firewall_timeout, DefaultFirewallTimeout when unset.
	Timeout time.Duration
	// Port is the port to open: firewall_port, else the listen port of a
	// standalone path, else 80 for http-01 and 443 for tls-alpn-01.
	Port int
	// Family is "ip" when the path listens on an IPv4 address only, "ip6"
	// on an IPv6 address only, else "inet" (both).
	Family string
	// OpenCommand and CloseCommand are the exec backend's commands.
	OpenCommand, CloseCommand string
}

// FirewallOf decodes p's firewall window. The result's Backend is empty
// when p has none.
func FirewallOf(p Path) (Firewall, error) {
	fw := Firewall{Backend: p.Setting(SettingFirewall), Timeout: DefaultFirewallTimeout, Family: "inet",
		OpenCommand: p.Setting(SettingFirewallOpen), CloseCommand: p.Setting(SettingFirewallClose)}
	if fw.Backend == "" {
		return fw, nil
	}
	if probs := checkFirewall(p); len(probs) > 0 {
		return fw, fmt.Errorf("%s: %s", probs[0].Key, probs[0].Msg)
	}
	if s := p.Setting(SettingFirewallTimeout); s != "" {
		fw.Timeout, _ = time.ParseDuration(s)
	}
	challenge := ChallengeOf(p)
	switch {
	case p.Setting(SettingFirewallPort) != "":
		fw.Port, _ = strconv.Atoi(p.Setting(SettingFirewallPort))
	case p.Kind == KindStandalone && p.Listen != "":
		_, port, _ := net.SplitHostPort(p.Listen)
		fw.Port, _ = strconv.Atoi(port)
	case challenge == ChallengeTLSALPN01:
		fw.Port = 443
	default:
		fw.Port = 80
	}
	if p.Kind == KindStandalone {
		host, _, _ := net.SplitHostPort(p.Listen)
		// Go listens on both families for "" and "::", on IPv4 only for
		// "0.0.0.0".
		if a, err := netip.ParseAddr(host); err == nil {
			switch {
			case a.Unmap().Is4():
				fw.Family = "ip"
			case !a.IsUnspecified():
				fw.Family = "ip6"
			}
		}
	}
	return fw, nil
}

// checkFirewall validates the firewall settings of p.
func checkFirewall(p Path) []SettingProblem {
	var probs []SettingProblem
	add := func(key, format string, args ...any) {
		probs = append(probs, SettingProblem{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	backend := p.Setting(SettingFirewall)
	if backend == "" {
		for _, k := range []string{SettingFirewallTimeout, SettingFirewallPort, SettingFirewallOpen, SettingFirewallClose} {
			if p.Setting(k) != "" {
				add(k, "%s has no effect without firewall; set firewall = %s, or remove %s", k, suggest.QuoteList(FirewallBackends), k)
			}
		}
		return probs
	}
	if !slices.Contains(FirewallBackends, backend) {
		add(SettingFirewall, "%q is not a firewall Detour drives; use one of %s", backend, suggest.QuoteList(FirewallBackends))
	}
	if s := p.Setting(SettingFirewallTimeout); s != "" {
		d, err := time.ParseDuration(s)
		switch {
		case err != nil:
			add(SettingFirewallTimeout, "%q is not a duration; write e.g. \"10m\" or \"90s\"", s)
		case d < minFirewallTimeout || d > maxFirewallTimeout:
			add(SettingFirewallTimeout, "%s is out of range: use from %v to %v (the window must outlast one validation; default %v)",
				s, minFirewallTimeout, maxFirewallTimeout, DefaultFirewallTimeout)
		}
	}
	if s := p.Setting(SettingFirewallPort); s != "" {
		if n, err := strconv.Atoi(s); err != nil || n < 1 || n > 65535 {
			add(SettingFirewallPort, "%q must be a port number from 1 to 65535 (public CAs connect to 80 for http-01, 443 for tls-alpn-01)", s)
		}
	} else if p.Kind == KindStandalone && strings.HasPrefix(p.Listen, "unix:") {
		add(SettingFirewallPort, "a standalone path on a unix socket has no port to open: set firewall_port (80 for http-01, 443 for tls-alpn-01)")
	}
	for _, k := range []string{SettingFirewallOpen, SettingFirewallClose} {
		v := p.Setting(k)
		switch {
		case backend == "exec" && v == "":
			add(k, "firewall = \"exec\" needs %s: the absolute path of your command (it gets DETOUR_FIREWALL_PORT, _FAMILY, _TIMEOUT...)", k)
		case backend == "exec" && !filepath.IsAbs(v):
			add(k, "%q must be an absolute path", v)
		case backend != "exec" && v != "":
			add(k, "%s is only used with firewall = \"exec\"; remove it or set firewall = \"exec\"", k)
		}
	}
	return probs
}
