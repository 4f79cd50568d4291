package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/deploy"
	"github.com/detour-acme/detour/internal/dnsserver"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/dnsembed"
	"github.com/detour-acme/detour/internal/solve/frontdoor"
	"github.com/detour-acme/detour/internal/solve/selfcheck"
	"github.com/detour-acme/detour/internal/solve/sideport"
	"github.com/detour-acme/detour/internal/solve/standalone"
	"github.com/detour-acme/detour/internal/solve/stateless"
	"github.com/detour-acme/detour/internal/solve/webroot"
	"github.com/detour-acme/detour/internal/store"
)

// caClient builds the renewal CA for ca. staging selects the CA's staging
// directory (for --dry-run) when it has one.
func (a *app) caClient(ca config.CA, staging bool, agreeTOS bool) (renew.CA, error) {
	dir := ca.Directory
	if staging && ca.Staging != "" {
		dir = ca.Staging
	}
	opts := acme.Options{Directory: dir, Logger: a.log}
	if ca.RootBundle != "" {
		roots, err := acme.ReadRoots(ca.RootBundle)
		if err != nil {
			return renew.CA{}, fmt.Errorf("CA %s: %w", ca.Name, err)
		}
		opts.RootsPEM = roots
	}
	c, err := acme.New(opts)
	if err != nil {
		return renew.CA{}, err
	}
	out := renew.CA{Client: c, Name: ca.Name, Email: ca.Email, AgreeTOS: agreeTOS, RootBundle: ca.RootBundle}
	if ca.EABKeyID != "" {
		out.EAB = &acme.EAB{KeyID: ca.EABKeyID, HMACKey: ca.EABHMACKey}
	} else if ca.RequiresEAB {
		// Let the account step explain; an existing account needs no EAB.
		out.EAB = nil
	}
	return out, nil
}

// pathSet builds solvers and closes the listeners they hold.
type pathSet struct {
	log     *slog.Logger
	store   store.Storage
	account func() (acme.Account, error) // for paths that need the thumbprint
	closers []io.Closer
	kinds   map[string]config.Path // the paths built, by name

	// ca is the CA of the request, for paths bound to its account (persist);
	// resolver is --resolver, for paths that look names up in DNS.
	ca       *renew.CA
	resolver string
}

func (ps *pathSet) Close() error {
	var errs []error
	for _, c := range ps.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// build returns the solver for p.
func (ps *pathSet) build(p config.Path) (solve.Path, store.PathRef, error) {
	challenge := config.ChallengeOf(p)
	ref := refFor(p)
	ps.kinds[p.Name] = p
	log := ps.log.With("path", p.Name)
	s, err := ps.solver(p, challenge, log)
	if err == nil && p.Setting(config.SettingFirewall) != "" {
		s, err = ps.firewalled(p, s, log)
	}
	if err != nil {
		return solve.Path{}, ref, fmt.Errorf("path %s: %w", p.Name, err)
	}
	if c, ok := s.(io.Closer); ok {
		ps.closers = append(ps.closers, c)
	}
	return solve.Path{Name: p.Name, Solver: s}, ref, nil
}

func (ps *pathSet) solver(p config.Path, challenge string, log *slog.Logger) (solve.Solver, error) {
	switch p.Kind {
	case config.KindStandalone, config.KindALPNForward:
		opts := standalone.Options{Logger: log, Addr: p.Listen}
		switch challenge {
		case solve.HTTP01:
			return standalone.NewHTTP01(opts)
		case solve.TLSALPN01:
			return standalone.NewTLSALPN01(opts)
		}
		return nil, fmt.Errorf("%s answers http-01 or tls-alpn-01, not %q", p.Kind, challenge)
	case config.KindDNSEmbedded:
		srv := dnsserver.New(dnsserver.Options{Logger: log})
		return dnsembed.New(dnsembed.Options{Logger: log, Server: srv, Listen: p.Listen})
	case config.KindWebroot:
		return webroot.New(webroot.Options{Logger: log, Root: p.Root})
	case config.KindSidePort:
		return sideport.New(sideport.Options{Logger: log, Addr: p.Listen})
	case config.KindStateless:
		if ps.account == nil {
			return nil, errors.New("the stateless path needs the ACME account's thumbprint, which is not available here")
		}
		acct, err := ps.account()
		if err != nil {
			return nil, fmt.Errorf("loading the account for its thumbprint: %w", err)
		}
		tp, err := acme.Thumbprint(acct)
		if err != nil {
			return nil, err
		}
		return stateless.New(stateless.Options{Logger: log, Thumbprint: tp})
	case config.KindPersist:
		return ps.persistSolver(p, log)
	case config.KindRFC2136:
		return ps.rfc2136Solver(p, log)
	case config.KindDNSProvider:
		return ps.dnsProviderSolver(p, log)
	case config.KindACMEDNS:
		return ps.acmeDNSSolver(p, log)
	case config.KindFrontDoor:
		return frontdoor.New(frontdoor.Options{Logger: log, Store: ps.store, RouterAddr: p.Router})
	}
	return nil, fmt.Errorf("unknown kind %q (known: %v)", p.Kind, config.Kinds())
}

// refFor describes p for a certificate's record. Kind-specific settings are
// kept so that a renewal from the record rebuilds the path; secrets are not:
// they stay in the config or in the files it names.
func refFor(p config.Path) store.PathRef {
	settings := map[string]string{"challenge": config.ChallengeOf(p)}
	for k, v := range map[string]string{"listen": p.Listen, "root": p.Root, "router": p.Router} {
		if v != "" {
			settings[k] = v
		}
	}
	for k, v := range p.Settings {
		if v != "" && !secretSetting(k) {
			settings[k] = v
		}
	}
	return store.PathRef{Name: p.Name, Kind: p.Kind, Settings: settings}
}

// pathFromRef rebuilds a config.Path from a stored record's reference.
func pathFromRef(r store.PathRef) config.Path {
	p := config.Path{Name: r.Name, Kind: r.Kind, Challenge: r.Settings["challenge"], Listen: r.Settings["listen"],
		Root: r.Settings["root"], Router: r.Settings["router"]}
	for k, v := range r.Settings {
		switch k {
		case "challenge", "listen", "root", "router":
		default:
			if p.Settings == nil {
				p.Settings = map[string]string{}
			}
			p.Settings[k] = v
		}
	}
	return p
}

// secretSetting reports whether a path setting holds a secret that must
// not be copied into a certificate's record (renewal/<name>.json).
func secretSetting(key string) bool {
	return strings.Contains(key, "secret") || strings.Contains(key, "password") || strings.HasSuffix(key, "_key") && key != "tsig_key"
}

// recordPath returns the path a record refers to: the config's [path.NAME]
// table when it still exists with the same kind (current settings, secrets
// from the config), else the settings kept in the record.
func recordPath(cfg *config.Config, r store.PathRef) config.Path {
	if cfg != nil {
		if p, ok := cfg.Paths[r.Name]; ok && p.Kind == r.Kind {
			return p
		}
	}
	return pathFromRef(r)
}

// requestFromConfig plans the certificate c of cfg.
func (a *app) requestFromConfig(cfg *config.Config, c config.Certificate, ps *pathSet, dryRun, agreeTOS bool) (renew.Request, error) {
	caRef := c.CA
	if caRef == "" {
		caRef = cfg.CA
	}
	ca, err := config.ResolveCA(cfg, caRef)
	if err != nil {
		return renew.Request{}, fmt.Errorf("certificate %s: %w", c.Name, err)
	}
	if ca.Email == "" {
		ca.Email = cfg.Email
	}
	rca, err := a.caClient(ca, dryRun, agreeTOS || cfg.AgreeTOS)
	if err != nil {
		return renew.Request{}, err
	}
	kt := cfg.KeyType
	if c.KeyType != "" {
		if kt, err = acme.ParseKeyType(c.KeyType); err != nil {
			return renew.Request{}, fmt.Errorf("certificate %s: %w", c.Name, err)
		}
	}
	req := renew.Request{
		Name: c.Name, Identifiers: c.Identifiers, KeyType: kt, Profile: c.Profile,
		PreferredChain: c.PreferredChain, CA: rca, DryRun: dryRun,
		DeployHook: deploy.Hook{Command: c.DeployHook},
	}
	if req.Deploy, err = deployPlan(c); err != nil {
		return renew.Request{}, err
	}
	if c.SelfCheck && !a.noSelfCheck {
		req.SelfCheck = a.selfCheck(ps.kinds)
	}
	ps.account = func() (acme.Account, error) { return a.mgr.Account(a.ctx, rca) }
	ps.ca = &rca
	names := c.Paths
	if len(names) == 0 {
		names = config.DefaultPaths
	}
	for _, n := range names {
		p, err := cfg.Path(n)
		if err != nil {
			return renew.Request{}, fmt.Errorf("certificate %s: %w", c.Name, err)
		}
		sp, ref, err := ps.build(p)
		if err != nil {
			return renew.Request{}, err
		}
		req.Paths = append(req.Paths, sp)
		req.Refs = append(req.Refs, ref)
	}
	return req, nil
}

// requestFromRecord plans a renewal of a certificate obtained without a
// config entry, exactly as it was obtained.
func (a *app) requestFromRecord(cfg *config.Config, rec store.Record, ps *pathSet, dryRun bool) (renew.Request, error) {
	ids, err := ident.ParseAll(rec.Identifiers)
	if err != nil {
		return renew.Request{}, fmt.Errorf("record of %s: %w", rec.Name, err)
	}
	kt, err := acme.ParseKeyType(rec.KeyType)
	if err != nil {
		return renew.Request{}, fmt.Errorf("record of %s: %w", rec.Name, err)
	}
	ca := config.CA{Name: rec.CAName, Directory: rec.CA, RootBundle: rec.RootBundle, Email: rec.Email}
	if dryRun && rec.CAName != "" {
		if known, err := config.ResolveCA(nil, rec.CAName); err == nil {
			ca.Staging = known.Staging
		}
	}
	// The account exists already: terms were agreed when it was made.
	rca, err := a.caClient(ca, dryRun, true)
	if err != nil {
		return renew.Request{}, err
	}
	req := renew.Request{
		Name: rec.Name, Identifiers: ids, KeyType: kt, Profile: rec.Profile,
		PreferredChain: rec.PreferredChain, CA: rca, DryRun: dryRun,
		DeployHook: deploy.Hook{Command: rec.DeployHook},
	}
	if !rec.NoSelfCheck && !a.noSelfCheck {
		req.SelfCheck = a.selfCheck(ps.kinds)
	}
	ps.account = func() (acme.Account, error) { return a.mgr.Account(a.ctx, rca) }
	ps.ca = &rca
	for _, r := range rec.Paths {
		sp, ref, err := ps.build(recordPath(cfg, r))
		if err != nil {
			return renew.Request{}, err
		}
		req.Paths = append(req.Paths, sp)
		req.Refs = append(req.Refs, ref)
	}
	return req, nil
}

// manager opens the store and returns a renewal manager on it.
func (a *app) manager(cfg *config.Config) (*renew.Manager, *store.FS, error) {
	st, err := a.store(cfg)
	if err != nil {
		return nil, nil, err
	}
	m, err := renew.New(renew.Options{Store: st, Logger: a.log})
	a.mgr, a.st = m, st
	return m, st, err
}

// newPathSet returns a path builder on the opened store.
func (a *app) newPathSet() *pathSet {
	return &pathSet{log: a.log, store: a.st, kinds: map[string]config.Path{}, resolver: a.resolver}
}

// selfCheck returns the check run after each Present: the answer is
// fetched the way the CA will fetch it.
//
// paths gives each path's settings by name, so that hints speak of what the
// user set up (a webroot, a forward, a stateless block).
func (a *app) selfCheck(paths map[string]config.Path) func(context.Context, solve.Path, solve.Challenge) error {
	opts := selfcheck.Options{Logger: a.log, HTTPPort: a.checkHTTPPort, TLSPort: a.checkTLSPort}
	if a.resolver != "" {
		addr := a.resolver
		d := &net.Dialer{Timeout: 5 * time.Second}
		opts.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		}}
	}
	return func(ctx context.Context, p solve.Path, ch solve.Challenge) error {
		check := selfcheck.For(ch.Type)
		if check == nil {
			return nil
		}
		o := opts
		if cp, ok := paths[p.Name]; ok {
			o.PathKind, o.Root = cp.Kind, cp.Root
		}
		return check(ctx, ch, o)
	}
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
