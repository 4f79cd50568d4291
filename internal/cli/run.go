package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/agent"
	"github.com/detour-acme/detour/internal/plan"
)

// maxFleetWait is the longest wait between two attempts of `detour run` to
// reach the fleet's etcd at start.
const maxFleetWait = 30 * time.Second

// Flags of `detour run`.
const (
	flagConcurrency   = "concurrency"
	flagMetricsListen = "metrics-listen"
)

func (a *app) runCommand() *cobra.Command {
	var concurrency int
	var metricsListen string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the renewal agent: keep every certificate renewed, unattended",
		Long: `Run the agent in the foreground (systemd: packaging/systemd/detour.service).

Every certificate of the config file, and every certificate issued with flags
(recorded in the state directory), is renewed at a random point inside the CA's
renewal window (ARI, RFC 9773, polled as the CA's Retry-After says), else when a
third of its lifetime is left. Failures are retried with exponential backoff and
jitter, honouring the CA's Retry-After; after after_failures consecutive
failures a certificate with fallback_ca moves to the next CA. Each new
certificate is deployed: outputs written, servers reloaded, deploy_hook run.

The agent sleeps on one timer between events. SIGHUP re-reads the config file
(a config with errors keeps the old one running and logs why); SIGTERM and
SIGINT stop it after renewals in flight have cleaned up. After a crash, the next
start finishes what was interrupted. 'detour status' asks the running agent
(socket agent.sock in the state directory); metrics_listen (or
--metrics-listen) serves Prometheus metrics at /metrics; status_listen serves
the status page (HTML, and /status.json), on the same listener when both name
one address.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runAgent(cmd, concurrency, metricsListen)
		},
	}
	cmd.Flags().IntVar(&concurrency, flagConcurrency, 2, "renewals running at once")
	cmd.Flags().StringVar(&metricsListen, flagMetricsListen, "", "serve Prometheus metrics on host:port (default: metrics_listen from the config, else none)")
	return cmd
}

func (a *app) runAgent(cmd *cobra.Command, concurrency int, metricsListen string) error {
	ctx := cmd.Context()
	p, err := a.planner(false)
	// A node may boot before etcd answers (or while it is down): the
	// agent waits for it rather than exiting, since it can do nothing
	// useful without it; every attempt's error names the endpoints.
	for wait := time.Second; errors.Is(err, plan.ErrFleetUnreachable); wait = min(2*wait, maxFleetWait) {
		a.log.Error("cannot reach the fleet's etcd; trying again", "in", wait, "error", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		p, err = a.planner(false)
	}
	if err != nil {
		return err
	}
	defer p.Close()
	p.SweepTemps(ctx)
	p.SweepWindows(ctx)
	var fa *plan.FleetAgent
	if p.Fleet() {
		if fa, err = p.JoinFleet(ctx); err != nil {
			return err
		}
		defer fa.Close()
	}
	// Stopped, and waited for, before the fleet's node is left.
	var background sync.WaitGroup
	defer background.Wait()
	bgCtx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	if fa != nil {
		background.Go(func() {
			if err := fa.Follow(bgCtx); err != nil && bgCtx.Err() == nil {
				a.log.Error("presenting the fleet's answers stopped", "error", err)
			}
		})
		background.Go(func() {
			if err := fa.Deploy(bgCtx); err != nil && bgCtx.Err() == nil {
				a.log.Error("deploying the fleet's certificates on this node stopped", "error", err)
			}
		})
		background.Go(func() {
			if err := fa.ReportWindows(bgCtx); err != nil && bgCtx.Err() == nil {
				a.log.Error("reporting this node's firewall windows to the fleet stopped", "error", err)
			}
		})
	}
	ap, err := p.Agent(ctx)
	if err != nil {
		return err
	}
	metrics := agent.NewMetrics()
	metrics.ObserveWindows(p.MetricsWindows)
	history := p.History()
	ag, err := agent.New(agent.Options{Obtainer: p.Manager, Store: p.SharedStore(), Logger: a.log, Metrics: metrics, Concurrency: concurrency,
		LockedRetry: p.LockedRetry(), History: history})
	if err != nil {
		return err
	}
	sock := filepath.Join(p.Store.Dir(), plan.AgentSocket)
	ln, err := agent.ListenSocket(sock)
	if err != nil {
		return err
	}
	defer os.Remove(sock)
	var servers sync.WaitGroup
	defer servers.Wait()
	srvCtx, stopServers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServers()
	servers.Go(func() {
		if err := agent.Serve(srvCtx, ln, ag.Handler(nil)); err != nil {
			a.log.Error("status socket stopped", "error", err)
		}
	})
	if metricsListen == "" {
		metricsListen = p.Config().Agent.MetricsListen
	}
	status, err := a.serveStatusPage(srvCtx, &servers, p, ag, history, metrics, fa, metricsListen)
	if err != nil {
		return err
	}
	if metricsListen != "" && !status.servesMetrics {
		mln, err := net.Listen("tcp", metricsListen)
		if err != nil {
			return fmt.Errorf("binding %s for metrics: %w; choose another metrics_listen address", metricsListen, err)
		}
		a.log.Info("serving metrics", "listen", mln.Addr().String())
		servers.Go(func() {
			if err := agent.Serve(srvCtx, mln, withFleetReady(ag.Handler(metrics), fa)); err != nil {
				a.log.Error("metrics listener stopped", "error", err)
			}
		})
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
				a.reloadAgent(ctx, p, ag, status.page)
			}
		}
	}()
	err = ag.Run(ctx, ap)
	a.log.Info("agent stopped")
	return err
}

// reloadAgent re-reads the config file and swaps the agent's plan; a
// config with errors keeps the old plan. The state directory stays the one
// opened at start.
func (a *app) reloadAgent(ctx context.Context, p *plan.Planner, ag *agent.Agent, page *plan.StatusPage) {
	a.cfg, a.cfgErr = nil, nil
	cfg, err := a.config(false)
	var ap agent.Plan
	var np *plan.Planner
	if err == nil {
		if a.stateDir == "" && cfg.StateDir != p.Config().StateDir {
			a.log.Warn("state_dir changed in the config; the agent keeps the one it started with until it is restarted",
				"state_dir", p.Store.Dir(), "config_state_dir", cfg.StateDir)
		}
		np = p.WithConfig(cfg)
		ap, err = np.Agent(ctx)
	}
	if err != nil {
		a.log.Error("reloading the config failed; the agent keeps running with the previous one", "config", a.configFile, "error", err)
		return
	}
	if err := ag.Reload(ctx, ap); err != nil {
		a.log.Error("reloading the agent's plan", "error", err)
		return
	}
	if page != nil {
		page.SetPlanner(np) // status_* themselves take effect at the next start
	}
	a.log.Info("config reloaded", "certificates", len(ap.Certs))
}

// withFleetReady adds GET /fleet/ready to h on a node of a fleet: 200 while
// the node is a member and presents the fleet's answers, 503 while it is
// not (etcd away): the load balancer's health check for http-01 and
// tls-alpn-01 (README: Fleet).
func withFleetReady(h http.Handler, fa *plan.FleetAgent) http.Handler {
	if fa == nil {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("GET /fleet/ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !fa.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not a member of the fleet: etcd is not answering; this node presents no answers")
			return
		}
		fmt.Fprintln(w, "member of the fleet: presenting its answers")
	})
	return mux
}
