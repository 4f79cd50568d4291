package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/dnsserver"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/dnsembed"
	"github.com/detour-acme/detour/internal/solve/standalone"
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
	closers []io.Closer
}

func (ps *pathSet) Close() error {
	var errs []error
	for _, c := range ps.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// build returns the solver for p.
func (ps *pathSet) build(p config.Path, log *slog.Logger) (solve.Path, store.PathRef, error) {
	ref := store.PathRef{Name: p.Name, Kind: p.Kind, Settings: map[string]string{"challenge": config.ChallengeOf(p), "listen": p.Listen}}
	log = log.With("path", p.Name)
	var s solve.Solver
	switch p.Kind {
	case config.KindStandalone:
		opts := standalone.Options{Logger: log, Addr: p.Listen}
		switch config.ChallengeOf(p) {
		case solve.HTTP01:
			h, err := standalone.NewHTTP01(opts)
			if err != nil {
				return solve.Path{}, ref, fmt.Errorf("path %s: %w", p.Name, err)
			}
			ps.closers = append(ps.closers, h)
			s = h
		case solve.TLSALPN01:
			t, err := standalone.NewTLSALPN01(opts)
			if err != nil {
				return solve.Path{}, ref, fmt.Errorf("path %s: %w", p.Name, err)
			}
			ps.closers = append(ps.closers, t)
			s = t
		default:
			return solve.Path{}, ref, fmt.Errorf("path %s: standalone answers http-01 or tls-alpn-01, not %q", p.Name, p.Challenge)
		}
	case config.KindDNSEmbedded:
		srv := dnsserver.New(dnsserver.Options{Logger: log})
		d, err := dnsembed.New(dnsembed.Options{Logger: log, Server: srv, Listen: p.Listen})
		if err != nil {
			return solve.Path{}, ref, fmt.Errorf("path %s: %w", p.Name, err)
		}
		s = d
	default:
		return solve.Path{}, ref, fmt.Errorf("path %s: unknown kind %q (known: %v)", p.Name, p.Kind, config.Kinds())
	}
	return solve.Path{Name: p.Name, Solver: s}, ref, nil
}

// pathFromRef rebuilds a config.Path from a stored record's reference.
func pathFromRef(r store.PathRef) config.Path {
	return config.Path{Name: r.Name, Kind: r.Kind, Challenge: r.Settings["challenge"], Listen: r.Settings["listen"]}
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
	}
	names := c.Paths
	if len(names) == 0 {
		names = config.DefaultPaths
	}
	for _, n := range names {
		p, err := cfg.Path(n)
		if err != nil {
			return renew.Request{}, fmt.Errorf("certificate %s: %w", c.Name, err)
		}
		sp, ref, err := ps.build(p, a.log)
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
func (a *app) requestFromRecord(rec store.Record, ps *pathSet, dryRun bool) (renew.Request, error) {
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
	}
	for _, r := range rec.Paths {
		sp, ref, err := ps.build(pathFromRef(r), a.log)
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
	return m, st, err
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

var _ = context.Background
