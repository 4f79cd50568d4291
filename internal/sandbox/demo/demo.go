// Package demo is the demonstration `detour sandbox` runs: a local ACME CA
// (Pebble, in-process) and DNS on loopback, and real certificates obtained
// from them through every validation path that can run on one machine,
// each behind a stand-in for the user's own web server or TLS proxy, one
// of them renewed. Nothing leaves the machine.
package demo

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/selfcheck"
	"github.com/detour-acme/detour/internal/store"
)

// showcase is one certificate the demonstration issues.
type showcase struct {
	name  string
	path  string
	ids   []string
	renew bool
	// before, if set, runs just before, e.g. to hand a validation port
	// from one path to the next.
	before func(context.Context) error
}

// Options configure Run.
type Options struct {
	Logger *slog.Logger
	// StateDir holds the certificates; "" makes a temporary directory.
	StateDir string
	// HTTPAddr, TLSAddr and DNSAddr are where the CA validates http-01 and
	// tls-alpn-01 and where the sandbox DNS answers (default 127.0.0.1:0).
	HTTPAddr, TLSAddr, DNSAddr string
}

// Row is one certificate obtained.
type Row struct {
	Path      string // the path, with " (renewal)" for the second round
	Challenge string
	Names     []string
	Version   int
	Elapsed   time.Duration
	NotAfter  time.Time
	LiveDir   string
}

// Sandbox is the running CA and DNS after the demonstration.
type Sandbox struct {
	// Env is the CA and DNS.
	Env *sandbox.Env
	// Store is the state directory the certificates went to.
	Store *store.FS
	// RootsFile is the PEM bundle of the CA's API roots.
	RootsFile string
	set       *sandboxSet
}

// FreePorts stops every server the demonstration started and frees the
// CA's validation ports for the user's own detour process.
func (s *Sandbox) FreePorts() error { return s.set.close() }

// Close stops everything.
func (s *Sandbox) Close() error {
	err := s.set.close()
	s.Env.Close()
	return err
}

// Run starts the sandbox, obtains every certificate of the demonstration
// (calling row after each), and returns the sandbox still running; the
// caller closes it.
func Run(ctx context.Context, opts Options, row func(Row)) (*Sandbox, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stateDir := opts.StateDir
	if stateDir == "" {
		d, err := os.MkdirTemp("", "detour-sandbox-")
		if err != nil {
			return nil, fmt.Errorf("creating a temporary state directory: %w", err)
		}
		stateDir = d
	}
	st, err := store.NewFS(stateDir, store.FSOptions{Logger: log})
	if err != nil {
		return nil, err
	}
	env, err := sandbox.Start(ctx, sandbox.EnvOptions{Logger: log, HTTPAddr: opts.HTTPAddr, TLSAddr: opts.TLSAddr, DNSAddr: opts.DNSAddr})
	if err != nil {
		return nil, err
	}
	sb := &Sandbox{Env: env, Store: st}
	ok := false
	defer func() {
		if !ok {
			sb.Close()
		}
	}()
	client, err := acme.New(acme.Options{Directory: env.CA.DirectoryURL(), RootsPEM: env.CA.TLSRootsPEM(), Logger: log})
	if err != nil {
		return nil, err
	}
	defer client.Close()
	sb.RootsFile = filepath.Join(st.Dir(), "sandbox-ca-roots.pem")
	if err := env.CA.WriteTLSRoots(sb.RootsFile); err != nil {
		return nil, err
	}
	m, err := renew.New(renew.Options{Store: st, Logger: log})
	if err != nil {
		return nil, err
	}
	ca := renew.CA{Client: client, Name: "sandbox", Email: "sandbox@detour.test", AgreeTOS: true, RootBundle: sb.RootsFile}
	acct, err := m.Account(ctx, ca)
	if err != nil {
		return nil, err
	}
	sb.set, err = sandboxPaths(ctx, log, env, st, ca, acct)
	if err != nil {
		return nil, err
	}
	for _, d := range sb.set.demos {
		for _, n := range d.ids {
			if !strings.HasPrefix(n, "*.") && strings.HasSuffix(n, ".test") {
				env.AddName(n)
			}
		}
	}
	// Self-check each answer as the sandbox CA will fetch it: through the
	// sandbox DNS, on the ports its validation authority uses.
	check := selfcheck.Func(selfcheck.Options{
		Logger: log, Resolver: selfcheck.ResolverAt(env.DNSAddr),
		HTTPPort: env.HTTPListener.Addr().(*net.TCPAddr).Port, TLSPort: env.TLSListener.Addr().(*net.TCPAddr).Port,
	}, nil)
	for _, d := range sb.set.demos {
		ids, err := ident.ParseAll(d.ids)
		if err != nil {
			return nil, err
		}
		if d.before != nil {
			if err := d.before(ctx); err != nil {
				return nil, fmt.Errorf("sandbox: %s: %w", d.path, err)
			}
		}
		p := sb.set.paths[d.path]
		req := renew.Request{
			Name: d.name, Identifiers: ids, Profile: env.CA.DefaultProfile(), CA: ca,
			Paths: []solve.Path{{Name: d.path, Solver: p.s}}, Refs: []store.PathRef{p.ref},
			SelfCheck: check,
		}
		rounds := 1
		if d.renew {
			rounds = 2
		}
		for i := range rounds {
			label := d.path
			if i > 0 {
				label += " (renewal)"
				if rec, err := st.LoadRecord(ctx, d.name); err == nil {
					req.Replaces = rec.ARIID
				}
			}
			res, err := m.Obtain(ctx, req)
			if err != nil {
				return nil, fmt.Errorf("sandbox: %s: %w", d.path, err)
			}
			row(Row{Path: label, Challenge: p.s.Type(), Names: d.ids, Version: res.Version, Elapsed: res.Elapsed,
				NotAfter: res.NotAfter, LiveDir: filepath.Join(st.Dir(), "live", d.name)})
		}
	}
	ok = true
	return sb, nil
}

// HTTPPort and TLSPort are the ports the CA validates on.
func (s *Sandbox) HTTPPort() int { return s.Env.HTTPListener.Addr().(*net.TCPAddr).Port }

// TLSPort is the port the CA validates tls-alpn-01 on.
func (s *Sandbox) TLSPort() int { return s.Env.TLSListener.Addr().(*net.TCPAddr).Port }
