package agent

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
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
	cert     Cert
	rec      *store.Record
	action   string
	reason   string
	ca       int
	failures int
	plan     Plan
}

// caName returns the name of CA number i of c.
func (c Cert) caName(i int) string {
	if i < len(c.CAs) {
		return c.CAs[i]
	}
	return fmt.Sprintf("ca-%d", i)
}

// renew runs one renewal of j's certificate and returns how to update its
// state.
func (l *loop) renew(ctx context.Context, j job) func(*certState) {
	log := l.a.log.With("certificate", j.cert.Name)
	release, err := acquire(ctx, l.renewSem)
	if err != nil {
		return func(*certState) {}
	}
	defer release()
	m := l.a.opts.Metrics
	m.inFlight(1)
	defer m.inFlight(-1)

	caName := j.cert.caName(j.ca)
	if j.ca > 0 {
		log.WarnContext(ctx, "using a fallback CA after repeated failures", "ca", caName, "failures", j.failures)
	}
	log.InfoContext(ctx, "renewing", "reason", j.reason, "ca", caName)
	start := time.Now()
	req, releaseReq, err := j.cert.Request(ctx, j.ca)
	if err != nil {
		m.attempt(caName, "", err)
		return l.failed(ctx, j, caName, "", fmt.Errorf("planning the renewal: %w", err), time.Time{})
	}
	paths := pathNames(req)
	if j.rec != nil && j.rec.ARIID != "" && req.CA.Client != nil && j.rec.CA == req.CA.Client.DirectoryURL() {
		req.Replaces = j.rec.ARIID
	}
	res, err := l.a.opts.Obtainer.Obtain(ctx, req)
	releaseReq()
	if err != nil {
		if ctx.Err() != nil {
			// Shutting down: not the certificate's failure.
			log.InfoContext(ctx, "renewal interrupted by shutdown", "error", err)
			return func(*certState) {}
		}
		if errors.Is(err, store.ErrLocked) {
			log.InfoContext(ctx, "another detour process is renewing this certificate; looking again in a minute")
			return func(s *certState) { s.notBefore = time.Now().Add(time.Minute) }
		}
		m.attempt(caName, paths, err)
		var retry time.Time
		var ra *acme.RetryAfterError
		if errors.As(err, &ra) {
			retry = ra.Until
		} else if req.CA.Client != nil {
			if t := req.CA.Client.RetryAfter(); t.After(time.Now()) {
				retry = t
			}
		}
		return l.failed(ctx, j, caName, paths, err, retry)
	}
	m.attempt(caName, paths, nil)
	log.InfoContext(ctx, "renewed", "version", res.Version, "not_after", res.NotAfter, "serial", res.Serial,
		"path", joinUsed(res.PathUsed), "ca", caName, "elapsed", time.Since(start).Round(time.Millisecond))
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

// failed records a failed attempt (in the record when there is one, with
// the CA's Retry-After), notifies when the certificate is close to expiry,
// and returns the state update.
func (l *loop) failed(ctx context.Context, j job, caName, paths string, cause error, retryAfter time.Time) func(*certState) {
	now := time.Now()
	attempt := store.Attempt{Time: now, Error: cause.Error(), Failures: j.failures + 1, RetryAfter: retryAfter, Path: paths}
	log := l.a.log.With("certificate", j.cert.Name)
	var saved *store.Record
	if j.rec != nil {
		rec, err := l.saveAttempt(ctx, j.cert.Name, attempt)
		if err != nil {
			log.WarnContext(ctx, "could not record the failure; keeping it in memory", "error", err)
			r := *j.rec
			r.Last = &attempt
			saved = &r
		} else {
			saved = &rec
		}
	}
	next := l.a.policy.RetryAt(attempt, 0.5)
	log.ErrorContext(ctx, "renewal failed; the live certificate is untouched", "error", cause, "ca", caName,
		"failures", attempt.Failures, "retry_after", retryAfter, "next_try_about", next.Round(time.Second))
	if saved != nil {
		l.maybeNotify(ctx, j, *saved)
	}
	return func(s *certState) {
		s.retryFrac, s.notBefore = l.a.opts.Rand(), time.Time{}
		if saved != nil {
			s.rec = saved
		} else {
			s.last = &attempt
		}
	}
}

// saveAttempt stores a in name's record, under the certificate's lock.
func (l *loop) saveAttempt(ctx context.Context, name string, a store.Attempt) (store.Record, error) {
	ctx = context.WithoutCancel(ctx)
	unlock, err := l.a.opts.Store.TryLock(ctx, name)
	if err != nil {
		return store.Record{}, err
	}
	defer unlock()
	rec, err := l.a.opts.Store.LoadRecord(ctx, name)
	if err != nil {
		return rec, err
	}
	rec.Last = &a
	return rec, l.a.opts.Store.SaveRecord(ctx, rec)
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
	w := &store.ARIWindow{Start: ri.SuggestedWindow.Start, End: ri.SuggestedWindow.End, ExplanationURL: ri.ExplanationURL, Fetched: now}
	if ri.RetryAfter != nil {
		w.RetryAfter = *ri.RetryAfter
	}
	if renew.WindowPassed(w) {
		log.WarnContext(ctx, "the CA asks for this certificate to be replaced now (revoked?)", "window_end", w.End, "explanation", w.ExplanationURL)
	} else {
		log.DebugContext(ctx, "renewal window", "start", w.Start, "end", w.End, "retry_after", w.RetryAfter)
	}
	saved, err := l.saveWindow(ctx, j.cert.Name, j.rec.Serial, w)
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

// saveWindow stores w in name's record unless the certificate changed
// meanwhile.
func (l *loop) saveWindow(ctx context.Context, name, serial string, w *store.ARIWindow) (*store.Record, error) {
	unlock, err := l.a.opts.Store.TryLock(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rec, err := l.a.opts.Store.LoadRecord(ctx, name)
	if err != nil {
		return nil, err
	}
	if rec.Serial != serial {
		return &rec, nil // renewed meanwhile; the window is for the old one
	}
	rec.ARI = w
	if err := l.a.opts.Store.SaveRecord(ctx, rec); err != nil {
		return nil, err
	}
	return &rec, nil
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

// pathNames lists the request's paths for metrics.
func pathNames(req renew.Request) string {
	names := make([]string, len(req.Paths))
	for i, p := range req.Paths {
		names[i] = p.Name
	}
	return strings.Join(names, ",")
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
