package firewall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/selfcheck"
)

// The firewall preflight answers what a self-check cannot: a request the
// host makes to itself never crosses its own inbound filter, so a ruleset
// dropping port 80 passes the self-check and the CA then times out. Every
// http-01 and tls-alpn-01 path without a firewall window reads the local
// rulesets (Inbound) before anything is asked of the CA, and is passed
// over when they drop or reject the CA's connection for every address
// family the name has.

// verdictTTL is how long a path reuses the rulesets it read: long enough
// for the identifiers of one renewal, short enough to see a change.
const verdictTTL = 10 * time.Second

// WithPreflight returns sp with its Build wrapping every http-01 and
// tls-alpn-01 solver that has no firewall window in the preflight (see
// Preflight), unless the certificate's checks are off (env.NoSelfCheck:
// the CA may reach the path another way than the rules show, through a
// load balancer or a port forward to another port). Specs that answer
// neither are returned as they are.
func WithPreflight(sp solve.Spec) solve.Spec {
	if !slices.Contains(sp.Challenges, solve.HTTP01) && !slices.Contains(sp.Challenges, solve.TLSALPN01) {
		return sp
	}
	build := sp.Build
	var builtins []string
	for _, b := range sp.Builtins {
		builtins = append(builtins, b.Name)
	}
	window := sp.Window
	sp.Build = func(ctx context.Context, s solve.Settings, env solve.Env) (solve.Solver, error) {
		inner, err := build(ctx, s, env)
		if err != nil || HasHostWindow(s) || env.NoSelfCheck {
			return inner, err
		}
		typ := inner.Type()
		if typ != solve.HTTP01 && typ != solve.TLSALPN01 {
			return inner, nil
		}
		if _, waits := inner.(solve.Waiter); waits {
			return inner, nil
		}
		opts := PreflightOptions{Logger: env.Logger, Path: s.Path, Kind: s.Kind, Port: caPort(s, window, typ),
			Builtin: slices.Contains(builtins, s.Path), CanWindow: window != nil, Cloud: backendsOf(s)}
		if env.Resolver != "" {
			opts.Resolver = selfcheck.ResolverAt(env.Resolver)
		}
		return Preflight(inner, opts), nil
	}
	return sp
}

// caPort is the port the CA's connection reaches on this host for a path
// with settings s: the port of the window's listen setting when the kind
// binds it itself, else 80 for http-01 and 443 for tls-alpn-01.
func caPort(s solve.Settings, w *solve.Window, typ string) int {
	if w != nil && w.Listen != "" {
		if _, port, err := net.SplitHostPort(s.Get(w.Listen)); err == nil {
			if n, err := strconv.Atoi(port); err == nil && n > 0 {
				return n
			}
		}
	}
	if typ == solve.TLSALPN01 {
		return selfcheck.DefaultTLSPort
	}
	return selfcheck.DefaultHTTPPort
}

// PreflightOptions configure Preflight.
type PreflightOptions struct {
	// Logger receives what the rulesets say when they do not refuse. Nil
	// discards.
	Logger *slog.Logger
	// Path and Kind name the path, for the fix.
	Path, Kind string
	// Builtin is set for a built-in path (no [path.NAME] table of its
	// own to take a firewall setting).
	Builtin bool
	// CanWindow is set when the kind takes a firewall window.
	CanWindow bool
	// Cloud is the cloud firewall the path already opens, if any: the fix
	// then adds the host's firewall beside it.
	Cloud []string
	// Port is the port the CA's connection reaches on this host.
	Port int
	// Resolver looks up the identifier's addresses; nil means the
	// system's.
	Resolver selfcheck.Resolver
	// Inbound reads the rulesets; nil means Inbound with the zero
	// InboundOptions (tests read a namespace).
	Inbound func(ctx context.Context, port int) (Verdict, error)
}

// Preflight returns inner with a Check that also reads the local firewall
// rulesets for inbound TCP to opts.Port, and fails, saying which rule and
// how to fix it, when they drop or reject it for every address family
// the identifier resolves to (for every family when it does not
// resolve). A family dropped while another is open is logged (the CA
// falls back to IPv4 after an IPv6 timeout). Rulesets that may not be read
// (not root), or whose answer is unknown, or that drop only sources no
// rule names (an allow-list, maybe of the proxy in front), pass.
func Preflight(inner solve.Solver, opts PreflightOptions) solve.Solver {
	if opts.Logger == nil {
		opts.Logger = discard
	}
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	if opts.Inbound == nil {
		opts.Inbound = func(ctx context.Context, port int) (Verdict, error) { return Inbound(ctx, port, InboundOptions{}) }
	}
	return &preflight{inner: inner, opts: opts}
}

// preflight is a solver whose Check reads the firewall.
type preflight struct {
	inner solve.Solver
	opts  PreflightOptions

	mu   sync.Mutex
	at   time.Time
	last Verdict
	err  error
}

func (p *preflight) Type() string { return p.inner.Type() }

func (p *preflight) Present(ctx context.Context, ch solve.Challenge) error {
	return p.inner.Present(ctx, ch)
}

func (p *preflight) CleanUp(ctx context.Context, ch solve.Challenge) error {
	return p.inner.CleanUp(ctx, ch)
}

// Close closes the inner solver when it holds resources.
func (p *preflight) Close() error {
	if c, ok := p.inner.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Check implements solve.Solver: the inner Check, then the firewall.
func (p *preflight) Check(ctx context.Context, id ident.Identifier) error {
	if err := p.inner.Check(ctx, id); err != nil {
		return err
	}
	v, err := p.verdict(ctx)
	if err != nil {
		if errors.Is(err, ErrPermission) {
			p.opts.Logger.DebugContext(ctx, "the firewall rules cannot be read without root; not checked", "port", p.opts.Port, "error", err)
		} else {
			p.opts.Logger.WarnContext(ctx, "the firewall rules could not be read; not checked", "port", p.opts.Port, "error", err)
		}
		return nil
	}
	fams := p.families(ctx, id)
	var blocked, open []Family
	for _, f := range fams {
		if closed(v.For(f)) {
			blocked = append(blocked, f)
		} else {
			open = append(open, f)
		}
	}
	switch {
	case len(blocked) == 0:
		for _, f := range fams {
			if fv := v.For(f); fv.BySource {
				p.opts.Logger.InfoContext(ctx, "the firewall accepts the validation port from listed sources only: the CA's connection (or the proxy's in front) must come from one of them",
					"identifier", id.Value, "port", p.opts.Port, "family", familyLabel(f), "verdict", fv.String())
			}
		}
		return nil
	case len(open) > 0:
		for _, f := range blocked {
			p.opts.Logger.WarnContext(ctx, "the firewall closes the validation port to one address family; the CA tries IPv6 first and uses IPv4 only after a connection failure",
				"identifier", id.Value, "port", p.opts.Port, "family", familyLabel(f), "verdict", v.For(f).String())
		}
		return nil
	}
	return p.refusal(v, blocked)
}

// closed reports whether fv keeps the CA's connection out: dropped or
// rejected for any source (not an allow-list), or accepted only by a
// window of another path, which closes when that renewal ends.
func closed(fv FamilyVerdict) bool {
	switch fv.Action {
	case Drop, Reject:
		return !fv.BySource
	case Accept:
		return fv.Window
	}
	return false
}

// families returns the address families the CA may connect over for id:
// those of its A and AAAA records (both when the lookup fails: the
// self-check then says why).
func (p *preflight) families(ctx context.Context, id ident.Identifier) []Family {
	if a, err := netip.ParseAddr(id.Value); err == nil {
		if a.Unmap().Is4() {
			return []Family{IPv4}
		}
		return []Family{IPv6}
	}
	host := strings.TrimPrefix(id.Value, "*.")
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := p.opts.Resolver.LookupNetIP(lctx, "ip", host)
	var out []Family
	for _, a := range addrs {
		f := IPv6
		if a.Unmap().Is4() {
			f = IPv4
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	if err != nil || len(out) == 0 {
		return []Family{IPv4, IPv6}
	}
	return out
}

// verdict returns what the rulesets do to the port, read at most once per
// verdictTTL.
func (p *preflight) verdict(ctx context.Context) (Verdict, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.at.IsZero() && time.Since(p.at) < verdictTTL {
		return p.last, p.err
	}
	p.last, p.err = p.opts.Inbound(ctx, p.opts.Port)
	p.at = time.Now()
	return p.last, p.err
}

// refusal says that the rulesets keep the CA out, which rules, and the fix.
func (p *preflight) refusal(v Verdict, blocked []Family) error {
	var rules []string
	backend := ""
	for _, f := range blocked {
		fv := v.For(f)
		what := string(fv.Action)
		if fv.Action == Accept {
			what = "closed once another renewal's window closes"
		}
		rules = append(rules, fmt.Sprintf("%s %s by %s", familyLabel(f), what, describeRule(fv)))
		if backend == "" {
			backend = windowBackend(fv.Backend)
		}
	}
	if backend == "" {
		backend = NameNftables
	}
	var fix string
	switch {
	case !p.opts.CanWindow:
		fix = fmt.Sprintf("allow inbound TCP port %d in %s (the %s path answers on it all the time)", p.opts.Port, backend, p.opts.Kind)
	case p.opts.Builtin:
		fix = fmt.Sprintf("have Detour open port %d only while the CA validates: declare a path of your own, "+
			"[path.%s-fw] with kind = %q and firewall = %q, and list it in paths instead of %q; or allow inbound TCP port %d in %s",
			p.opts.Port, p.opts.Kind, p.opts.Kind, backend, p.opts.Path, p.opts.Port, backend)
	case len(p.opts.Cloud) > 0:
		fix = fmt.Sprintf("set firewall = [%q, %q] in [path.%s], so that Detour opens port %d in this host's firewall too while the CA validates; or allow inbound TCP port %d in %s",
			p.opts.Cloud[0], backend, p.opts.Path, p.opts.Port, p.opts.Port, backend)
	default:
		fix = fmt.Sprintf("set firewall = %q in [path.%s], so that Detour opens port %d only while the CA validates; or allow inbound TCP port %d in %s",
			backend, p.opts.Path, p.opts.Port, p.opts.Port, backend)
	}
	return fmt.Errorf("this host's firewall keeps the CA from connecting to port %d (%s); "+
		"a self-check cannot see this, as the host's requests to itself never cross its inbound filter, and the CA would time out. "+
		"Fix: %s; or use a DNS path (dns-01 needs no inbound port; see `detour paths`). "+
		"If the CA reaches this host another way (a load balancer or a port forward to another port), self_check = false in the certificate's section skips this check",
		p.opts.Port, strings.Join(rules, "; "), fix)
}

// describeRule names the rule or policy of fv.
func describeRule(fv FamilyVerdict) string {
	s := fv.Rule
	if s == "" {
		s = "its rules"
	}
	if fv.Backend != "" && !strings.Contains(s, fv.Backend) {
		s += " (" + fv.Backend + ")"
	}
	return s
}

// familyLabel is IPv4 or IPv6, for people.
func familyLabel(f Family) string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// windowBackend returns the firewall setting that drives backend, the
// Backend of a FamilyVerdict.
func windowBackend(backend string) string {
	switch backend {
	case NameIp6tablesLegacy:
		return NameIptablesLegacy
	case NameIp6tablesNft:
		return NameIptablesNft
	}
	return backend
}
