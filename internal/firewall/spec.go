package firewall

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/suggest"
)

// Settings of a firewall window, accepted by every path kind whose spec has
// a Window (the kinds that answer on port 80/443 of this host):
//
//	firewall         = "nftables" | "iptables" | ... | "exec"   (see Names)
//	firewall_timeout = "10m"   the firewall closes the port by itself after this
//	firewall_port    = "80"    the port the CA connects to, when not the listen port
//	firewall_open    = "/usr/local/bin/open-port"   exec only
//	firewall_close   = "/usr/local/bin/close-port"  exec only
const (
	KeyFirewall = "firewall"
	KeyTimeout  = "firewall_timeout"
	KeyPort     = "firewall_port"
	KeyOpen     = "firewall_open"
	KeyClose    = "firewall_close"
)

// Bounds of firewall_timeout: long enough for one validation, short enough
// that a port left open by a dead process does not stay open long.
const (
	minTimeout = time.Second
	maxTimeout = 24 * time.Hour
)

// WindowSettings returns the settings a window adds to a path kind.
func WindowSettings() []solve.Setting {
	return []solve.Setting{
		{Key: KeyFirewall, Type: solve.TypeEnum, Values: Names(), Example: NameNftables,
			Doc: "open the validation port in this firewall only while the CA validates"},
		{Key: KeyTimeout, Type: solve.TypeDuration, Example: "10m",
			Doc: "the firewall closes the port by itself after this, even if Detour dies (default " + strings.TrimSuffix(DefaultTimeout.String(), "0s") + ")"},
		{Key: KeyPort, Type: solve.TypePort,
			Doc: "the port the CA connects to (default: the listen port of a standalone path, else 80 for http-01, 443 for tls-alpn-01)"},
		{Key: KeyOpen, Type: solve.TypePath, Doc: `firewall = "exec": the command that opens the port (gets DETOUR_FIREWALL_PORT, _FAMILY, _TIMEOUT...)`},
		{Key: KeyClose, Type: solve.TypePath, Doc: `firewall = "exec": the command that closes it`},
	}
}

// WindowConfig is a path's firewall window, from its settings.
type WindowConfig struct {
	// Backend is the firewall setting; "" means no window.
	Backend string
	// Timeout is firewall_timeout, DefaultTimeout when unset.
	Timeout time.Duration
	// Port is the port to open: firewall_port, else the port of the
	// window's listen setting (a kind that binds the validation port
	// itself), else 80 for http-01 and 443 for tls-alpn-01.
	Port int
	// Family is "ip" when the path listens on an IPv4 address only, "ip6"
	// on an IPv6 address only, else "inet" (both).
	Family string
	// OpenCommand and CloseCommand are the exec backend's commands.
	OpenCommand, CloseCommand string
}

// WindowOf decodes the window of a path with settings s, of a kind whose
// spec has window w. The result's Backend is empty when s asks for none.
func WindowOf(s solve.Settings, w solve.Window) (WindowConfig, error) {
	fw := WindowConfig{Backend: s.Get(KeyFirewall), Timeout: DefaultTimeout, Family: "inet",
		OpenCommand: s.Get(KeyOpen), CloseCommand: s.Get(KeyClose)}
	if fw.Backend == "" {
		return fw, nil
	}
	if probs := CheckWindow(s, w); len(probs) > 0 {
		return fw, fmt.Errorf("%s: %s", probs[0].Key, probs[0].Msg)
	}
	if d := s.Duration(KeyTimeout); d > 0 {
		fw.Timeout = d
	}
	listen := ""
	if w.Listen != "" {
		listen = s.Get(w.Listen)
	}
	switch {
	case s.Get(KeyPort) != "":
		fw.Port, _ = strconv.Atoi(s.Get(KeyPort))
	case listen != "":
		_, port, _ := net.SplitHostPort(listen)
		fw.Port, _ = strconv.Atoi(port)
	case s.Challenge() == solve.TLSALPN01:
		fw.Port = 443
	default:
		fw.Port = 80
	}
	if listen != "" {
		host, _, _ := net.SplitHostPort(listen)
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

// CheckWindow validates the window settings of s, a path of a kind whose
// spec has window w.
func CheckWindow(s solve.Settings, w solve.Window) []solve.Problem {
	var probs []solve.Problem
	add := func(key, format string, args ...any) {
		probs = append(probs, solve.Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	backend := s.Get(KeyFirewall)
	if backend == "" {
		for _, k := range []string{KeyTimeout, KeyPort, KeyOpen, KeyClose} {
			if s.Get(k) != "" {
				add(k, "%s has no effect without firewall; set firewall = %s, or remove %s", k, suggest.QuoteList(Names()), k)
			}
		}
		return probs
	}
	if !slices.Contains(Names(), backend) {
		add(KeyFirewall, "%q is not a firewall Detour drives; use one of %s", backend, suggest.QuoteList(Names()))
	}
	if v := s.Get(KeyTimeout); v != "" {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			add(KeyTimeout, "%q is not a duration; write e.g. \"10m\" or \"90s\"", v)
		case d < minTimeout || d > maxTimeout:
			add(KeyTimeout, "%s is out of range: use from %v to %v (the window must outlast one validation; default %v)",
				v, minTimeout, maxTimeout, DefaultTimeout)
		}
	}
	if v := s.Get(KeyPort); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 65535 {
			add(KeyPort, "%q must be a port number from 1 to 65535 (public CAs connect to 80 for http-01, 443 for tls-alpn-01)", v)
		}
	} else if w.Listen != "" && strings.HasPrefix(s.Get(w.Listen), "unix:") {
		add(KeyPort, "a %s path on a unix socket has no port to open: set firewall_port (80 for http-01, 443 for tls-alpn-01)", s.Kind)
	}
	for _, k := range []string{KeyOpen, KeyClose} {
		v := s.Get(k)
		switch {
		case backend == NameExec && v == "":
			add(k, "firewall = \"exec\" needs %s: the absolute path of your command (it gets DETOUR_FIREWALL_PORT, _FAMILY, _TIMEOUT...)", k)
		case backend == NameExec && !filepath.IsAbs(v):
			add(k, "%q must be an absolute path", v)
		case backend != NameExec && v != "":
			add(k, "%s is only used with firewall = \"exec\"; remove it or set firewall = \"exec\"", k)
		}
	}
	return probs
}

// WithWindow returns sp, a kind that answers on port 80/443 (sp.Window set),
// with the window settings added: their validation joins sp.Check and its
// Build wraps the solver in the window a path asks for. Other specs are
// returned as they are.
func WithWindow(sp solve.Spec) solve.Spec {
	if sp.Window == nil {
		return sp
	}
	w := *sp.Window
	own := slices.Clone(sp.Settings)
	for _, s := range WindowSettings() {
		// The window checks its settings together (CheckWindow), with the
		// messages that name the other settings involved.
		s.Check = func(string) error { return nil }
		own = append(own, s)
	}
	sp.Settings = own
	check, build := sp.Check, sp.Build
	sp.Check = func(s solve.Settings) []solve.Problem {
		var probs []solve.Problem
		if check != nil {
			probs = check(s)
		}
		return append(probs, CheckWindow(s, w)...)
	}
	sp.Build = func(ctx context.Context, s solve.Settings, env solve.Env) (solve.Solver, error) {
		inner, err := build(ctx, s, env)
		if err != nil || s.Get(KeyFirewall) == "" {
			return inner, err
		}
		out, err := wrapPath(inner, s, w, env)
		if err != nil {
			if c, ok := inner.(interface{ Close() error }); ok {
				_ = c.Close()
			}
			return nil, err
		}
		return out, nil
	}
	return sp
}

// wrapPath wraps inner in the window s asks for.
func wrapPath(inner solve.Solver, s solve.Settings, w solve.Window, env solve.Env) (solve.Solver, error) {
	fw, err := WindowOf(s, w)
	if err != nil {
		return nil, err
	}
	if env.Store == nil {
		return nil, fmt.Errorf("a firewall window keeps its leases in the state directory, and none is open here")
	}
	k, err := KeeperFor(fw, env.Store, env.Logger)
	if err != nil {
		return nil, err
	}
	family, err := ParseFamily(fw.Family)
	if err != nil {
		return nil, err
	}
	opts := SolverOptions{Logger: env.Logger, Keeper: k, Port: fw.Port, Family: family, Timeout: fw.Timeout}
	if env.WindowOpened != nil {
		opts.AfterOpen = func(ctx context.Context, _ Window) error { return env.WindowOpened(ctx) }
	}
	return Wrap(inner, opts)
}

// KeeperFor returns the keeper of window fw's backend, keeping its leases
// in st.
func KeeperFor(fw WindowConfig, st solve.StateStore, log *slog.Logger) (*Keeper, error) {
	b, err := New(fw.Backend, Options{Logger: log, OpenCommand: fw.OpenCommand, CloseCommand: fw.CloseCommand})
	if err != nil {
		return nil, err
	}
	return NewKeeper(KeeperOptions{Backend: b, Store: st, Locker: st, Logger: log})
}
