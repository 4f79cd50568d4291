package renew

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/store"
)

// Target is one certificate as the plan knows it: what the renewal step
// needs to decide and to build an attempt.
type Target struct {
	// Name is the certificate's name in the store.
	Name string
	// Identifiers are the names it must cover; when the record's differ
	// (names added to the configuration) it is due at once. Empty:
	// whatever the record says.
	Identifiers []string
	// CAs names the CAs in order: the primary, then the fallbacks.
	CAs []string
	// AfterFailures is how many consecutive failures a CA gets before the
	// next one is tried (see CAIndex).
	AfterFailures int
	// Binds are the addresses the certificate's paths bind while they
	// answer: two renewals binding one address cannot run at once (the
	// agent keeps them apart).
	Binds []string
	// Request plans one attempt on CA number ca of CAs. release frees
	// what the request holds (listeners, clients) once the attempt is over.
	Request func(ctx context.Context, ca int) (req Request, release func(), err error)
}

// CAName returns the name of CA number i of t.
func (t Target) CAName(i int) string {
	if i < len(t.CAs) {
		return t.CAs[i]
	}
	return fmt.Sprintf("ca-%d", i)
}

// StepOptions tune one renewal step.
type StepOptions struct {
	// Force renews whether due or not (detour issue, renew --force, and
	// the agent, whose own schedule decided).
	Force bool
	// Frac places the renewal inside its window and RetryFrac jitters the
	// backoff after a failure (see Policy.Due); the agent draws them once
	// per window, one-off callers pass a fresh random fraction and 1.
	Frac, RetryFrac float64
	// Last is the last attempt the caller keeps for a certificate that
	// has no record yet (the agent keeps one in memory); nil: none.
	Last *store.Attempt
	// Record is the certificate's record as the caller has just read it
	// (detour renew lists them all at once); nil makes the step read it.
	Record *store.Record
	// DryRun runs against the CA's staging directory and stores nothing:
	// not the certificate (the request says so), not a failure either.
	DryRun bool
	// Manual marks an attempt the user asked for (detour issue): it runs
	// on the primary CA whatever failed before, and its failure is not
	// recorded, so that it does not move the schedule of renewals.
	Manual bool
	// Expect is the certificate a forced step was decided on (the
	// agent's view of it): when the record no longer describes it,
	// another process renewed it and the step orders nothing (Outcome
	// Superseded). An unforced step decides on the record it reads and
	// expects that one.
	Expect *Expected
	// Progress, when set, becomes the request's Progress: it receives each
	// step of the attempt as it ends (see Request.Progress).
	Progress func(Event)
}

// Outcome is what one renewal step did.
type Outcome struct {
	// Decision says why the step ran, or why it did nothing (Due false).
	Decision Decision
	// Broken is what is wrong with the live pair, when something is.
	Broken *store.LiveError
	// Ran reports that an attempt was made (Due, or forced).
	Ran bool
	// CAIndex and CA name the CA the attempt used.
	CAIndex int
	CA      string
	// Paths names the request's paths in order, comma-separated.
	Paths string
	// Result describes the certificate obtained.
	Result Result
	// Err is the attempt's failure.
	Err error
	// Interrupted reports a failure caused by the context ending: not the
	// certificate's failure, and not recorded.
	Interrupted bool
	// Attempt is the failed attempt (Err set, neither Interrupted nor
	// another process's lock); Record is the record it went into, nil
	// when none holds it (a certificate never issued, a dry run, a manual
	// attempt, an unreadable record) or saving it failed.
	Attempt *store.Attempt
	Record  *store.Record
	// Superseded reports that another process renewed the certificate
	// since the decision: nothing was ordered, and Record is the record
	// now (nil when there is none).
	Superseded bool
}

// Records is the part of the store the renewal step reads and writes;
// *store.FS implements it.
type Records interface {
	LoadRecord(ctx context.Context, name string) (store.Record, error)
	SaveRecord(ctx context.Context, r store.Record) error
	TryLock(ctx context.Context, name string) (unlock func() error, err error)
}

// ARIFetcher asks the CA that issued rec for the renewal window of its
// live certificate; acme.ErrUnsupported (wrapped) when the CA has no ARI.
type ARIFetcher func(ctx context.Context, rec store.Record) (*store.ARIWindow, error)

// LiveChecker verifies a certificate's live pair against its record
// (*store.FS implements it; see store.FS.CheckLive). A Records that is one
// has the step renew a broken pair at once.
type LiveChecker interface {
	CheckLive(name string, rec store.Record, now time.Time) error
}

// Obtainer obtains one certificate; *Manager implements it.
type Obtainer interface {
	Obtain(ctx context.Context, req Request) (Result, error)
}

// Step is the renewal step over its parts. Manager.Renew runs it on the
// manager's own; the agent runs it on its Obtainer and Store.
type Step struct {
	Obtainer Obtainer // required
	Records  Records  // required
	Policy   Policy
	// RenewalInfo, when set, asks the CA that issued a certificate for its
	// renewal window (RFC 9773): the step polls it before deciding, when
	// the last answer's Retry-After has passed (at least daily), so that a
	// revocation or an early renewal the CA asks for is acted on from cron
	// as from the agent. Forced steps do not poll.
	RenewalInfo ARIFetcher
	Logger      *slog.Logger // nil discards
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Renew runs the renewal step (see Step.Run) with the manager's store and
// policy.
func (m *Manager) Renew(ctx context.Context, t Target, opt StepOptions) Outcome {
	return Step{Obtainer: m, Records: m.store, Policy: m.policy, RenewalInfo: m.ari, Logger: m.log, Now: m.now}.Run(ctx, t, opt)
}

// Run runs one renewal step for t: due? (unless forced) -> which CA (the
// next fallback after repeated failures) -> replaces (the ARI id of the
// certificate replaced, when the CA is the one that issued it) -> Obtain ->
// the attempt recorded (path, CA, error, consecutive failures, the CA's
// Retry-After), so that the schedule backs off. `detour renew`, `detour
// issue`, the agent and the DNS server's own certificate all run it.
func (m Step) Run(ctx context.Context, t Target, opt StepOptions) Outcome {
	if m.Logger == nil {
		m.Logger = slog.New(slog.DiscardHandler)
	}
	if m.Now == nil {
		m.Now = time.Now
	}
	var out Outcome
	recp := opt.Record
	if recp == nil {
		rec, err := m.Records.LoadRecord(ctx, t.Name)
		switch {
		case err == nil:
			recp = &rec
		case !errors.Is(err, fs.ErrNotExist):
			// Nothing was attempted, but the caller backs off as after a
			// failure: the record cannot be read, so none can hold it.
			out.Err = fmt.Errorf("reading the certificate's record: %w", err)
			out.Interrupted = ctx.Err() != nil
			if !out.Interrupted {
				a := store.Attempt{Time: m.Now(), Error: out.Err.Error(), Failures: 1}
				if opt.Last != nil && !opt.Last.OK {
					a.Failures = opt.Last.Failures + 1
				}
				out.Attempt = &a
			}
			return out
		}
	}
	expect := opt.Expect
	if expect != nil && opt.Force && ExpectedOf(recp) != *expect && !opt.DryRun {
		m.Logger.InfoContext(ctx, "renewed meanwhile by another process; nothing to do", "certificate", t.Name, "version", ExpectedOf(recp).Version)
		return Outcome{Superseded: true, Record: recp}
	}
	if recp != nil && !opt.Force && m.RenewalInfo != nil && !m.Now().Before(m.Policy.ARIPollAt(recp.ARI, m.Now())) {
		recp = m.pollWindow(ctx, *recp)
	}
	out.Decision = m.Policy.DueFor(recp, opt.Last, t.Identifiers, m.Now(), opt.Frac, opt.RetryFrac)
	if lc, ok := m.Records.(LiveChecker); ok && recp != nil {
		// The record says how things should be; live/ is what servers
		// read. A broken pair is renewed at once (unless backing off).
		var le *store.LiveError
		if err := lc.CheckLive(t.Name, *recp, m.Now()); errors.As(err, &le) && !le.Expired {
			out.Broken = le
			if d := m.Policy.DueFor(nil, recp.Last, nil, m.Now(), opt.Frac, opt.RetryFrac); d.Due {
				out.Decision = Decision{Due: true, At: d.At, Reason: le.Error()}
			} else if !out.Decision.Due {
				out.Decision = d
			}
		}
	}
	if !out.Decision.Due && !opt.Force {
		return out
	}
	out.Ran = true
	if !opt.Force {
		e := ExpectedOf(recp)
		expect = &e
	}
	if out.Decision.Due && !opt.Force {
		m.Logger.InfoContext(ctx, "due", "certificate", t.Name, "reason", out.Decision.Reason)
	}
	failures := 0
	last := opt.Last
	if recp != nil {
		last = recp.Last
	}
	if last != nil && !last.OK {
		failures = last.Failures
	}
	if !opt.Manual {
		out.CAIndex = CAIndex(failures, t.AfterFailures, len(t.CAs))
	}
	out.CA = t.CAName(out.CAIndex)
	log := m.Logger.With("certificate", t.Name)
	if out.CAIndex > 0 {
		log.WarnContext(ctx, "using a fallback CA after repeated failures", "ca", out.CA, "failures", failures)
	}

	req, release, err := t.Request(ctx, out.CAIndex)
	if err != nil {
		return m.failed(ctx, out, t, recp, failures, fmt.Errorf("planning the renewal: %w", err), time.Time{}, opt)
	}
	out.Paths = pathNames(req)
	if recp != nil && recp.ARIID != "" && req.CA.Client != nil && recp.CA == req.CA.Client.DirectoryURL() {
		req.Replaces, req.ReplacesAccount = recp.ARIID, recp.Account
	}
	req.Expect = expect
	if opt.Progress != nil {
		req.Progress = opt.Progress
	}
	out.Result, err = m.Obtainer.Obtain(ctx, req)
	release()
	if err == nil {
		return out
	}
	var se *SupersededError
	if errors.As(err, &se) {
		m.Logger.InfoContext(ctx, "renewed meanwhile by another process; nothing ordered", "certificate", t.Name, "version", ExpectedOf(se.Record).Version)
		return Outcome{Decision: out.Decision, Superseded: true, Record: se.Record}
	}
	var retry time.Time
	var ra *acme.RetryAfterError
	if errors.As(err, &ra) {
		retry = ra.Until
	} else if req.CA.Client != nil {
		if at := req.CA.Client.RetryAfter(); at.After(m.Now()) {
			retry = at
		}
	}
	return m.failed(ctx, out, t, recp, failures, err, retry, opt)
}

// failed completes out with the failure err and records the attempt.
func (m Step) failed(ctx context.Context, out Outcome, t Target, rec *store.Record, failures int, err error, retry time.Time, opt StepOptions) Outcome {
	out.Err = err
	if ctx.Err() != nil {
		out.Interrupted = true // shutting down: not the certificate's failure
		return out
	}
	if errors.Is(err, store.ErrLocked) {
		return out // another process is at it; nothing failed
	}
	a := store.Attempt{Time: m.Now(), Error: err.Error(), Failures: failures + 1, RetryAfter: retry, Path: out.Paths, CA: out.CA}
	out.Attempt = &a
	if rec == nil || opt.DryRun || opt.Manual {
		return out
	}
	saved, serr := m.saveAttempt(ctx, t.Name, a)
	if serr != nil {
		m.Logger.WarnContext(ctx, "could not record the failure", "certificate", t.Name, "error", serr)
		return out
	}
	out.Record = &saved
	return out
}

// saveAttempt stores a as the last attempt in name's record, under the
// certificate's lock, even when ctx is cancelled.
func (m Step) saveAttempt(ctx context.Context, name string, a store.Attempt) (store.Record, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	unlock, err := m.Records.TryLock(ctx, name)
	if err != nil {
		return store.Record{}, err
	}
	defer unlock()
	rec, err := m.Records.LoadRecord(ctx, name)
	if err != nil {
		return rec, err
	}
	rec.Last = &a
	return rec, m.Records.SaveRecord(ctx, rec)
}

// pathNames lists the request's paths, comma-separated.
func pathNames(req Request) string {
	names := make([]string, len(req.Paths))
	for i, p := range req.Paths {
		names[i] = p.Name
	}
	return strings.Join(names, ",")
}

// pollWindow asks the CA for rec's renewal window and returns rec with it,
// saved in the record; on failure rec as it was (the last known window is
// followed).
func (m Step) pollWindow(ctx context.Context, rec store.Record) *store.Record {
	w, err := m.RenewalInfo(ctx, rec)
	if err != nil {
		if !errors.Is(err, acme.ErrUnsupported) && ctx.Err() == nil {
			m.Logger.WarnContext(ctx, "asking the CA for the renewal window failed; following the last known one", "certificate", rec.Name, "error", err)
		}
		return &rec
	}
	if WindowPassed(w) {
		m.Logger.WarnContext(ctx, "the CA asks for this certificate to be replaced now (revoked?)", "certificate", rec.Name,
			"window_end", w.End, "explanation", w.ExplanationURL)
	}
	saved, err := SaveWindow(ctx, m.Records, rec.Name, rec.Serial, w)
	if err != nil {
		m.Logger.WarnContext(ctx, "could not store the renewal window", "certificate", rec.Name, "error", err)
		rec.ARI = w
		return &rec
	}
	return saved
}

// SaveWindow stores w in name's record, under its lock, unless the
// certificate changed meanwhile (the record's serial is no longer serial),
// and returns the record as it now is.
func SaveWindow(ctx context.Context, records Records, name, serial string, w *store.ARIWindow) (*store.Record, error) {
	unlock, err := records.TryLock(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rec, err := records.LoadRecord(ctx, name)
	if err != nil {
		return nil, err
	}
	if rec.Serial != serial {
		return &rec, nil // renewed meanwhile; the window is for the old one
	}
	rec.ARI = w
	if err := records.SaveRecord(ctx, rec); err != nil {
		return nil, err
	}
	return &rec, nil
}
