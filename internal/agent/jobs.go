package agent

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
)

// job is what one renewal or poll needs, copied out of the loop's state so
// that the job's goroutine shares nothing with the loop.
type job struct {
	cert   Cert
	rec    *store.Record
	action string
	reason string
	last   *store.Attempt // kept in memory for a certificate with no record
	plan   Plan
}

// renew runs one renewal of j's certificate through the renewal step and
// returns how to update its state. The certificate's bind addresses are
// taken first (see bindSet), then a slot of the concurrency bound.
func (l *loop) renew(ctx context.Context, j job) func(*certState) {
	log := l.a.log.With("certificate", j.cert.Name)
	clk := &clock{begin: time.Now(), obtain: &timedObtainer{Obtainer: l.a.opts.Obtainer}}
	unbind, err := l.a.binds.acquire(ctx, j.cert.Binds)
	if err != nil {
		return func(*certState) {}
	}
	defer unbind()
	release, err := acquire(ctx, l.renewSem)
	if err != nil {
		return func(*certState) {}
	}
	defer release()
	m := l.a.opts.Metrics
	m.inFlight(1)
	defer m.inFlight(-1)

	log.InfoContext(ctx, "renewing", "reason", j.reason)
	start := time.Now()
	clk.ready = start
	step := renew.Step{Obtainer: clk.obtain, Records: l.a.opts.Store, Policy: l.a.policy, Logger: l.a.log}
	// The decision was made on j.rec: when the record says otherwise
	// now (cron, or another node of a fleet, renewed it), nothing is
	// ordered.
	expect := renew.ExpectedOf(j.rec)
	out := step.Run(ctx, j.cert, renew.StepOptions{Force: true, Last: j.last, Expect: &expect, Progress: clk.progress})
	clk.done = time.Now()
	switch {
	case out.Superseded:
		log.InfoContext(ctx, "renewed meanwhile by another process; rescheduling from its record")
		rec := out.Record
		return func(s *certState) {
			s.last, s.notBefore, s.rec = nil, time.Time{}, rec
			if rec != nil {
				m.record(*rec)
			}
		}
	case out.Err == nil:
	case out.Interrupted:
		// Shutting down: not the certificate's failure.
		log.InfoContext(ctx, "renewal interrupted by shutdown", "error", out.Err)
		return func(*certState) {}
	case errors.Is(out.Err, store.ErrLocked):
		retry := l.a.opts.LockedRetry
		log.InfoContext(ctx, "another detour process is renewing this certificate; looking again soon", "in", retry)
		return func(s *certState) { s.notBefore = time.Now().Add(retry) }
	case out.Attempt == nil:
		log.ErrorContext(ctx, "renewal failed; looking again in a minute", "error", out.Err)
		return func(s *certState) { s.notBefore = time.Now().Add(time.Minute) }
	default:
		m.attempt(out.CA, out.Paths, out.Err)
		l.record(ctx, j.cert.Name, clk.attempt(out))
		return l.failed(ctx, j, out)
	}
	res := out.Result
	m.attempt(out.CA, out.Paths, nil)
	l.record(ctx, j.cert.Name, clk.attempt(out))
	log.InfoContext(ctx, "renewed", "version", res.Version, "not_after", res.NotAfter, "serial", res.Serial,
		"path", joinUsed(res.PathUsed), "ca", out.CA, "elapsed", time.Since(start).Round(time.Millisecond))
	if res.DeployErr != nil {
		m.deployFailed()
		log.ErrorContext(ctx, "the new certificate is live but deploying it failed", "error", res.DeployErr)
	}
	rec, lerr := l.a.opts.Store.LoadRecord(context.WithoutCancel(ctx), j.cert.Name)
	return func(s *certState) {
		s.last, s.notBefore = nil, time.Time{}
		if lerr == nil {
			s.rec = &rec
			m.record(rec)
		} else {
			l.a.log.ErrorContext(ctx, "reading the record after a renewal", "certificate", j.cert.Name, "error", lerr)
		}
	}
}

// failed logs the failed attempt the step recorded, notifies when the
// certificate is close to expiry, and returns the state update: the record
// the attempt went into, or the attempt kept in memory when no record
// could hold it.
func (l *loop) failed(ctx context.Context, j job, out renew.Outcome) func(*certState) {
	attempt := out.Attempt
	log := l.a.log.With("certificate", j.cert.Name)
	saved := out.Record
	if saved == nil && j.rec != nil {
		log.WarnContext(ctx, "the failure is kept in memory only: the record could not hold it")
		r := *j.rec
		r.Last = attempt
		saved = &r
	}
	next := l.a.policy.RetryAt(*attempt, 0.5)
	if saved != nil {
		next = l.a.policy.RetryAtFor(saved.NotBefore, saved.NotAfter, *attempt, 0.5)
	}
	log.ErrorContext(ctx, "renewal failed; the live certificate is untouched", "error", out.Err, "ca", out.CA,
		"failures", attempt.Failures, "retry_after", attempt.RetryAfter, "next_try_about", next.Round(time.Second))
	if saved != nil {
		l.maybeNotify(ctx, j, *saved)
	}
	return func(s *certState) {
		s.retryFrac, s.notBefore = l.a.opts.Rand(), time.Time{}
		if saved != nil {
			s.rec = saved
		} else {
			s.last = attempt
		}
	}
}

// pollARI asks the CA for the renewal window of j's certificate.
func (l *loop) pollARI(ctx context.Context, j job) func(*certState) {
	log := l.a.log.With("certificate", j.cert.Name)
	release, err := acquire(ctx, l.ariSem)
	if err != nil {
		return func(*certState) {}
	}
	defer release()
	if j.rec == nil || j.plan.RenewalInfo == nil {
		return func(*certState) {}
	}
	retryLater := func(d time.Duration) func(*certState) {
		return func(s *certState) { s.ariNotBefore = time.Now().Add(d) }
	}
	p := l.a.policy.WithDefaults()
	b, _, err := l.a.opts.Store.LoadCertificate(ctx, j.cert.Name)
	if err != nil {
		log.ErrorContext(ctx, "reading the live certificate to ask for its renewal window", "error", err)
		return retryLater(p.ARIRetry())
	}
	leaf, err := parseLeaf(b.CertPEM)
	if err != nil {
		log.ErrorContext(ctx, "reading the live certificate to ask for its renewal window", "error", err)
		return retryLater(p.ARIRetry())
	}
	ri, err := j.plan.RenewalInfo(ctx, *j.rec, leaf)
	l.a.opts.Metrics.ariPoll(err)
	if err != nil {
		if errors.Is(err, acme.ErrUnsupported) {
			log.DebugContext(ctx, "the CA offers no renewal information; following the lifetime rule")
			return retryLater(p.ARIPollMax)
		}
		if ctx.Err() == nil {
			log.WarnContext(ctx, "asking the CA for the renewal window failed; following the last known one", "error", err)
		}
		return retryLater(p.ARIRetry())
	}
	now := time.Now()
	w := renew.WindowOf(ri, now)
	if renew.WindowPassed(w) {
		log.WarnContext(ctx, "the CA asks for this certificate to be replaced now (revoked?)", "window_end", w.End, "explanation", w.ExplanationURL)
	} else {
		log.DebugContext(ctx, "renewal window", "start", w.Start, "end", w.End, "retry_after", w.RetryAfter)
	}
	saved, err := renew.SaveWindow(ctx, l.a.opts.Store, j.cert.Name, j.rec.Serial, w)
	if err != nil {
		log.WarnContext(ctx, "could not store the renewal window; keeping it in memory", "error", err)
	}
	return func(s *certState) {
		s.ariNotBefore = time.Time{}
		switch {
		case saved != nil:
			s.rec = saved
		case s.rec != nil && s.rec.Serial == j.rec.Serial:
			r := *s.rec
			r.ARI = w
			s.rec = &r
		}
	}
}

// maybeNotify tells the plan's notifier that rec failed to renew, when it
// is within NotifyWithin of expiry, at most once per NotifyEvery.
func (l *loop) maybeNotify(ctx context.Context, j job, rec store.Record) {
	n := j.plan.Notifier
	if n == nil || rec.Last == nil || rec.Last.OK {
		return
	}
	left := time.Until(rec.NotAfter)
	if left > j.plan.NotifyWithin {
		return
	}
	notice := Notice{Name: rec.Name, Identifiers: rec.Identifiers, NotAfter: rec.NotAfter, Error: rec.Last.Error,
		Failures: rec.Last.Failures, LastAttempt: rec.Last.Time}
	l.notifyMu.Lock()
	if last, ok := l.notified[rec.Name]; ok && time.Since(last) < l.a.opts.NotifyEvery {
		l.notifyMu.Unlock()
		return
	}
	l.notified[rec.Name] = time.Now()
	l.notifyMu.Unlock()
	if err := n.Notify(context.WithoutCancel(ctx), notice); err != nil {
		l.a.opts.Metrics.notification(err)
		l.a.log.ErrorContext(ctx, "notifying about a failing certificate failed", "certificate", rec.Name, "error", err)
		return
	}
	l.a.opts.Metrics.notification(nil)
	l.a.log.WarnContext(ctx, "notified: certificate close to expiry and failing to renew", "certificate", rec.Name,
		"not_after", rec.NotAfter, "failures", rec.Last.Failures)
}

func joinUsed(used map[string]string) string {
	var out []string
	for _, p := range used {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func parseLeaf(p []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil, errors.New("no PEM certificate in the live cert.pem")
	}
	return x509.ParseCertificate(b.Bytes)
}
