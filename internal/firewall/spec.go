package firewall

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/firewall/cloud"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/suggest"
)

// Settings of a firewall window, accepted by every path kind whose spec has
// a Window (the kinds that answer on port 80/443 of this host):
//
//	firewall         = "nftables" | "iptables" | ... | "exec" | "digitalocean" | "aws-sg" | "hetzner"
//	                   (see Names; one host and one cloud firewall may be listed: "aws-sg, nftables")
//	firewall_timeout = "10m"   the firewall closes the port by itself after this
//	firewall_port    = "80"    the port the CA connects to, when not the listen port
//	firewall_open    = "/usr/local/bin/open-port"   exec only
//	firewall_close   = "/usr/local/bin/close-port"  exec only
//
// and, for a cloud firewall:
//
//	firewall_id          = "..."   the firewall (security group) to change
//	firewall_instance    = "..."   or this machine's ID at the provider, to find it
//	firewall_credentials = "/etc/detour/cloud-token"   token file / AWS credentials file
//	firewall_profile     = "detour"      AWS only
//	firewall_region      = "eu-west-1"   AWS only
//	firewall_endpoint    = "https://..." the provider's API URL, when not the public one
const (
	KeyFirewall    = "firewall"
	KeyTimeout     = "firewall_timeout"
	KeyPort        = "firewall_port"
	KeyOpen        = "firewall_open"
	KeyClose       = "firewall_close"
	KeyID          = "firewall_id"
	KeyInstance    = "firewall_instance"
	KeyCredentials = "firewall_credentials"
	KeyProfile     = "firewall_profile"
	KeyRegion      = "firewall_region"
	KeyEndpoint    = "firewall_endpoint"
)

// cloudKeys are the settings only a cloud firewall uses.
var cloudKeys = []string{KeyID, KeyInstance, KeyCredentials, KeyProfile, KeyRegion, KeyEndpoint}

// Bounds of firewall_timeout: long enough for one validation, short enough
// that a port left open by a dead process does not stay open long.
const (
	minTimeout = time.Second
	maxTimeout = 24 * time.Hour
)

// WindowSettings returns the settings a window adds to a path kind.
func WindowSettings() []solve.Setting {
	return []solve.Setting{
		{Key: KeyFirewall, Type: solve.TypeList, Example: NameNftables,
			Doc: "open the validation port in this firewall only while the CA validates: one of " + strings.Join(Names(), ", ") +
				"; a cloud firewall and a host one may be listed together (\"aws-sg, nftables\")"},
		{Key: KeyTimeout, Type: solve.TypeDuration, Example: "10m",
			Doc: "the firewall closes the port by itself after this, even if Detour dies (default " + strings.TrimSuffix(DefaultTimeout.String(), "0s") + ")"},
		{Key: KeyPort, Type: solve.TypePort,
			Doc: "the port the CA connects to (default: the listen port of a standalone path, else 80 for http-01, 443 for tls-alpn-01)"},
		{Key: KeyOpen, Type: solve.TypePath, Doc: `firewall = "exec": the command that opens the port (gets DETOUR_FIREWALL_PORT, _FAMILY, _TIMEOUT...)`},
		{Key: KeyClose, Type: solve.TypePath, Doc: `firewall = "exec": the command that closes it`},
		{Key: KeyID, Type: solve.TypeString, Doc: "cloud firewall: the firewall to change (DigitalOcean firewall ID, AWS security group sg-..., Hetzner firewall ID)"},
		{Key: KeyInstance, Type: solve.TypeString, Doc: "cloud firewall, instead of firewall_id: this machine's ID (droplet ID, EC2 instance i-..., Hetzner server ID); the firewall applied to it is used"},
		{Key: KeyCredentials, Type: solve.TypePath,
			Doc: "cloud firewall: a file with the API token (DigitalOcean, Hetzner) or an AWS shared credentials file (default: DIGITALOCEAN_TOKEN, HCLOUD_TOKEN, or the AWS credential chain)"},
		{Key: KeyProfile, Type: solve.TypeString, Doc: `firewall = "aws-sg": the AWS profile, in firewall_credentials or else ~/.aws (default "default")`},
		{Key: KeyRegion, Type: solve.TypeString, Doc: `firewall = "aws-sg": the security group's region (default: AWS_REGION or the AWS config file)`},
		{Key: KeyEndpoint, Type: solve.TypeURL, Doc: "cloud firewall: the provider's API base URL, when not the public one (a VPC endpoint, a proxy)"},
	}
}

// WindowConfig is a path's firewall window, from its settings.
type WindowConfig struct {
	// Backends are the firewall setting's backends, a cloud one first;
	// none means no window.
	Backends []string
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
	// Cloud is a cloud backend's settings (Logger, Getenv and HTTPClient
	// are the caller's to set).
	Cloud cloud.Config
}

// Host returns the host firewall of the window, "" when none.
func (fw WindowConfig) Host() string {
	for _, b := range fw.Backends {
		if !IsCloud(b) {
			return b
		}
	}
	return ""
}

// WindowOf decodes the window of a path with settings s, of a kind whose
// spec has window w. The result's Backend is empty when s asks for none.
func WindowOf(s solve.Settings, w solve.Window) (WindowConfig, error) {
	fw := WindowConfig{Backends: backendsOf(s), Timeout: DefaultTimeout, Family: "inet",
		OpenCommand: s.Get(KeyOpen), CloseCommand: s.Get(KeyClose),
		Cloud: cloud.Config{FirewallID: s.Get(KeyID), Instance: s.Get(KeyInstance), Credentials: s.Get(KeyCredentials),
			Profile: s.Get(KeyProfile), Region: s.Get(KeyRegion), Endpoint: s.Get(KeyEndpoint)}}
	if len(fw.Backends) == 0 {
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
	backends := backendsOf(s)
	if len(backends) == 0 {
		for _, k := range append([]string{KeyTimeout, KeyPort, KeyOpen, KeyClose}, cloudKeys...) {
			if s.Get(k) != "" {
				add(k, "%s has no effect without firewall; set firewall = %s, or remove %s", k, suggest.QuoteList(Names()), k)
			}
		}
		return probs
	}
	var host, clouds []string
	for _, b := range backends {
		switch {
		case !slices.Contains(Names(), b):
			add(KeyFirewall, "%q is not a firewall Detour drives%s; use one of %s", b, suggest.DidYouMean(b, Names()), suggest.QuoteList(Names()))
		case IsCloud(b):
			clouds = append(clouds, b)
		default:
			host = append(host, b)
		}
	}
	if len(host) > 1 || len(clouds) > 1 {
		add(KeyFirewall, "%q lists %d host and %d cloud firewalls: list at most one of each (e.g. \"aws-sg, nftables\")",
			s.Get(KeyFirewall), len(host), len(clouds))
	}
	backend := ""
	if len(host) > 0 {
		backend = host[0]
	}
	probs = append(probs, checkCloud(s, clouds)...)
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
		if err != nil || len(backendsOf(s)) == 0 {
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
	family, err := ParseFamily(fw.Family)
	if err != nil {
		return nil, err
	}
	fw.Cloud.Getenv = env.Getenv
	// The host firewall wraps the path, the cloud one wraps both: the
	// cloud rule opens first and closes last, and the test hook runs once
	// every window is open.
	out := inner
	for i, b := range slices.Backward(fw.Backends) {
		k, err := KeeperFor(b, fw, env.Store, env.Logger)
		if err != nil {
			return nil, err
		}
		opts := SolverOptions{Logger: env.Logger, Keeper: k, Port: fw.Port, Family: family, Timeout: fw.Timeout}
		if env.WindowOpened != nil && i == len(fw.Backends)-1 {
			opts.AfterOpen = func(ctx context.Context, _ Window) error { return env.WindowOpened(ctx) }
		}
		if out, err = Wrap(out, opts); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// KeeperFor returns the keeper of backend, one of window fw's, keeping
// its leases (and a cloud firewall's journal) in st.
func KeeperFor(backend string, fw WindowConfig, st solve.StateStore, log *slog.Logger) (*Keeper, error) {
	b, err := New(backend, Options{Logger: log, OpenCommand: fw.OpenCommand, CloseCommand: fw.CloseCommand,
		Cloud: fw.Cloud, Store: st})
	if err != nil {
		return nil, err
	}
	return NewKeeper(KeeperOptions{Backend: b, Store: st, Locker: st, Logger: log})
}

// backendsOf returns the firewalls s lists, a cloud one first.
func backendsOf(s solve.Settings) []string {
	list := s.List(KeyFirewall)
	slices.SortStableFunc(list, func(a, b string) int {
		switch {
		case IsCloud(a) && !IsCloud(b):
			return -1
		case !IsCloud(a) && IsCloud(b):
			return 1
		}
		return 0
	})
	return list
}

// HasHostWindow reports whether s opens a window in this host's own
// firewall (not only a cloud one).
func HasHostWindow(s solve.Settings) bool {
	for _, b := range backendsOf(s) {
		if !IsCloud(b) {
			return true
		}
	}
	return false
}

// checkCloud validates the cloud settings of s, whose firewall setting
// lists clouds.
func checkCloud(s solve.Settings, clouds []string) []solve.Problem {
	var probs []solve.Problem
	add := func(key, format string, args ...any) {
		probs = append(probs, solve.Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if len(clouds) == 0 {
		for _, k := range cloudKeys {
			if s.Get(k) != "" {
				add(k, "%s is only used with a cloud firewall (%s); remove it or add one to firewall", k, suggest.QuoteList(CloudNames()))
			}
		}
		return probs
	}
	c := clouds[0]
	id, inst := s.Get(KeyID), s.Get(KeyInstance)
	switch {
	case id == "" && inst == "":
		add(KeyID, "firewall = %q needs the firewall to change: set firewall_id (%s), or firewall_instance (%s) to find the one applied to this machine",
			c, cloudIDDoc[c], cloudInstanceDoc[c])
	case id != "" && inst != "":
		add(KeyInstance, "set firewall_id or firewall_instance, not both (firewall_id names the firewall directly)")
	}
	if c != NameAWSSG {
		for _, k := range []string{KeyProfile, KeyRegion} {
			if s.Get(k) != "" {
				add(k, "%s is only used with firewall = %q; remove it", k, NameAWSSG)
			}
		}
	}
	if v := s.Get(KeyCredentials); v != "" && !filepath.IsAbs(v) {
		add(KeyCredentials, "%q must be an absolute path", v)
	}
	if v := s.Get(KeyEndpoint); v != "" {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			add(KeyEndpoint, "%q is not an http(s) URL; write e.g. \"https://api.example.net\", or remove it to use the provider's", v)
		}
	}
	return probs
}
