package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/router"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/alpnforward"
	"github.com/detour-acme/detour/internal/solve/dnsembed"
	"github.com/detour-acme/detour/internal/solve/frontdoor"
	"github.com/detour-acme/detour/internal/solve/persist"
	"github.com/detour-acme/detour/internal/solve/sideport"
	"github.com/detour-acme/detour/internal/solve/standalone"
	"github.com/detour-acme/detour/internal/solve/stateless"
	"github.com/detour-acme/detour/internal/solve/webroot"
	"github.com/detour-acme/detour/internal/store"
)

// sandboxPath is one validation path of the demonstration.
type sandboxPath struct {
	s   solve.Solver
	ref store.PathRef
}

// sandboxSet is every path the sandbox demonstrates, the servers standing
// in for the user's web server and TLS proxy, and what to close.
type sandboxSet struct {
	demos   []showcase
	paths   map[string]sandboxPath
	closers []func() error
}

// close stops everything the set started, last first, and frees the CA's
// validation ports. It may be called more than once.
func (s *sandboxSet) close() error {
	if s == nil {
		return nil
	}
	var errs []error
	for _, c := range slices.Backward(s.closers) {
		if err := c(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.closers = nil
	return errors.Join(errs...)
}

func (s *sandboxSet) add(name, kind, challenge string, sv solve.Solver, settings map[string]string) {
	if settings == nil {
		settings = map[string]string{}
	}
	settings["challenge"] = challenge
	s.paths[name] = sandboxPath{sv, store.PathRef{Name: name, Kind: kind, Settings: settings}}
}

func loopback() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("binding a loopback port for the sandbox: %w", err)
	}
	return ln, nil
}

// sandboxPaths builds every path the sandbox can run in-process. The CA's
// http-01 port is served by one web server that dispatches by name to the
// standalone, webroot, side-port and stateless paths; its tls-alpn-01 port
// belongs first to the standalone solver, then to a front-door router, then
// to a router playing the user's TLS proxy that forwards one name to the
// alpn-forward solver. The returned set must be closed even on error.
func sandboxPaths(ctx context.Context, log *slog.Logger, env *sandbox.Env, st *store.FS, ca renew.CA, acct acme.Account) (*sandboxSet, error) {
	set := &sandboxSet{paths: map[string]sandboxPath{}}
	vaHTTP, vaTLS := env.HTTPListener.Addr().String(), env.TLSListener.Addr().String()
	// Whatever owns the validation ports is closed with the set.
	set.closers = append(set.closers, env.HTTPListener.Close, env.TLSListener.Close)

	// http-01: the standalone solver's handler is mounted in the front web
	// server; its own listener is a private loopback port.
	priv, err := loopback()
	if err != nil {
		return set, err
	}
	httpS, err := standalone.NewHTTP01(standalone.Options{Logger: log, Listener: priv})
	if err != nil {
		priv.Close()
		return set, err
	}
	set.closers = append(set.closers, httpS.Close)
	root, err := os.MkdirTemp("", "detour-sandbox-webroot-")
	if err != nil {
		return set, fmt.Errorf("creating the sandbox webroot: %w", err)
	}
	set.closers = append(set.closers, func() error { return os.RemoveAll(root) })
	wr, err := webroot.New(webroot.Options{Logger: log, Root: root})
	if err != nil {
		return set, err
	}
	sideLn, err := loopback()
	if err != nil {
		return set, err
	}
	side, err := sideport.New(sideport.Options{Logger: log, Listener: sideLn})
	if err != nil {
		sideLn.Close()
		return set, err
	}
	set.closers = append(set.closers, side.Close)
	tp, err := acme.Thumbprint(acct)
	if err != nil {
		return set, err
	}
	sl, err := stateless.New(stateless.Options{Logger: log, Thumbprint: tp})
	if err != nil {
		return set, err
	}
	web := serveHTTP(env.HTTPListener, &sandboxWeb{
		standalone: httpS, webroot: webrootHandler(root), side: sideProxy(sideLn.Addr().String()), stateless: statelessHandler(tp),
	}, log)
	set.closers = append(set.closers, web.stop)

	// tls-alpn-01.
	tlsS, err := standalone.NewTLSALPN01(standalone.Options{Logger: log, Listener: env.TLSListener})
	if err != nil {
		return set, err
	}
	set.closers = append(set.closers, tlsS.Close)
	backend, backendAddr, err := startBackend(log)
	if err != nil {
		return set, err
	}
	set.closers = append(set.closers, backend.stop)
	door, err := frontdoor.New(frontdoor.Options{Logger: log, Store: st, RouterAddr: vaTLS})
	if err != nil {
		return set, err
	}
	fwdLn, err := loopback()
	if err != nil {
		return set, err
	}
	fwd, err := standalone.NewTLSALPN01(standalone.Options{Logger: log, Listener: fwdLn, Name: alpnforward.Kind})
	if err != nil {
		fwdLn.Close()
		return set, err
	}
	set.closers = append(set.closers, fwd.Close)
	var rtr *server // the router on the tls-alpn-01 port, once there is one
	set.closers = append(set.closers, func() error { return rtr.stop() })
	toDoor := func(ctx context.Context) error {
		if err := tlsS.Close(); err != nil {
			return fmt.Errorf("freeing %s for the front door: %w", vaTLS, err)
		}
		var err error
		if rtr, err = serveRouter(vaTLS, frontdoor.NewResponder(st, log), []router.Route{{Backend: backendAddr}}, log); err != nil {
			return err
		}
		return checkPassThrough(ctx, vaTLS)
	}
	toForward := func(ctx context.Context) error {
		if err := rtr.stop(); err != nil {
			return err
		}
		var err error
		rtr, err = serveRouter(vaTLS, nil, []router.Route{{SNI: sandboxForwardName, Backend: fwdLn.Addr().String()}, {Backend: backendAddr}}, log)
		if err != nil {
			return err
		}
		return checkPassThrough(ctx, vaTLS)
	}

	// dns-01 and dns-persist-01 through the sandbox DNS.
	dnsS, err := dnsembed.New(dnsembed.Options{Logger: log, Server: env.DNS, QueryAddr: env.DNSAddr})
	if err != nil {
		return set, err
	}
	pers, err := sandboxPersist(ctx, log, env, ca, acct, "persist.detour.test")
	if err != nil {
		return set, err
	}

	set.add("standalone-http", standalone.Kind, solve.HTTP01, httpS, map[string]string{"listen": vaHTTP})
	set.add("webroot", webroot.Kind, solve.HTTP01, wr, map[string]string{"root": root})
	set.add("side-port", sideport.Kind, solve.HTTP01, side, map[string]string{"listen": sideLn.Addr().String()})
	set.add("stateless", stateless.Kind, solve.HTTP01, sl, nil)
	set.add("standalone-tls-alpn", standalone.Kind, solve.TLSALPN01, tlsS, map[string]string{"listen": vaTLS})
	set.add("front-door", frontdoor.Kind, solve.TLSALPN01, door, map[string]string{"router": vaTLS})
	set.add("alpn-forward", alpnforward.Kind, solve.TLSALPN01, fwd, map[string]string{"listen": fwdLn.Addr().String()})
	set.add("dns-embedded", dnsembed.Kind, solve.DNS01, dnsS, map[string]string{"listen": env.DNSAddr})
	set.add("persist", persist.Kind, solve.DNSPersist01, pers, map[string]string{"policy": persist.PolicyWildcard})
	set.demos = []showcase{
		{name: "http-demo", path: "standalone-http", ids: []string{sandboxHTTPName, "127.0.0.1"}, renew: true},
		{name: "webroot-demo", path: "webroot", ids: []string{sandboxWebrootName}},
		{name: "side-demo", path: "side-port", ids: []string{sandboxSideName}},
		{name: "stateless-demo", path: "stateless", ids: []string{sandboxStatelessName}},
		{name: "alpn-demo", path: "standalone-tls-alpn", ids: []string{"alpn.detour.test"}},
		{name: "door-demo", path: "front-door", ids: []string{sandboxDoorName}, before: toDoor},
		{name: "forward-demo", path: "alpn-forward", ids: []string{sandboxForwardName}, before: toForward},
		{name: "dns-demo", path: "dns-embedded", ids: []string{"dns.detour.test", "*.dns.detour.test"}},
		{name: "persist-demo", path: "persist", ids: []string{"persist.detour.test", "*.persist.detour.test"}},
	}
	return set, nil
}

// sandboxPersist publishes the standing dns-persist-01 record for name (and
// its wildcard) in the sandbox DNS, as a user publishes the one printed by
// `detour persist-record`, and returns the persist solver that relies on it.
func sandboxPersist(ctx context.Context, log *slog.Logger, env *sandbox.Env, ca renew.CA, acct acme.Account, name string) (solve.Solver, error) {
	tp, err := acme.Thumbprint(acct)
	if err != nil {
		return nil, err
	}
	b, err := persist.BindingFor(ctx, solve.CA{Directory: ca.Client.DirectoryURL(), RootBundle: ca.RootBundle}, solve.Account{URL: acct.Location, Thumbprint: tp})
	if err != nil {
		return nil, err
	}
	dc, err := persist.DNSClient(env.DNSAddr, log)
	if err != nil {
		return nil, err
	}
	s, err := persist.New(persist.Options{Logger: log, Policy: persist.PolicyWildcard, Lookup: persist.DNSLookup{Client: dc},
		Binding: func(context.Context) (persist.Binding, error) { return b, nil }})
	if err != nil {
		return nil, err
	}
	id, err := ident.Parse(name)
	if err != nil {
		return nil, err
	}
	p, err := s.Params(b, id)
	if err != nil {
		return nil, err
	}
	recName, value := persist.Record(p)
	// The check asks every authoritative server of the zone: its NS host
	// must resolve (the sandbox answers everything on one port).
	env.AddName("ns." + sandbox.Zone)
	env.DNS.AddTXT(recName, value, time.Time{}) // standing: never expires
	return s, nil
}
