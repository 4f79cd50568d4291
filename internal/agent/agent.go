// Package agent is Detour's renewal daemon (`detour run`): it keeps every
// configured certificate renewed, inside the CA's renewal window when the
// CA gives one (ACME Renewal Information, RFC 9773), else when a third of
// the lifetime is left.
//
// One goroutine owns the state of every certificate and sleeps on a single
// timer set for the earliest event of a min-heap (a renewal, a retry after
// a failure, or a renewal-info poll at the time the CA's Retry-After
// allows, RFC 9773 §4.3); nothing polls in between. Renewals run with
// bounded concurrency through renew.Manager.Obtain; failures back off
// exponentially with jitter and honour the CA's Retry-After (RFC 8555
// §6.6); after repeated failures a certificate moves to its next fallback
// CA. A new plan (a reloaded configuration) is swapped in whole. On
// shutdown the agent cancels renewals in flight and waits for them, so that
// their cleanup (tokens, TXT records, firewall windows) has run when Run
// returns.
package agent

import (
	"container/heap"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
)

// Obtainer obtains certificates and finishes interrupted renewals;
// *renew.Manager implements it.
type Obtainer interface {
	renew.Obtainer
	Sweep(ctx context.Context, req renew.Request) error
	Pending(ctx context.Context) ([]string, error)
}

var _ Obtainer = (*renew.Manager)(nil)

// Store is the state the agent reads and updates; *store.FS implements it.
type Store interface {
	ListRecords(ctx context.Context) ([]store.Record, error)
	LoadRecord(ctx context.Context, name string) (store.Record, error)
	SaveRecord(ctx context.Context, r store.Record) error
	LoadCertificate(ctx context.Context, name string) (store.Bundle, int, error)
	TryLock(ctx context.Context, name string) (unlock func() error, err error)
}

var _ Store = (*store.FS)(nil)

// Cert is one certificate the agent keeps renewed: the plan's target of
// the renewal step.
type Cert = renew.Target

// Plan is the immutable table the agent works from; Reload swaps it.
type Plan struct {
	Certs []Cert
	// RenewalInfo asks the CA that issued rec for leaf's renewal window;
	// nil disables polling.
	RenewalInfo func(ctx context.Context, rec store.Record, leaf *x509.Certificate) (acme.RenewalInfo, error)
	// Notifier is told when a certificate within NotifyWithin of expiry
	// failed to renew; nil: nobody.
	Notifier     Notifier
	NotifyWithin time.Duration
	// Broken names the certificates of Certs whose record cannot be read
	// (the planner has said why): the metrics show them until a renewal
	// succeeds or a plan no longer lists them.
	Broken []string
}

// Options configure an Agent.
type Options struct {
	Obtainer Obtainer // required
	Store    Store    // required
	Logger   *slog.Logger
	// Policy tunes the schedule (jitter, backoff, ARI polling).
	Policy renew.Policy
	// Concurrency bounds renewals running at once. Default 2.
	Concurrency int
	// Metrics, when set, receives the agent's figures.
	Metrics *Metrics
	// History, when set, keeps every renewal attempt with its steps and
	// their durations (the status page lists them).
	History History
	// Rand draws the jitter fractions in [0,1); default math/rand/v2.
	Rand func() float64
	// NotifyEvery limits notifications to one per certificate per period.
	// Default 24h.
	NotifyEvery time.Duration
	// LockedRetry is how soon a certificate another process is renewing
	// (its lock held) is looked at again. Default 1 minute; a fleet sets
	// its lock TTL, so that a node that died holding the lock is taken
	// over as soon as the lock ends.
	LockedRetry time.Duration
}

// Agent keeps certificates renewed. Create it with New and start it with
// Run; the other methods may be called from any goroutine while it runs.
type Agent struct {
	opts   Options
	log    *slog.Logger
	policy renew.Policy

	reload chan Plan
	status chan chan []Status
	binds  *bindSet

	mu      sync.Mutex // guards running
	running bool
}

// New returns an agent; it does nothing until Run.
func New(opts Options) (*Agent, error) {
	if opts.Obtainer == nil || opts.Store == nil {
		return nil, errors.New("agent: Obtainer and Store are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 2
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	if opts.LockedRetry <= 0 {
		opts.LockedRetry = time.Minute
	}
	if opts.NotifyEvery <= 0 {
		opts.NotifyEvery = 24 * time.Hour
	}
	return &Agent{
		opts: opts, log: opts.Logger, policy: opts.Policy,
		reload: make(chan Plan), status: make(chan chan []Status), binds: newBindSet(),
	}, nil
}

// Reload replaces the plan. Certificates keep their state across the swap
// (a renewal under way finishes); new ones are scheduled, dropped ones
// forgotten. It returns ctx's error if the agent is not running.
func (a *Agent) Reload(ctx context.Context, p Plan) error {
	select {
	case a.reload <- p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status returns the state of every certificate, sorted by name.
func (a *Agent) Status(ctx context.Context) ([]Status, error) {
	reply := make(chan []Status, 1)
	select {
	case a.status <- reply:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case s := <-reply:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// result is the outcome of one job, sent back to the loop.
type result struct {
	state *certState
	apply func(s *certState) // runs in the loop
}

// loop is the agent's running state, owned by Run's goroutine.
type loop struct {
	a                *Agent
	plan             Plan
	certs            map[string]*certState
	q                queue
	results          chan result
	renewSem, ariSem chan struct{}
	wg               sync.WaitGroup

	notifyMu sync.Mutex // jobs notify from their goroutines
	notified map[string]time.Time
}

// Run keeps the plan's certificates renewed until ctx is done, then waits
// for renewals in flight (their cleanup included) and returns nil. It
// first finishes what interrupted renewals left (see renew.Manager.Sweep).
func (a *Agent) Run(ctx context.Context, p Plan) error {
	a.mu.Lock()
	if a.running {
		a.mu.Unlock()
		return errors.New("agent: already running")
	}
	a.running = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.running = false
		a.mu.Unlock()
	}()

	l := &loop{
		a: a, certs: map[string]*certState{}, results: make(chan result),
		renewSem: make(chan struct{}, a.opts.Concurrency), ariSem: make(chan struct{}, 4),
		notified: map[string]time.Time{},
	}
	jobCtx, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		cancelJobs()
		l.drain()
	}()
	if err := l.apply(ctx, p); err != nil {
		return err
	}
	l.sweep(ctx)
	a.log.InfoContext(ctx, "agent started", "certificates", len(l.certs), "concurrency", a.opts.Concurrency)

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		l.arm(timer)
		select {
		case <-ctx.Done():
			a.log.InfoContext(ctx, "agent stopping; waiting for renewals in flight to clean up", "in_flight", l.inFlight())
			return nil
		case <-timer.C:
			l.dispatch(jobCtx)
		case r := <-l.results:
			r.apply(r.state)
			r.state.running = false
			if r.state.removed {
				continue
			}
			l.reschedule(r.state)
		case np := <-a.reload:
			if err := l.apply(ctx, np); err != nil {
				a.log.ErrorContext(ctx, "reloading the plan failed; keeping the old one", "error", err)
			}
		case reply := <-a.status:
			reply <- l.snapshot()
		}
	}
}

// drain waits for every job and discards their results.
func (l *loop) drain() {
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	for {
		select {
		case r := <-l.results:
			r.apply(r.state)
		case <-done:
			return
		}
	}
}

// inFlight counts certificates with a job running.
func (l *loop) inFlight() int {
	n := 0
	for _, s := range l.certs {
		if s.running {
			n++
		}
	}
	return n
}

// apply installs plan p: loads the records, keeps the state of
// certificates already known, and schedules every certificate.
func (l *loop) apply(ctx context.Context, p Plan) error {
	recs, err := l.a.opts.Store.ListRecords(ctx)
	if err != nil {
		return fmt.Errorf("reading the certificate records: %w", err)
	}
	byName := make(map[string]store.Record, len(recs))
	for _, r := range recs {
		byName[r.Name] = r
	}
	seen := make(map[string]bool, len(p.Certs))
	for _, c := range p.Certs {
		if seen[c.Name] {
			return fmt.Errorf("certificate %q is listed twice; give each certificate its own name", c.Name)
		}
		seen[c.Name] = true
	}
	l.plan = p
	for name, s := range l.certs {
		if !seen[name] {
			if s.index >= 0 {
				heap.Remove(&l.q, s.index)
			}
			s.removed = true
			delete(l.certs, name)
			l.a.opts.Metrics.forget(name)
		}
	}
	for _, c := range p.Certs {
		s, ok := l.certs[c.Name]
		if !ok {
			s = &certState{index: -1, retryFrac: l.a.opts.Rand()}
			l.certs[c.Name] = s
		}
		s.cert = c
		if r, ok := byName[c.Name]; ok && !s.running {
			s.rec = &r
		}
		if !s.running {
			l.reschedule(s)
		}
	}
	for _, n := range p.Broken {
		if seen[n] {
			l.a.opts.Metrics.brokenRecord(n)
		}
	}
	return nil
}

// sweep finishes the work interrupted renewals left.
func (l *loop) sweep(ctx context.Context) {
	names, err := l.a.opts.Obtainer.Pending(ctx)
	if err != nil {
		l.a.log.ErrorContext(ctx, "looking for interrupted renewals", "error", err)
		return
	}
	for _, n := range names {
		s, ok := l.certs[n]
		if !ok {
			l.a.log.WarnContext(ctx, "an interrupted renewal left work for a certificate no longer configured", "certificate", n)
			continue
		}
		req, release, err := s.cert.Request(ctx, s.caIndex())
		if err != nil {
			l.a.log.ErrorContext(ctx, "cannot finish an interrupted renewal", "certificate", n, "error", err)
			continue
		}
		if err := l.a.opts.Obtainer.Sweep(ctx, req); err != nil && !errors.Is(err, store.ErrLocked) {
			l.a.log.ErrorContext(ctx, "finishing an interrupted renewal", "certificate", n, "error", err)
		} else if err == nil {
			l.a.log.InfoContext(ctx, "finished an interrupted renewal", "certificate", n)
		}
		release()
		if rec, err := l.a.opts.Store.LoadRecord(ctx, n); err == nil {
			s.rec = &rec
			l.reschedule(s)
		}
	}
}

// reschedule computes s's next event and (re)queues it.
func (l *loop) reschedule(s *certState) {
	if k := windowKey(s.rec); k != s.fracKey {
		s.frac, s.fracKey = l.a.opts.Rand(), k
	}
	now := time.Now()
	s.next, s.action, s.reason = schedule(s, l.a.policy, now, l.plan.RenewalInfo != nil)
	if s.index >= 0 {
		heap.Fix(&l.q, s.index)
	} else {
		heap.Push(&l.q, s)
	}
	l.a.opts.Metrics.scheduled(s)
}

// arm sets the timer for the earliest event.
func (l *loop) arm(t *time.Timer) {
	if len(l.q) == 0 {
		t.Reset(24 * time.Hour)
		return
	}
	t.Reset(max(time.Until(l.q[0].next), 0))
}

// dispatch starts a job for every certificate whose event is due.
func (l *loop) dispatch(ctx context.Context) {
	now := time.Now()
	for len(l.q) > 0 && !l.q[0].next.After(now) {
		s := heap.Pop(&l.q).(*certState)
		s.running = true
		l.a.opts.Metrics.scheduled(s)
		l.wg.Add(1)
		j := job{cert: s.cert, action: s.action, reason: s.reason, last: s.last, plan: l.plan}
		if s.rec != nil {
			rec := *s.rec
			j.rec = &rec
		}
		go func() {
			defer l.wg.Done()
			var apply func(*certState)
			if j.action == actionARI {
				apply = l.pollARI(ctx, j)
			} else {
				apply = l.renew(ctx, j)
			}
			// The loop reads results while running and while draining.
			l.results <- result{state: s, apply: apply}
		}()
	}
}

// acquire takes a slot of sem, or fails when ctx is done.
func acquire(ctx context.Context, sem chan struct{}) (release func(), err error) {
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
