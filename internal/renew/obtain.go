package renew

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/deploy"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
)

// candidates maps each identifier to the paths whose Check passed for it, in
// the order of preference.
type candidates map[ident.Identifier][]solve.Path

// Preflight runs every path's Check for every identifier, without asking the
// CA anything. It fails when some identifier has no path that can work, with
// each path's reason.
func (m *Manager) Preflight(ctx context.Context, req Request) (candidates, error) {
	if len(req.Paths) == 0 {
		return nil, errors.New("no validation path configured; list one in paths = [...] or pass --path")
	}
	out := make(candidates, len(req.Identifiers))
	var problems []string
	for _, id := range req.Identifiers {
		var reasons []string
		for _, p := range req.Paths {
			typ := p.Solver.Type()
			if !solve.Applicable(typ, id) {
				why := solve.NotApplicableReason(typ, id, nil)
				reasons = append(reasons, fmt.Sprintf("%s (%s): %s", p.Name, typ, why))
				req.progress.skip(id.Value, p.Name, "", why)
				continue
			}
			if err := p.Solver.Check(ctx, id); err != nil {
				reasons = append(reasons, fmt.Sprintf("%s (%s): %v", p.Name, typ, err))
				req.progress.skip(id.Value, p.Name, "", "its check failed: "+err.Error())
				m.log.InfoContext(ctx, "path passed over", "identifier", id.Value, "path", p.Name, "reason", err)
				continue
			}
			out[id] = append(out[id], p)
		}
		if len(out[id]) == 0 {
			problems = append(problems, fmt.Sprintf("no path can validate %s:\n    %s", id.Value, strings.Join(reasons, "\n    ")))
		}
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n  "))
	}
	return out, nil
}

// presented is one challenge put in place.
type presented struct {
	authzURL string
	path     solve.Path
	wireCh   acme.Challenge
	ch       solve.Challenge
}

// Obtain gets a certificate for req and, unless req.DryRun, stores it as the
// new live version and records how it was obtained. A failure at any stage
// leaves the live certificate untouched.
func (m *Manager) Obtain(ctx context.Context, req Request) (Result, error) {
	start := m.now()
	req.progress = newProgress(req, m.now)
	res := Result{Name: req.Name, PathUsed: map[string]string{}}
	keepMarker := false // the store is left for Sweep to finish
	fail := func(stage string, asked bool, err error) (Result, error) {
		return res, &Error{Name: req.Name, Stage: stage, AskedCA: asked, Err: err}
	}
	if err := store.ValidName(req.Name); err != nil {
		return fail("preflight", false, err)
	}
	unlock, err := m.store.TryLock(ctx, req.Name)
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			err = fmt.Errorf("another detour process is working on this certificate; try again when it has finished: %w", err)
		}
		return fail("preflight", false, err)
	}
	defer unlock()
	if req.Expect != nil && !req.DryRun {
		if err := m.checkExpected(ctx, req); err != nil {
			return res, err
		}
	}
	if !req.DryRun {
		// A certificate issued earlier and not stored yet is this
		// renewal's result: no new order.
		installed, err := m.installIssued(ctx, req)
		if err != nil {
			return fail("store", false, err)
		}
		if installed != nil {
			req.progress.emit(Event{Kind: EventStored, Version: installed.Version, Serial: installed.Serial, NotAfter: installed.NotAfter,
				LiveDir: m.store.LiveDir(req.Name), Detail: "issued by an earlier run that could not store it; no new order"})
			installed.Elapsed = m.now().Sub(start)
			return *installed, nil
		}
	}
	if err := m.sweepLocked(ctx, req); err != nil {
		if rerr := m.store.Recover(ctx, req.Name); rerr != nil {
			return fail("store", false, rerr)
		}
		m.log.WarnContext(ctx, "finishing an interrupted renewal", "certificate", req.Name, "error", err)
	}
	if !req.DryRun {
		// Marks the renewal under way until it returns, so that after a
		// crash Pending names the certificate and Sweep repairs it.
		if err := m.store.Store(ctx, renewingKey(req.Name), []byte(m.now().UTC().Format(time.RFC3339))); err != nil {
			return fail("store", false, fmt.Errorf("marking the renewal under way: %w", err))
		}
		defer func() {
			if !keepMarker {
				_ = m.store.Delete(context.WithoutCancel(ctx), renewingKey(req.Name))
			}
		}()
	}

	cands, err := m.Preflight(ctx, req)
	if err != nil {
		return fail("preflight", false, err)
	}
	keyType := req.KeyType
	if keyType == "" {
		keyType = acme.ECDSAP256
	}
	// The CA is asked from here on; the profile check needs the directory.
	if err := req.CA.Client.CheckProfile(ctx, req.Profile); err != nil {
		return fail("order", false, err)
	}
	acct, registered, err := m.accountNew(ctx, req.CA, false)
	if err != nil {
		return fail("account", false, err)
	}
	req.progress.emit(Event{Kind: EventAccount, URL: acct.Location, Registered: registered})
	if req.SelfCheck != nil {
		if cands, err = m.probe(ctx, req, acct, cands); err != nil {
			return fail("self-check", false, err)
		}
	}
	replaces := func(acct acme.Account) string {
		if req.Replaces != "" && req.ReplacesAccount != "" && req.ReplacesAccount != acct.Location {
			// Issued to another account (a lost key made a new one): the
			// CA refuses "replaces" from this one.
			m.log.InfoContext(ctx, "ordering without replaces: the certificate was issued to another account",
				"certificate", req.Name, "account", acct.Location, "issued_to", req.ReplacesAccount)
			return ""
		}
		return req.Replaces
	}
	order, err := req.CA.Client.NewOrder(ctx, acct, acme.OrderRequest{Identifiers: req.Identifiers, Profile: req.Profile, Replaces: replaces(acct)})
	if err != nil && (acme.IsProblem(err, "urn:ietf:params:acme:error:accountDoesNotExist") || acme.IsProblem(err, "urn:ietf:params:acme:error:unauthorized") || keyNotAccounts(err)) {
		m.log.WarnContext(ctx, "the CA does not know the stored account, or not with this key; registering again", "ca", req.CA.Client.DirectoryURL(), "error", err)
		if acct, registered, err = m.accountNew(ctx, req.CA, true); err == nil {
			req.progress.emit(Event{Kind: EventAccount, URL: acct.Location, Registered: registered})
			order, err = req.CA.Client.NewOrder(ctx, acct, acme.OrderRequest{Identifiers: req.Identifiers, Profile: req.Profile, Replaces: replaces(acct)})
		}
	}
	if err != nil {
		return fail("order", false, err)
	}
	m.log.InfoContext(ctx, "order created", "certificate", req.Name, "order", order.Location, "identifiers", ident.Values(req.Identifiers))
	req.progress.emit(Event{Kind: EventOrder, URL: order.Location, Identifiers: ident.Values(req.Identifiers), Profile: req.Profile})

	if err := m.authorize(ctx, req, acct, order, cands, res.PathUsed); err != nil {
		var pe *presentError
		if errors.As(err, &pe) {
			return fail("self-check", false, err)
		}
		return fail("validation", true, err)
	}

	certKey, err := keyType.Generate()
	if err != nil {
		return fail("finalize", true, err)
	}
	csr, err := acme.CSR(certKey, req.Identifiers)
	if err != nil {
		return fail("finalize", true, err)
	}
	order, err = req.CA.Client.Finalize(ctx, acct, order, csr)
	if err != nil {
		return fail("finalize", true, err)
	}
	leafPEM, chainPEM, ri, err := req.CA.Client.Chain(ctx, acct, order.Certificate, req.PreferredChain)
	if err != nil {
		return fail("finalize", true, err)
	}
	keyPEM, err := acme.EncodeKey(certKey)
	if err != nil {
		return fail("finalize", true, err)
	}
	leaf, err := parseLeaf(leafPEM)
	if err != nil {
		return fail("finalize", true, err)
	}
	res.NotBefore, res.NotAfter = leaf.NotBefore, leaf.NotAfter
	res.Serial = leaf.SerialNumber.Text(16)
	req.progress.emit(Event{Kind: EventFinalize, Serial: res.Serial, NotAfter: res.NotAfter})
	if ri != nil {
		res.ARI = WindowOf(*ri, m.now())
	} else {
		res.ARI = m.fetchARI(ctx, req.CA.Client, leaf)
	}
	if req.DryRun {
		res.Elapsed = m.now().Sub(start)
		m.log.InfoContext(ctx, "dry run succeeded; nothing stored", "certificate", req.Name, "not_after", leaf.NotAfter)
		return res, nil
	}

	// The CA has issued: from here on a cancellation (SIGTERM, a reload)
	// must not stop between the switch of live/ and the save of the record,
	// nor throw away a certificate that counted against the rate limits.
	// The steps are local and short; they get their own deadline.
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer scancel()
	bundle := store.Bundle{CertPEM: leafPEM, ChainPEM: chainPEM, KeyPEM: keyPEM}
	kept := m.keepIssued(sctx, req, pendingIssued{Bundle: bundle, Account: acct.Location, KeyType: string(keyType), PathUsed: res.PathUsed, Issued: m.now()})
	if kept != nil {
		m.log.ErrorContext(ctx, "could not keep the issued certificate aside before storing it", "certificate", req.Name, "error", kept)
	}
	version, err := m.store.PutCertificate(sctx, req.Name, bundle)
	if err != nil {
		if kept == nil {
			keepMarker = true
			return fail("store", true, fmt.Errorf("%w; the issued certificate (serial %s) is kept in %s and stored by the next run (detour renew, or the agent) once this is fixed: no new order is needed", err, res.Serial, issuedKey(req.Name)))
		}
		return fail("store", true, fmt.Errorf("%w; the issued certificate (serial %s) could not be kept either: %v", err, res.Serial, kept))
	}
	res.Version = version
	rec := recordFor(req, leaf, bundle, version)
	rec.Account, rec.KeyType, rec.Issued, rec.ARI = acct.Location, string(keyType), m.now(), res.ARI
	rec.Last = &store.Attempt{Time: m.now(), OK: true, Path: joinPaths(res.PathUsed)}
	if err := m.store.SaveRecord(sctx, rec); err != nil {
		keepMarker = true // Sweep rebuilds the record from live/
		return fail("store", true, fmt.Errorf("the certificate is live (version %d) but its record could not be saved: %w", version, err))
	}
	if kept == nil {
		if err := m.store.Delete(sctx, issuedKey(req.Name)); err != nil {
			m.log.WarnContext(ctx, "removing the note of the issued certificate", "certificate", req.Name, "error", err)
		}
	}
	res.Elapsed = m.now().Sub(start)
	m.log.InfoContext(ctx, "certificate stored", "certificate", req.Name, "version", version, "not_after", leaf.NotAfter, "elapsed", res.Elapsed)
	req.progress.emit(Event{Kind: EventStored, Version: version, Serial: res.Serial, NotAfter: res.NotAfter, LiveDir: m.store.LiveDir(req.Name)})
	if plan := m.planOf(req); !plan.Empty() {
		info := deploy.Info{Name: req.Name, Domains: rec.Identifiers, LiveDir: m.store.LiveDir(req.Name), Version: version, NotAfter: leaf.NotAfter}
		err := m.deployLive(ctx, req, info)
		if err != nil {
			res.DeployErr = err
			m.log.ErrorContext(ctx, "deploy failed; the new certificate is live", "certificate", req.Name, "error", err)
		} else {
			m.log.InfoContext(ctx, "deployed", "certificate", req.Name, "command", plan.Hook.Command, "outputs", len(plan.Outputs), "reloads", len(plan.Reloads))
		}
		req.progress.emit(Event{Kind: EventDeployed, Hook: plan.Hook.Command, Outputs: len(plan.Outputs), Reloads: len(plan.Reloads), Err: err})
	}
	return res, nil
}

// checkExpected returns a *SupersededError when req's certificate is no
// longer req.Expect. The caller holds the certificate's lock, so nobody
// can renew it between this check and the order. An unreadable record is
// not a reason to stop (the renewal rebuilds it).
func (m *Manager) checkExpected(ctx context.Context, req Request) error {
	rec, err := m.store.LoadRecord(ctx, req.Name)
	var now *store.Record
	switch {
	case err == nil:
		now = &rec
	case errors.Is(err, fs.ErrNotExist):
	default:
		return nil
	}
	if ExpectedOf(now) == *req.Expect {
		return nil
	}
	return &SupersededError{Name: req.Name, Expected: *req.Expect, Record: now}
}

// keyNotAccounts reports an error saying the request's signature does not
// verify with the account's key: the stored key is not the account's
// (lost and replaced by a new one, with an account record that predates
// thumbprints).
func keyNotAccounts(err error) bool {
	var p acme.Problem
	return errors.As(err, &p) && p.Type == "urn:ietf:params:acme:error:malformed" && strings.Contains(strings.ToLower(p.Detail), "jws verification")
}

// recordFor describes version of req's certificate, whose leaf is leaf
// and files bundle: how it was obtained (req) and what it is (leaf).
func recordFor(req Request, leaf *x509.Certificate, bundle store.Bundle, version int) store.Record {
	ariID, _ := acme.ARIID(leaf)
	keyType := req.KeyType
	if keyType == "" {
		keyType = acme.ECDSAP256
	}
	return store.Record{
		Name: req.Name, Identifiers: ident.Values(req.Identifiers),
		CA: req.CA.Client.DirectoryURL(), CAName: req.CA.Name, RootBundle: req.CA.RootBundle, Email: req.CA.Email,
		KeyType: string(keyType), Profile: req.Profile, PreferredChain: req.PreferredChain,
		Paths: req.Refs, DeployHook: req.DeployHook.Command, NoSelfCheck: req.SelfCheck == nil,
		Version: version, Serial: leaf.SerialNumber.Text(16), ARIID: ariID, LiveSum: bundle.LiveSum(),
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Issued: leaf.NotBefore,
	}
}

func joinPaths(used map[string]string) string {
	seen := map[string]bool{}
	var out []string
	for _, p := range used {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return strings.Join(out, ",")
}

// authorize answers every pending authorization of order: per identifier it
// presents the first candidate path the CA offers a challenge for (falling
// back to the next when Present fails), waits for Waiters in parallel, then
// asks the CA and waits for all validations in parallel. Everything
// presented is cleaned up, even when ctx is cancelled.
func (m *Manager) authorize(ctx context.Context, req Request, acct acme.Account, order acme.Order, cands candidates, used map[string]string) error {
	var done []presented
	j := &journal{m: m, name: req.Name}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cleanup)
		defer cancel()
		failed := false
		for _, p := range done {
			if err := p.path.Solver.CleanUp(cctx, p.ch); err != nil {
				failed = true
				m.log.ErrorContext(cctx, "cleaning up challenge failed", "identifier", p.ch.Identifier.Value, "path", p.path.Name, "error", err)
			}
		}
		if !failed && !req.DryRun {
			j.entries = nil
			if err := j.save(cctx); err != nil {
				m.log.WarnContext(cctx, "clearing the cleanup journal", "certificate", req.Name, "error", err)
			}
		}
	}()
	for _, url := range order.Authorizations {
		authz, err := req.CA.Client.Authorization(ctx, acct, url)
		if err != nil {
			return err
		}
		id, err := authzIdentifier(authz)
		if authz.Status == "valid" {
			req.progress.emit(Event{Kind: EventAuthz, Identifier: id.Value, Reason: ReasonReused})
			continue
		}
		if err != nil {
			return err
		}
		p, err := m.present(ctx, req, acct.Location, url, authz, id, cands, j)
		if err != nil {
			return err
		}
		done = append(done, p)
		used[id.Value] = p.path.Name
	}
	if err := m.waitAll(ctx, req, done); err != nil {
		return err
	}
	errs := make([]error, len(done))
	var wg sync.WaitGroup
	for i, p := range done {
		wg.Go(func() {
			ev := Event{Kind: EventValidation, Identifier: p.ch.Identifier.Value, Path: p.path.Name, Challenge: p.ch.Type}
			if err := req.CA.Client.Accept(ctx, acct, p.wireCh); err != nil {
				errs[i] = err
				ev.Err = err
				req.progress.emit(ev)
				return
			}
			_, polls, err := req.CA.Client.WaitAuthorizationPolls(ctx, acct, p.authzURL)
			if err != nil {
				errs[i] = explainValidation(err, p.path)
				ev.Err = errs[i]
			}
			ev.Polls = polls
			req.progress.emit(ev)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func authzIdentifier(a acme.Authorization) (ident.Identifier, error) {
	v := a.Identifier.Value
	if a.Wildcard {
		v = "*." + v
	}
	id, err := ident.Parse(v)
	if err != nil {
		return id, fmt.Errorf("the CA sent an authorization for %q: %w", v, err)
	}
	return id, nil
}

// present picks the first candidate path for id whose challenge type the CA
// offers and whose Present succeeds.
func (m *Manager) present(ctx context.Context, req Request, acctURL, url string, authz acme.Authorization, id ident.Identifier, cands candidates, j *journal) (presented, error) {
	offered := make(map[string]acme.Challenge, len(authz.Challenges))
	var types []string
	for _, c := range authz.Challenges {
		offered[c.Type] = c
		types = append(types, c.Type)
	}
	var reasons []string
	for _, p := range cands[id] {
		typ := p.Solver.Type()
		wc, ok := offered[typ]
		if !ok {
			why := fmt.Sprintf("the CA does not offer %s for %s (it offers %s)", typ, id.Value, strings.Join(types, ", "))
			reasons = append(reasons, fmt.Sprintf("%s: %s", p.Name, why))
			req.progress.skip(id.Value, p.Name, "", why)
			continue
		}
		ch := solve.Challenge{Type: typ, Identifier: id, Token: wc.Token, KeyAuthorization: wc.KeyAuthorization,
			IssuerDomainNames: wc.IssuerDomainNames, AccountURL: acctURL}
		// dns-persist-01 challenges carry no token (draft-ietf-acme-dns-persist §3.1).
		if typ != solve.DNSPersist01 && !solve.ValidToken(ch.Token) {
			return presented{}, fmt.Errorf("the CA sent a malformed token %q for %s", ch.Token, id.Value)
		}
		// Written before Present, so that a crash leaves the challenge
		// for Sweep to clean up.
		entry := journalEntry{Path: p.Name, Challenge: ch}
		if !req.DryRun {
			if err := j.add(ctx, entry); err != nil {
				return presented{}, err
			}
		}
		req.progress.emit(req.progress.chosen(id.Value, p.Name, typ))
		if err := m.presentChecked(ctx, req, p, ch); err != nil {
			reasons = append(reasons, fmt.Sprintf("%s: %v", p.Name, err))
			m.log.WarnContext(ctx, "path passed over; trying the next", "identifier", id.Value, "path", p.Name, "error", err)
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cleanup)
			if err := p.Solver.CleanUp(cctx, ch); err == nil && !req.DryRun {
				j.drop(cctx, entry)
			}
			cancel()
			continue
		}
		m.log.InfoContext(ctx, "challenge presented", "identifier", id.Value, "path", p.Name, "challenge", typ)
		return presented{authzURL: url, path: p, wireCh: wc, ch: ch}, nil
	}
	return presented{}, &presentError{fmt.Errorf("no path could answer %s:\n    %s", id.Value, strings.Join(reasons, "\n    "))}
}

// presentError reports that no path could present (or self-check) an
// answer, so the CA was not asked to validate anything.
type presentError struct{ err error }

func (e *presentError) Error() string { return e.err.Error() }
func (e *presentError) Unwrap() error { return e.err }

// presentChecked presents ch on p and, when the request asks for it, checks
// the answer from outside before the CA is asked. Waiters (DNS) are waited
// for later, together; they are not self-checked here.
func (m *Manager) presentChecked(ctx context.Context, req Request, p solve.Path, ch solve.Challenge) error {
	if err := p.Solver.Present(ctx, ch); err != nil {
		req.progress.emit(Event{Kind: EventAuthz, Identifier: ch.Identifier.Value, Path: p.Name, Challenge: ch.Type, Err: err})
		req.progress.skip(ch.Identifier.Value, p.Name, EventAuthz, "putting the answer in place failed: "+err.Error())
		return err
	}
	if req.SelfCheck == nil {
		return nil
	}
	if _, waits := p.Solver.(solve.Waiter); waits {
		return nil
	}
	ev := Event{Kind: EventSelfCheck, Identifier: ch.Identifier.Value, Path: p.Name, Challenge: ch.Type}
	if err := req.SelfCheck(ctx, p, ch); err != nil {
		ev.Err = err
		req.progress.emit(ev)
		req.progress.skip(ch.Identifier.Value, p.Name, EventSelfCheck, "its self-check failed: "+err.Error())
		return fmt.Errorf("self-check failed, so the CA was not asked: %w", err)
	}
	m.log.InfoContext(ctx, "self-check passed", "identifier", ch.Identifier.Value, "path", p.Name, "challenge", ch.Type)
	req.progress.emit(ev)
	return nil
}

// waitAll waits, in parallel, for every presented challenge whose solver is a
// solve.Waiter.
func (m *Manager) waitAll(ctx context.Context, req Request, ps []presented) error {
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		w, ok := p.path.Solver.(solve.Waiter)
		if !ok {
			continue
		}
		wg.Go(func() {
			err := w.Wait(ctx, p.ch)
			if err != nil {
				errs[i] = fmt.Errorf("waiting for %s on path %s: %w", p.ch.Identifier.Value, p.path.Name, err)
			}
			req.progress.emit(Event{Kind: EventWait, Identifier: p.ch.Identifier.Value, Path: p.path.Name, Challenge: p.ch.Type, Err: err})
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// fetchARI asks the CA for the renewal window of leaf; failures are logged
// and yield nil (the schedule then falls back to the lifetime rule).
func (m *Manager) fetchARI(ctx context.Context, c *acme.Client, leaf *x509.Certificate) *store.ARIWindow {
	ri, err := c.RenewalInfo(ctx, leaf)
	if err != nil {
		if !errors.Is(err, acme.ErrUnsupported) {
			m.log.WarnContext(ctx, "no renewal window from the CA", "error", err)
		}
		return nil
	}
	return WindowOf(ri, m.now())
}

// WindowOf is the window the CA answered, as a record keeps it, fetched at
// now.
func WindowOf(ri acme.RenewalInfo, now time.Time) *store.ARIWindow {
	w := &store.ARIWindow{Start: ri.SuggestedWindow.Start, End: ri.SuggestedWindow.End, ExplanationURL: ri.ExplanationURL, Fetched: now}
	if ri.RetryAfter != nil {
		w.RetryAfter = *ri.RetryAfter
	}
	return w
}

// storeTimeout bounds the local steps that store an issued certificate;
// they run even when the renewal's context is cancelled.
const storeTimeout = time.Minute

func parseLeaf(p []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil, errors.New("no certificate PEM block")
	}
	return x509.ParseCertificate(b.Bytes)
}
