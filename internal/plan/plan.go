// Package plan turns what the user wrote — the configuration file, the
// command line, the records of certificates issued earlier — into what
// Detour runs: the typed requests of the renewal step (identifiers, key,
// CA and fallback CAs, profile, ordered paths with their solvers built from
// their kinds' specs, deploy plan), the agent's plan, and the capabilities
// the commands use. It is the one place for defaults and wiring; package
// cli only parses flags, calls it and prints.
package plan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/kinds"
	"github.com/detour-acme/detour/internal/store"
)

// Options configure a Planner.
type Options struct {
	// Config is the loaded configuration (config.Default() without a
	// file). Required.
	Config *config.Config
	// StateDir overrides the configuration's state directory.
	StateDir string
	// ReadOnly is for commands that only read the state (doctor): a state
	// directory that does not exist is not created; an empty temporary
	// one stands in for it, removed by Close.
	ReadOnly bool
	// Logger receives everything Detour does; nil discards.
	Logger *slog.Logger
	// Resolver is the DNS server (host:port) the self-check and the DNS
	// paths look names up with; "" means the system's.
	Resolver string
	// NoSelfCheck turns the self-check off for every certificate.
	NoSelfCheck bool
	// CheckHTTPPort and CheckTLSPort are the ports the self-check fetches
	// http-01 and tls-alpn-01 answers on (0: 80 and 443; rehearsals).
	CheckHTTPPort, CheckTLSPort int
	// WindowOpened, when set, runs once a firewall window is open (an
	// end-to-end test hook).
	WindowOpened func(ctx context.Context) error
	// Getenv reads the environment for credentials a path may take from
	// its provider's usual variables (a cloud firewall's token); nil
	// reads none.
	Getenv func(string) string
	// Policy tunes the renewal schedule.
	Policy renew.Policy
}

// Planner plans renewals from a configuration and a state directory.
type Planner struct {
	opts Options
	cfg  *config.Config
	log  *slog.Logger
	// Store is the state directory: this node's live/ files, sockets and
	// temporary files, and on a single host everything else too.
	Store *store.FS
	// shared holds the accounts, records, certificates and locks: Store
	// on a single host, etcd in a fleet.
	shared Shared
	// fleet is the link to the fleet; nil on a single host.
	fleet *fleetConn
	// Manager obtains and renews certificates in the shared state.
	Manager *renew.Manager
	// tempState is the stand-in state directory of a ReadOnly planner,
	// removed by Close.
	tempState string
}

// Open opens the state directory (Options.StateDir, else the
// configuration's) and returns a Planner on it.
func Open(opts Options) (*Planner, error) {
	if opts.Config == nil {
		return nil, errors.New("plan: no configuration")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	dir := opts.StateDir
	if dir == "" {
		dir = opts.Config.StateDir
	}
	if dir == "" {
		dir = config.DefaultStateDir
	}
	var temp string
	if _, err := os.Stat(dir); opts.ReadOnly && errors.Is(err, fs.ErrNotExist) {
		if temp, err = os.MkdirTemp("", "detour-empty-state-"); err != nil {
			return nil, err
		}
		dir = temp
	}
	st, err := store.NewFS(dir, store.FSOptions{Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	p := &Planner{opts: opts, cfg: opts.Config, log: opts.Logger, Store: st, shared: st, tempState: temp}
	if s := opts.Config.Store; s.IsFleet() {
		if p.fleet, err = openFleet(s, opts.Config.File, opts.Logger); err != nil {
			return nil, err
		}
		p.shared = fleetShared{etcdShared: p.fleet.store, local: st}
	}
	if p.Manager, err = renew.New(renew.Options{Store: p.shared, Logger: opts.Logger, Policy: opts.Policy, RenewalInfo: p.ariFetcher(),
		NoDeploy: p.fleet != nil}); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Config returns the configuration the planner works from.
func (p *Planner) Config() *config.Config { return p.cfg }

// WithConfig returns a planner on the same state directory and manager
// with another configuration: a reloaded file (the state directory is the
// one opened at start; changing it needs a restart), or a private copy
// that carries the flags of a one-off certificate.
func (p *Planner) WithConfig(cfg *config.Config) *Planner { return p.with(cfg) }

func (p *Planner) with(cfg *config.Config) *Planner {
	q := *p
	q.cfg = cfg
	q.opts.Config = cfg
	return &q
}

// CAClient builds the renewal CA for ca. staging selects the CA's staging
// directory (a dry run) when it has one.
func (p *Planner) CAClient(ca config.CA, staging, agreeTOS bool) (renew.CA, error) {
	dir := ca.Directory
	if staging && ca.Staging != "" {
		dir = ca.Staging
	}
	opts := acme.Options{Directory: dir, Logger: p.log}
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
		// An existing account needs no EAB; without credentials the
		// account step explains what a CA that requires them wants.
		out.EAB = &acme.EAB{KeyID: ca.EABKeyID, HMACKey: ca.EABHMACKey}
	}
	return out, nil
}

// env returns what the kinds' Build may use for a request on ca.
func (p *Planner) env(ca renew.CA) solve.Env {
	return solve.Env{
		Logger:   p.log,
		Store:    p.Store,
		Resolver: p.opts.Resolver,
		Account: func(ctx context.Context) (solve.Account, error) {
			acct, err := p.Manager.Account(ctx, ca)
			if err != nil {
				return solve.Account{}, err
			}
			tp, err := acme.Thumbprint(acct)
			if err != nil {
				return solve.Account{}, err
			}
			return solve.Account{URL: acct.Location, Thumbprint: tp}, nil
		},
		CA:           solve.CA{Directory: ca.Client.DirectoryURL(), RootBundle: ca.RootBundle},
		WindowOpened: p.opts.WindowOpened,
		Getenv:       p.opts.Getenv,
	}
}

// pathSet is the solvers built for one request, closed together when the
// request is over.
type pathSet struct {
	closers []io.Closer
	paths   map[string]config.Path // the paths built, by name
}

func newPathSet() *pathSet { return &pathSet{paths: map[string]config.Path{}} }

func (ps *pathSet) Close() error {
	var errs []error
	for _, c := range ps.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// build returns the solver of path cp, built through its kind's spec, and
// the reference a record keeps of it.
func (p *Planner) build(ctx context.Context, ps *pathSet, cp config.Path, env solve.Env) (solve.Path, store.PathRef, error) {
	spec, ok := kinds.Lookup(cp.Kind)
	if !ok {
		return solve.Path{}, store.PathRef{}, fmt.Errorf("path %s: unknown kind %q (known: %v)", cp.Name, cp.Kind, kinds.Names())
	}
	ref := refFor(spec, cp)
	env.Logger = p.log.With("path", cp.Name)
	s, err := spec.Build(ctx, cp.SolveSettings(), env)
	if err != nil {
		return solve.Path{}, ref, fmt.Errorf("path %s: %w", cp.Name, err)
	}
	ps.paths[cp.Name] = cp
	if c, ok := s.(io.Closer); ok {
		ps.closers = append(ps.closers, c)
	}
	return solve.Path{Name: cp.Name, Solver: s}, ref, nil
}

// refFor describes cp for a certificate's record: every setting of its
// kind's spec but those it marks secret (and nothing the spec does not
// know), so that a renewal from the record rebuilds the path while secrets
// stay in the configuration or the files it names.
func refFor(spec solve.Spec, cp config.Path) store.PathRef {
	settings := map[string]string{}
	for k, v := range cp.Settings {
		if s, ok := spec.Setting(k); v != "" && ok && !s.Secret {
			settings[k] = v
		}
	}
	return store.PathRef{Name: cp.Name, Kind: cp.Kind, Settings: settings}
}

// pathFromRef rebuilds a path from a stored record's reference, with its
// kind's defaults for settings the record leaves out.
func pathFromRef(r store.PathRef) config.Path {
	values := r.Settings
	if spec, ok := kinds.Lookup(r.Kind); ok {
		values = spec.WithDefaults(values)
	}
	return config.Path{Name: r.Name, Kind: r.Kind, Settings: values}
}

// recordPath returns the path a record refers to: the configuration's
// [path.NAME] table when it still exists with the same kind (its current
// settings, secrets included), else the settings kept in the record.
func recordPath(cfg *config.Config, r store.PathRef) config.Path {
	p, _ := recordPathFrom(cfg, r)
	return p
}

// recordPathFrom is recordPath, and whether the path came from the
// configuration.
func recordPathFrom(cfg *config.Config, r store.PathRef) (config.Path, bool) {
	if cfg != nil {
		if p, ok := cfg.Paths[r.Name]; ok && p.Kind == r.Kind {
			return p, true
		}
	}
	return pathFromRef(r), false
}

// binds returns what paths bind while they answer (see kinds.Binds); the
// agent sorts and de-duplicates them.
func binds(paths []config.Path) []string {
	var out []string
	for _, cp := range paths {
		if spec, ok := kinds.Lookup(cp.Kind); ok {
			out = append(out, kinds.Binds(spec, cp.Settings)...)
		}
	}
	return out
}

// Kinds returns the spec of every path kind, in the registry's order.
func Kinds() []solve.Spec { return kinds.All() }

// Kind returns the spec of kind.
func Kind(kind string) (solve.Spec, bool) { return kinds.Lookup(kind) }

// Builtins returns the paths usable without a [path.NAME] table.
func Builtins() []kinds.Builtin { return kinds.Builtins() }
