package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/plan"
	"github.com/detour-acme/detour/internal/router"
)

const (
	flagListen        = "listen"
	flagBackend       = "backend"
	flagRoute         = "route"
	flagProxyProtocol = "proxy-protocol"
)

type routerFlags struct {
	listen, backend string
	routes          []string
	proxyProtocol   bool
}

func (a *app) routerCommand() *cobra.Command {
	var f routerFlags
	cmd := &cobra.Command{
		Use:   "router",
		Short: "Own port 443: answer tls-alpn-01 here, pass every other TLS connection to your web server",
		Long: `Run the front door. Detour listens on :443, reads each TLS ClientHello without
consuming it, answers connections that offer ALPN "acme-tls/1" itself (the
tls-alpn-01 challenge of front-door paths), and passes every other connection
byte for byte to your HTTPS server, which you move to a local address
(e.g. nginx: listen 127.0.0.1:8443 ssl). With --proxy-protocol the backend gets a
PROXY protocol v2 header, so it still sees client addresses (nginx: listen ...
proxy_protocol; set_real_ip_from 127.0.0.1; real_ip_header proxy_protocol).

Settings come from the [router] table of the config file, or from flags (flags
win). SIGHUP re-reads the config file and swaps the routing table without
dropping live connections; a config with errors keeps the old table.
Certificates issued through a front-door path share the state directory with
the router, which is how it learns the challenges.`,
		Example: `  detour router --listen :443 --backend 127.0.0.1:8443
  detour router --backend 127.0.0.1:8443 --route 'mail.example.com=127.0.0.1:9443' --proxy-protocol`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.runRouter(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, flagListen, "", "address to own (default from [router], else :443)")
	fl.StringVar(&f.backend, flagBackend, "", "where other TLS connections go: host:port or unix:/path (default from [router])")
	fl.StringSliceVar(&f.routes, flagRoute, nil, "NAME=BACKEND: send a server name (or *.domain) elsewhere; repeatable")
	fl.BoolVar(&f.proxyProtocol, flagProxyProtocol, false, "send a PROXY protocol v2 header to the backends")
	return cmd
}

// routerTable builds the routing table from the config's [router] table and
// the flags (flags win).
func (a *app) routerTable(cmd *cobra.Command, cfg *config.Config, f routerFlags) (*router.Table, string, error) {
	rc := cfg.Router
	if f.listen != "" {
		rc.Listen = f.listen
	}
	if f.backend != "" {
		rc.Backend = f.backend
	}
	if cmd.Flags().Changed(flagProxyProtocol) {
		rc.ProxyProtocol = f.proxyProtocol
	}
	rc.Routes = slices.Clone(rc.Routes)
	for _, r := range f.routes {
		name, backend, ok := strings.Cut(r, "=")
		if !ok || name == "" || backend == "" {
			return nil, "", usagef("--%s %q: write NAME=BACKEND, e.g. mail.example.com=127.0.0.1:9443", flagRoute, r)
		}
		rc.Routes = append(rc.Routes, config.Route{SNI: name, Backend: backend})
	}
	t, err := plan.RouterTable(rc)
	if err != nil {
		return nil, "", usage(err)
	}
	return t, rc.ListenAddr(), nil
}

func (a *app) runRouter(cmd *cobra.Command, f routerFlags) error {
	ctx := cmd.Context()
	cfg, err := a.config(false)
	if err != nil {
		return err
	}
	table, listen, err := a.routerTable(cmd, cfg, f)
	if err != nil {
		return err
	}
	p, err := a.planner(false)
	if err != nil {
		return err
	}
	st := p.Store
	rt, err := router.New(router.Options{Logger: a.log, ACME: p.FrontDoor()}, table)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("binding %s for the router: %w (ports below 1024 need root or CAP_NET_BIND_SERVICE; is your web server still on it? move it to the backend address first)", listen, err)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				a.cfg, a.cfgErr = nil, nil
				cfg, err := a.config(false)
				if err == nil {
					var t *router.Table
					if t, _, err = a.routerTable(cmd, cfg, f); err == nil {
						rt.Reload(t)
						a.log.Info("router reloaded", "routes", len(t.Routes()))
						continue
					}
				}
				a.log.Error("reload failed; keeping the old routing table", "error", err)
			}
		}
	}()
	a.log.Info("router listening", "listen", ln.Addr().String(), "routes", len(table.Routes()), "state_dir", st.Dir())
	if err := rt.Serve(ctx, ln); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
