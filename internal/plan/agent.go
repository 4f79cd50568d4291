package plan

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/agent"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
)

// Agent returns the agent's plan: every certificate of the configuration
// and every certificate issued with flags, the renewal-info lookup, and
// the notifiers of the configuration.
func (p *Planner) Agent(ctx context.Context) (agent.Plan, error) {
	renewals, err := p.Renewals(ctx, nil, RequestOptions{})
	if err != nil && !errors.Is(err, ErrNoCertificates) {
		return agent.Plan{}, err
	}
	plan := agent.Plan{RenewalInfo: p.renewalInfo()}
	for _, r := range renewals {
		plan.Certs = append(plan.Certs, r.Target)
		if r.Broken != nil {
			plan.Broken = append(plan.Broken, r.Target.Name)
		}
	}
	var ns agent.Notifiers
	if c := p.cfg.Agent.NotifyCommand; c != "" {
		ns = append(ns, agent.CommandNotifier{Command: c})
	}
	if u := p.cfg.Agent.NotifyWebhook; u != "" {
		ns = append(ns, agent.WebhookNotifier{URL: u})
	}
	if len(ns) > 0 {
		plan.Notifier, plan.NotifyWithin = ns, time.Duration(p.cfg.Agent.NotifyDays)*24*time.Hour
	}
	return plan, nil
}

// renewalInfo returns the agent's renewal-info lookup: a client per CA
// (directory and roots), kept for the life of the plan.
func (p *Planner) renewalInfo() func(context.Context, store.Record, *x509.Certificate) (acme.RenewalInfo, error) {
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
			e.fn, e.err = p.renewalInfoFor(rec)
			cache[key] = e
		}
		mu.Unlock()
		if e.err != nil {
			return acme.RenewalInfo{}, e.err
		}
		return e.fn(ctx, rec, leaf)
	}
}

// ariFetcher asks the CA that issued a certificate for the renewal window
// of its live certificate, for the renewal step run from cron.
func (p *Planner) ariFetcher() renew.ARIFetcher {
	info := p.renewalInfo()
	return func(ctx context.Context, rec store.Record) (*store.ARIWindow, error) {
		b, _, err := p.shared.LoadCertificate(ctx, rec.Name)
		if err != nil {
			return nil, fmt.Errorf("reading the live certificate to ask for its renewal window: %w", err)
		}
		leaf, err := b.Leaf()
		if err != nil {
			return nil, fmt.Errorf("reading the live certificate to ask for its renewal window: %w", err)
		}
		ri, err := info(ctx, rec, leaf)
		if err != nil {
			return nil, err
		}
		return renew.WindowOf(ri, time.Now()), nil
	}
}

// renewalInfoFor builds the lookup for the CA that issued rec.
func (p *Planner) renewalInfoFor(rec store.Record) (func(context.Context, store.Record, *x509.Certificate) (acme.RenewalInfo, error), error) {
	opts := acme.Options{Directory: rec.CA, Logger: p.log}
	if rec.RootBundle != "" {
		roots, err := acme.ReadRoots(rec.RootBundle)
		if err != nil {
			return nil, fmt.Errorf("CA roots of %s: %w", rec.Name, err)
		}
		opts.RootsPEM = roots
	}
	c, err := acme.New(opts)
	if err != nil {
		return nil, err
	}
	return agent.RenewalInfoFunc(c), nil
}

// tempAge is how old a temporary file must be before it is swept: a
// younger one may be a write another detour process is doing now.
const tempAge = time.Minute

// SweepTemps removes temporary files that writes killed half-way left.
func (p *Planner) SweepTemps(ctx context.Context) {
	if n, err := p.Store.SweepTemps(ctx, tempAge); err != nil {
		p.log.Warn("sweeping temporary files", "error", err)
	} else if n > 0 {
		p.log.Info("removed temporary files interrupted writes left", "files", n)
	}
}

// FinishInterrupted finishes what interrupted renewals left (challenges to
// clean up, versions to deploy), for `detour renew`. Temporary files are
// swept only then: walking a large state directory costs time the no-op
// decision should not spend when nothing was interrupted.
func (p *Planner) FinishInterrupted(ctx context.Context) {
	names, err := p.Manager.Pending(ctx)
	if err != nil {
		p.log.Warn("looking for interrupted renewals", "error", err)
		return
	}
	if len(names) == 0 {
		return
	}
	p.SweepTemps(ctx)
	renewals, err := p.Renewals(ctx, nil, RequestOptions{})
	if err != nil {
		p.log.Warn("finishing interrupted renewals", "error", err)
		return
	}
	byName := make(map[string]renew.Target, len(renewals))
	for _, r := range renewals {
		byName[r.Target.Name] = r.Target
	}
	for _, n := range names {
		t, ok := byName[n]
		if !ok {
			p.log.Warn("an interrupted renewal left work for a certificate neither configured nor recorded any more", "certificate", n)
			continue
		}
		req, release, err := t.Request(ctx, 0)
		if err == nil {
			err = p.Manager.Sweep(ctx, req)
			release()
		}
		if err != nil && !errors.Is(err, store.ErrLocked) {
			p.log.Warn("finishing an interrupted renewal", "certificate", n, "error", err)
		}
	}
}
