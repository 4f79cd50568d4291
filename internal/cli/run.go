package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/agent"
	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/deploy"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
)

// Flags of `detour run`.
const (
	flagConcurrency   = "concurrency"
	flagMetricsListen = "metrics-listen"
)

// agentSocket is the status socket of the running agent, in the state
// directory.
const agentSocket = "agent.sock"

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
--metrics-listen) serves Prometheus metrics at /metrics.`,
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
	cfg, err := a.config(false)
	if err != nil {
		return err
	}
	m, st, err := a.manager(cfg)
	if err != nil {
		return err
	}
	a.sweepTemps(ctx, st)
	plan, err := a.agentPlan(cfg)
	if err != nil {
		return err
	}
	metrics := agent.NewMetrics()
	ag, err := agent.New(agent.Options{Obtainer: m, Store: st, Logger: a.log, Metrics: metrics, Concurrency: concurrency})
	if err != nil {
		return err
	}
	sock := filepath.Join(st.Dir(), agentSocket)
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
		metricsListen = cfg.Agent.MetricsListen
	}
	if metricsListen != "" {
		mln, err := net.Listen("tcp", metricsListen)
		if err != nil {
			return fmt.Errorf("binding %s for metrics: %w; choose another metrics_listen address", metricsListen, err)
		}
		a.log.Info("serving metrics", "listen", mln.Addr().String())
		servers.Go(func() {
			if err := agent.Serve(srvCtx, mln, ag.Handler(metrics)); err != nil {
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
				a.reloadAgent(ctx, ag)
			}
		}
	}()
	err = ag.Run(ctx, plan)
	a.log.Info("agent stopped")
	return err
}

// reloadAgent re-reads the config file and swaps the agent's plan; a
// config with errors keeps the old plan.
func (a *app) reloadAgent(ctx context.Context, ag *agent.Agent) {
	a.cfg, a.cfgErr = nil, nil
	cfg, err := a.config(false)
	var plan agent.Plan
	if err == nil {
		plan, err = a.agentPlan(cfg)
	}
	if err != nil {
		a.log.Error("reloading the config failed; the agent keeps running with the previous one", "config", a.configFile, "error", err)
		return
	}
	if err := ag.Reload(ctx, plan); err != nil {
		a.log.Error("reloading the agent's plan", "error", err)
		return
	}
	a.log.Info("config reloaded", "certificates", len(plan.Certs))
}

// agentPlan builds the agent's plan from cfg and the records of
// certificates issued with flags.
func (a *app) agentPlan(cfg *config.Config) (agent.Plan, error) {
	recs, err := a.st.ListRecords(a.ctx)
	if err != nil {
		return agent.Plan{}, err
	}
	binds := &bindLocks{held: map[string]*sync.Mutex{}}
	plan := agent.Plan{RenewalInfo: a.renewalInfo(cfg)}
	configured := map[string]bool{}
	for _, c := range cfg.Certificates {
		configured[c.Name] = true
		cas := append([]string{orDefault(c.CA, cfg.CA)}, c.FallbackCA...)
		ids := make([]string, len(c.Identifiers))
		for i, id := range c.Identifiers {
			ids[i] = id.Value
		}
		if _, err := deployPlan(c); err != nil {
			return agent.Plan{}, err
		}
		plan.Certs = append(plan.Certs, agent.Cert{Name: c.Name, Identifiers: ids, CAs: cas, AfterFailures: c.AfterFailures,
			Request: func(ctx context.Context, ca int) (renew.Request, func(), error) {
				cc := c
				cc.CA = cas[ca]
				ps := a.newPathSet()
				req, err := a.requestFromConfig(cfg, cc, ps, false, false)
				if err != nil {
					ps.Close()
					return req, nil, err
				}
				req, release := binds.hold(req, ps)
				return req, release, nil
			}})
	}
	for _, r := range recs {
		if configured[r.Name] {
			continue
		}
		name := r.Name
		plan.Certs = append(plan.Certs, agent.Cert{Name: name, CAs: []string{orDefault(r.CAName, r.CA)},
			Request: func(ctx context.Context, _ int) (renew.Request, func(), error) {
				rec, err := a.st.LoadRecord(ctx, name)
				if err != nil {
					return renew.Request{}, nil, err
				}
				ps := a.newPathSet()
				req, err := a.requestFromRecord(cfg, rec, ps, false)
				if err != nil {
					ps.Close()
					return req, nil, err
				}
				req, release := binds.hold(req, ps)
				return req, release, nil
			}})
	}
	var ns agent.Notifiers
	if cfg.Agent.NotifyCommand != "" {
		ns = append(ns, agent.CommandNotifier{Command: cfg.Agent.NotifyCommand})
	}
	if cfg.Agent.NotifyWebhook != "" {
		ns = append(ns, agent.WebhookNotifier{URL: cfg.Agent.NotifyWebhook})
	}
	if len(ns) > 0 {
		plan.Notifier, plan.NotifyWithin = ns, time.Duration(cfg.Agent.NotifyDays)*24*time.Hour
	}
	return plan, nil
}

// bindLocks serialises renewals whose paths bind the same address (two
// standalone paths on :80 cannot answer at once).
type bindLocks struct {
	mu   sync.Mutex
	held map[string]*sync.Mutex
}

// hold takes the locks of the addresses req's paths bind and returns req's
// release: it frees them, the path set and the CA client.
func (b *bindLocks) hold(req renew.Request, ps *pathSet) (renew.Request, func()) {
	var addrs []string
	for _, ref := range req.Refs {
		if l := ref.Settings["listen"]; l != "" {
			addrs = append(addrs, l)
		}
	}
	var locked []*sync.Mutex
	for _, addr := range addrs {
		b.mu.Lock()
		m, ok := b.held[addr]
		if !ok {
			m = &sync.Mutex{}
			b.held[addr] = m
		}
		b.mu.Unlock()
		m.Lock()
		locked = append(locked, m)
	}
	return req, func() {
		ps.Close()
		if req.CA.Client != nil {
			req.CA.Client.Close()
		}
		for _, m := range locked {
			m.Unlock()
		}
	}
}

// renewalInfo returns the agent's renewal-info lookup: a client per CA
// (directory and roots), kept for the life of the plan.
func (a *app) renewalInfo(cfg *config.Config) func(context.Context, store.Record, *x509.Certificate) (acme.RenewalInfo, error) {
	type entry struct {
		fn  func(context.Context, store.Record, *x509.Certificate) (acme.RenewalInfo, error)
		err error
	}
	var mu sync.Mutex
	cache := map[string]entry{}
	return func(ctx context.Context, rec store.Record, leaf *x509.Certificate) (acme.RenewalInfo, error) {
		key := rec.CA + "\x00" + rec.RootBundle
		mu.Lock()
		e, ok := cache[key]
		if !ok {
			e.fn, e.err = a.renewalInfoFor(rec)
			cache[key] = e
		}
		mu.Unlock()
		if e.err != nil {
			return acme.RenewalInfo{}, e.err
		}
		return e.fn(ctx, rec, leaf)
	}
}

// renewalInfoFor builds the lookup for the CA that issued rec.
func (a *app) renewalInfoFor(rec store.Record) (func(context.Context, store.Record, *x509.Certificate) (acme.RenewalInfo, error), error) {
	opts := acme.Options{Directory: rec.CA, Logger: a.log}
	hc := &http.Client{Timeout: 30 * time.Second}
	if rec.RootBundle != "" {
		roots, err := acme.ReadRoots(rec.RootBundle)
		if err != nil {
			return nil, fmt.Errorf("CA roots of %s: %w", rec.Name, err)
		}
		opts.RootsPEM = roots
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(roots)
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	c, err := acme.New(opts)
	if err != nil {
		return nil, err
	}
	return agent.RenewalInfoFunc(c, hc), nil
}

// deployPlan turns a certificate's deploy settings into a plan (the hook is
// left to the request's DeployHook unless a timeout is set).
func deployPlan(c config.Certificate) (deploy.Plan, error) {
	var p deploy.Plan
	if c.Deploy.HookTimeout > 0 {
		p.Hook = deploy.Hook{Command: c.DeployHook, Timeout: c.Deploy.HookTimeout}
	}
	for _, r := range c.Deploy.Reloads {
		p.Reloads = append(p.Reloads, deploy.Reload{Server: r.Server, Unit: r.Unit, PIDFile: r.PIDFile})
	}
	for _, o := range c.Deploy.Outputs {
		out := deploy.Output{Path: o.Path, Format: o.Format, Owner: o.Owner, Group: o.Group, Mode: o.Mode}
		if o.PasswordFile != "" {
			pw, err := os.ReadFile(o.PasswordFile)
			if err != nil {
				return p, fmt.Errorf("certificate %s: output %s: reading password_file: %w", c.Name, o.Path, err)
			}
			out.Password = strings.TrimRight(string(pw), "\r\n")
		}
		p.Outputs = append(p.Outputs, out)
	}
	return p, nil
}

// sweepPending finishes what interrupted renewals left (challenges to
// clean up, versions to deploy), for `detour renew`. Temporary files are
// swept only then: walking a large state directory costs time the no-op
// decision should not spend when nothing was interrupted.
func (a *app) sweepPending(ctx context.Context, cfg *config.Config, m *renew.Manager, byName map[string]store.Record) {
	names, err := m.Pending(ctx)
	if err != nil {
		a.log.Warn("looking for interrupted renewals", "error", err)
		return
	}
	if len(names) > 0 {
		a.sweepTemps(ctx, a.st)
	}
	for _, n := range names {
		ps := a.newPathSet()
		var req renew.Request
		if c, cerr := cfg.Certificate(n); cerr == nil {
			req, err = a.requestFromConfig(cfg, c, ps, false, false)
		} else if rec, ok := byName[n]; ok {
			req, err = a.requestFromRecord(cfg, rec, ps, false)
		} else {
			ps.Close()
			continue
		}
		if err == nil {
			err = m.Sweep(ctx, req)
		}
		ps.Close()
		if err != nil && !errors.Is(err, store.ErrLocked) {
			a.log.Warn("finishing an interrupted renewal", "certificate", n, "error", err)
		}
	}
}

// withFallbackCA returns c with the CA its next attempt uses: the primary,
// or after after_failures consecutive failures (in rec) the next
// fallback_ca.
func withFallbackCA(cfg *config.Config, c config.Certificate, rec store.Record, hasRec bool) config.Certificate {
	if len(c.FallbackCA) == 0 || !hasRec || rec.Last == nil || rec.Last.OK {
		return c
	}
	cas := append([]string{orDefault(c.CA, cfg.CA)}, c.FallbackCA...)
	c.CA = cas[renew.CAIndex(rec.Last.Failures, c.AfterFailures, len(cas))]
	return c
}

// retryAfterOf returns the time the CA asked to wait until, when err says.
func retryAfterOf(err error) time.Time {
	var ra *acme.RetryAfterError
	if errors.As(err, &ra) {
		return ra.Until
	}
	return time.Time{}
}

// mergeAgentStatus overlays the running agent's view on rows from the
// store: its next event and reason, the CA its next attempt uses, and
// certificates it manages that have no record yet. want (names asked for;
// empty: all) loses the names the agent knows. Without an agent the rows
// are returned as they are.
func (a *app) mergeAgentStatus(ctx context.Context, st *store.FS, rows []certStatus, want map[string]bool) []certStatus {
	live, err := agent.FetchStatus(ctx, filepath.Join(st.Dir(), agentSocket))
	if err != nil {
		if !errors.Is(err, agent.ErrNotRunning) {
			a.log.Warn("the running agent did not answer; showing the store", "error", err)
		}
		return rows
	}
	byName := make(map[string]int, len(rows))
	for i, r := range rows {
		byName[r.Name] = i
	}
	asked := len(want) > 0
	for _, s := range live {
		i, ok := byName[s.Name]
		if !ok {
			if asked && !want[s.Name] {
				continue
			}
			delete(want, s.Name)
			rows = append(rows, certStatus{Name: s.Name, Identifiers: s.Identifiers, Paths: []string{}})
			i = len(rows) - 1
		}
		r := &rows[i]
		r.Source, r.Running, r.NextCA, r.Failures = "agent", s.Running, s.NextCA, s.Failures
		r.RenewReason = s.Reason
		if s.NextAction == "renew" || r.RenewAt.IsZero() {
			r.RenewAt = s.Next
		}
		if s.LastOK != nil {
			ok, at := *s.LastOK, s.LastTime
			r.LastOK, r.LastTime, r.LastError = &ok, &at, s.LastError
		}
	}
	return rows
}

// tempAge is how old a temporary file must be before it is swept: a
// younger one may be a write another detour process is doing now.
const tempAge = time.Minute

// sweepTemps removes temporary files that writes killed half-way left.
func (a *app) sweepTemps(ctx context.Context, st *store.FS) {
	if n, err := st.SweepTemps(ctx, tempAge); err != nil {
		a.log.Warn("sweeping temporary files", "error", err)
	} else if n > 0 {
		a.log.Info("removed temporary files interrupted writes left", "files", n)
	}
}
