package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/firewall/cloud"
	"github.com/detour-acme/detour/internal/store"
)

// Family is the set of IP versions a window is open for.
type Family string

// Address families, named as nftables names table families.
const (
	IPv4 Family = "ip"   // IPv4 only
	IPv6 Family = "ip6"  // IPv6 only
	Inet Family = "inet" // IPv4 and IPv6
)

// ParseFamily parses "ip", "ip6" or "inet" (also "ipv4", "ipv6", "both").
func ParseFamily(s string) (Family, error) {
	switch strings.ToLower(s) {
	case "ip", "ipv4", "4":
		return IPv4, nil
	case "ip6", "ipv6", "6":
		return IPv6, nil
	case "inet", "both", "":
		return Inet, nil
	}
	return "", fmt.Errorf("unknown address family %q: use ip, ip6 or inet", s)
}

// familyOf builds a Family from its two halves; "" when neither.
func familyOf(v4, v6 bool) Family {
	switch {
	case v4 && v6:
		return Inet
	case v4:
		return IPv4
	case v6:
		return IPv6
	}
	return ""
}

// Has4 reports whether f includes IPv4.
func (f Family) Has4() bool { return f == IPv4 || f == Inet }

// Has6 reports whether f includes IPv6.
func (f Family) Has6() bool { return f == IPv6 || f == Inet }

// Union returns the families in f or g.
func (f Family) Union(g Family) Family { return familyOf(f.Has4() || g.Has4(), f.Has6() || g.Has6()) }

// Intersect returns the families in both f and g ("" when none).
func (f Family) Intersect(g Family) Family {
	return familyOf(f.Has4() && g.Has4(), f.Has6() && g.Has6())
}

// Minus returns the families in f and not in g ("" when none).
func (f Family) Minus(g Family) Family { return familyOf(f.Has4() && !g.Has4(), f.Has6() && !g.Has6()) }

// Split returns the single families f consists of: IPv4, IPv6 or both.
func (f Family) Split() []Family {
	var out []Family
	if f.Has4() {
		out = append(out, IPv4)
	}
	if f.Has6() {
		out = append(out, IPv6)
	}
	return out
}

// FamilyFor returns the families the CA may connect over to validate an
// identifier: the address's own family for an IP address (RFC 8738), both
// for a DNS name (the CA picks from A and AAAA records).
func FamilyFor(identifier string) Family {
	if a, err := netip.ParseAddr(identifier); err == nil {
		if a.Unmap().Is4() {
			return IPv4
		}
		return IPv6
	}
	return Inet
}

// DefaultTimeout is how long a window stays open at most when the
// configuration does not say.
const DefaultTimeout = 10 * time.Minute

// ProtoTCP is the only protocol ACME validation uses.
const ProtoTCP = "tcp"

// Window is one port opened for validation.
type Window struct {
	Port       int           // 1-65535
	Family     Family        // the IP versions opened
	Proto      string        // "tcp" (empty means tcp)
	Timeout    time.Duration // the firewall closes the port by itself after this
	Identifier string        // what the CA validates, for logs and exec scripts
}

func (w Window) String() string {
	return fmt.Sprintf("%d/%s (%s)", w.Port, w.proto(), w.Family)
}

func (w Window) proto() string {
	if w.Proto == "" {
		return ProtoTCP
	}
	return w.Proto
}

// validate checks w before a backend uses it.
func (w Window) validate() error {
	if w.Port < 1 || w.Port > 65535 {
		return fmt.Errorf("firewall window port %d: use a port from 1 to 65535", w.Port)
	}
	if w.Family != IPv4 && w.Family != IPv6 && w.Family != Inet {
		return fmt.Errorf("firewall window family %q: use ip, ip6 or inet", w.Family)
	}
	if w.proto() != ProtoTCP {
		return fmt.Errorf("firewall window protocol %q: only tcp is supported", w.Proto)
	}
	if w.Timeout < time.Second {
		return fmt.Errorf("firewall window timeout %v: use at least 1s", w.Timeout)
	}
	return nil
}

// Hole is one port a backend holds open for Detour.
type Hole struct {
	Backend string
	Port    int
	Family  Family
	Proto   string
	// Until is when the firewall closes the port by itself; zero when the
	// backend cannot say (ufw keeps a rule until it is removed).
	Until time.Time
	// Where says where the backend put it, e.g. "table inet detour" or
	// "iptables INPUT".
	Where string
}

// Backend opens and closes windows on one kind of firewall.
//
// Implementations MUST be safe for concurrent use, MUST NOT change
// anything in Check, MUST make Open idempotent and never shorten an open
// window's remaining time, and SHOULD make Close succeed when the window
// is already closed. Leases (who holds a port) are the Keeper's business,
// not the backend's.
type Backend interface {
	// Name is the configuration name of the backend, e.g. "nftables".
	Name() string
	// Check reports, changing nothing, whether w could be opened now:
	// permissions, kernel support, a ruleset Detour can change safely.
	Check(ctx context.Context, w Window) error
	// Open makes the firewall accept w until its timeout.
	Open(ctx context.Context, w Window) error
	// Close removes w.
	Close(ctx context.Context, w Window) error
	// Status lists what the backend holds open for Detour.
	Status(ctx context.Context) ([]Hole, error)
	// Sweep removes what Detour left behind: with all, every window
	// Detour holds; without, only those whose deadline has passed (the
	// stale rules of a run that was killed).
	Sweep(ctx context.Context, all bool) error
}

// Sentinel errors, wrapped with what to change.
var (
	// ErrPermission means Detour may not change the firewall (not root,
	// no CAP_NET_ADMIN, not authorized by polkit).
	ErrPermission = errors.New("no permission to change the firewall")
	// ErrUnsupported means the firewall is not available here: the kernel
	// lacks nftables, the command is not installed, the daemon is stopped.
	ErrUnsupported = errors.New("firewall not available")
	// ErrUnsafe means the ruleset is one Detour cannot change safely;
	// nothing was changed.
	ErrUnsafe = errors.New("firewall ruleset cannot be changed safely")
)

// Names of the backends, as the configuration's firewall setting writes
// them.
const (
	NameNftables       = "nftables"
	NameIptables       = "iptables"
	NameIptablesLegacy = "iptables-legacy"
	NameIptablesNft    = "iptables-nft"
	NameUfw            = "ufw"
	NameFirewalld      = "firewalld"
	NameExec           = "exec"
	// Cloud firewalls (cloudproviders.go).
	NameDigitalOcean = "digitalocean"
	NameAWSSG        = "aws-sg"
	NameHetzner      = "hetzner"
)

// Names lists the backend names New accepts: the host's firewalls, then
// the cloud providers'.
func Names() []string {
	return append([]string{NameNftables, NameIptables, NameIptablesLegacy, NameIptablesNft, NameUfw, NameFirewalld, NameExec},
		CloudNames()...)
}

// Options configure New.
type Options struct {
	// Logger receives what the backend changes and why. Nil discards.
	Logger *slog.Logger
	// Runner runs the commands of command-driven backends. Nil runs them
	// with os/exec.
	Runner Runner
	// NetNS, for nftables, is an open file descriptor of the network
	// namespace to work in (tests); 0 means the process's own.
	NetNS int
	// Zone is the firewalld zone; empty means firewalld's default zone.
	Zone string
	// OpenCommand and CloseCommand are the exec backend's commands
	// (absolute paths of executables, run without a shell).
	OpenCommand, CloseCommand string
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Cloud is a cloud backend's configuration.
	Cloud cloud.Config
	// Store keeps a cloud backend's journal of the rules it added.
	Store store.Storage
}

var discard = slog.New(slog.DiscardHandler)

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = discard
	}
	if o.Runner == nil {
		o.Runner = ExecRunner{}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// New returns the backend called name (one of Names).
func New(name string, opts Options) (Backend, error) {
	opts = opts.withDefaults()
	switch name {
	case NameNftables:
		return newNftables(opts), nil
	case NameIptables, NameIptablesLegacy, NameIptablesNft:
		return newIptables(name, opts), nil
	case NameUfw:
		return newUfw(opts), nil
	case NameFirewalld:
		return newFirewalld(opts), nil
	case NameExec:
		return newExec(opts)
	}
	if IsCloud(name) {
		return newCloudBackend(name, opts)
	}
	return nil, fmt.Errorf("unknown firewall %q: use one of %s", name, strings.Join(Names(), ", "))
}

// tag marks every rule Detour adds, followed by " until=<unix seconds>".
const tag = "detour-window"

// tagUntil returns the comment of a rule that expires at until.
func tagUntil(until time.Time) string {
	return tag + " until=" + strconv.FormatInt(until.Unix(), 10)
}

// parseTag finds Detour's tag in s and returns its deadline.
func parseTag(s string) (until time.Time, ok bool) {
	i := strings.Index(s, tag+" until=")
	if i < 0 {
		return time.Time{}, false
	}
	rest := s[i+len(tag)+len(" until="):]
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end >= 0 {
		rest = rest[:end]
	}
	n, err := strconv.ParseInt(rest, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(n, 0), true
}
