package renew

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/deploy"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
)

// Work a renewal leaves to finish if the process dies is written down
// before it starts, under pending/ in the store:
//
//	pending/<name>.renewing       a renewal is (or was, if it died) under way
//	pending/<name>.cleanup.json   challenges presented and not yet cleaned up
//	pending/<name>.deploy.json    a live version not yet deployed
//	pending/<name>.issued.key     a certificate the CA issued with its key,
//	                              kept until it is stored (a full disk, a
//	                              crash): it is never thrown away nor
//	                              ordered again. A secret by its name (mode
//	                              0600 on disk, encrypted in etcd); before
//	                              it was pending/<name>.issued.json, which
//	                              is still read
//
// A later Obtain of the same certificate, or Sweep, finishes it: Recover of
// an interrupted store, CleanUp of every recorded challenge on the path of
// the same name, and the deploy plan for the live version.
const pendingPrefix = "pending/"

func cleanupKey(name string) string  { return pendingPrefix + name + ".cleanup.json" }
func deployKey(name string) string   { return pendingPrefix + name + ".deploy.json" }
func renewingKey(name string) string { return pendingPrefix + name + ".renewing" }
func issuedKey(name string) string   { return pendingPrefix + name + ".issued.key" }

// legacyIssuedKey is where earlier versions kept an issued
// certificate: a name the stores did not treat as a secret, so the private
// key in it was world-readable on disk and not encrypted in etcd.
func legacyIssuedKey(name string) string { return pendingPrefix + name + ".issued.json" }

// pendingSuffixes are the endings of the keys under pending/.
var pendingSuffixes = []string{".renewing", ".cleanup.json", ".deploy.json", ".issued.key", ".issued.json"}

// pendingIssued is a certificate the CA issued, kept until it is stored.
type pendingIssued struct {
	Bundle   store.Bundle      `json:"bundle"`
	Account  string            `json:"account"`
	KeyType  string            `json:"key_type"`
	PathUsed map[string]string `json:"path_used,omitempty"`
	Issued   time.Time         `json:"issued"`
}

// journalEntry is one challenge that may be in place.
type journalEntry struct {
	Path      string          `json:"path"`
	Challenge solve.Challenge `json:"challenge"`
}

// journal records the challenges of one renewal that may need cleaning up.
type journal struct {
	m       *Manager
	name    string
	entries []journalEntry
}

// add records e before its Present runs.
func (j *journal) add(ctx context.Context, e journalEntry) error {
	j.entries = append(j.entries, e)
	return j.save(ctx)
}

// drop forgets e after its CleanUp ran.
func (j *journal) drop(ctx context.Context, e journalEntry) {
	if i := slices.IndexFunc(j.entries, func(x journalEntry) bool { return x.Path == e.Path && x.Challenge.Token == e.Challenge.Token }); i >= 0 {
		j.entries = slices.Delete(j.entries, i, i+1)
	}
	if err := j.save(ctx); err != nil {
		j.m.log.WarnContext(ctx, "updating the cleanup journal", "certificate", j.name, "error", err)
	}
}

func (j *journal) save(ctx context.Context) error {
	if len(j.entries) == 0 {
		return j.m.store.Delete(ctx, cleanupKey(j.name))
	}
	data, err := json.Marshal(j.entries)
	if err != nil {
		return fmt.Errorf("encoding the cleanup journal: %w", err)
	}
	if err := j.m.store.Store(ctx, cleanupKey(j.name), data); err != nil {
		return fmt.Errorf("writing the cleanup journal: %w", err)
	}
	return nil
}

// pendingDeploy is what pending/<name>.deploy.json holds.
type pendingDeploy struct {
	Version int `json:"version"`
}

// Pending returns, sorted, the names of certificates with work left by a
// renewal that did not finish (challenges to clean up, a version to
// deploy). Sweep finishes it.
func (m *Manager) Pending(ctx context.Context) ([]string, error) {
	keys, err := m.store.List(ctx, strings.TrimSuffix(pendingPrefix, "/"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("listing unfinished renewals: %w", err)
	}
	var names []string
	for _, k := range keys {
		base := strings.TrimPrefix(k, pendingPrefix)
		for _, suffix := range pendingSuffixes {
			if n, ok := strings.CutSuffix(base, suffix); ok && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// Sweep finishes what an interrupted renewal of req.Name left: it rolls
// back or completes an interrupted store (Recover), cleans up challenges
// that may still be in place, and deploys a live version that was not
// deployed. It takes the certificate's lock and returns an error wrapping
// store.ErrLocked when another process holds it.
func (m *Manager) Sweep(ctx context.Context, req Request) error {
	unlock, err := m.store.TryLock(ctx, req.Name)
	if err != nil {
		return err
	}
	defer unlock()
	return m.sweepLocked(ctx, req)
}

// sweepLocked is Sweep for a caller holding the lock.
func (m *Manager) sweepLocked(ctx context.Context, req Request) error {
	if err := m.store.Recover(ctx, req.Name); err != nil {
		return err
	}
	var errs []error
	if !req.DryRun {
		if _, err := m.installIssued(ctx, req); err != nil {
			errs = append(errs, err)
		}
	}
	if err := m.reconcileRecord(ctx, req.Name); err != nil {
		errs = append(errs, err)
	}
	if err := m.store.Delete(ctx, renewingKey(req.Name)); err != nil {
		errs = append(errs, err)
	}
	if data, err := m.store.Load(ctx, cleanupKey(req.Name)); err == nil {
		var entries []journalEntry
		if err := json.Unmarshal(data, &entries); err != nil {
			m.log.WarnContext(ctx, "discarding an unreadable cleanup journal", "certificate", req.Name, "error", err)
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cleanup)
		for _, e := range entries {
			i := slices.IndexFunc(req.Paths, func(p solve.Path) bool { return p.Name == e.Path })
			if i < 0 {
				m.log.WarnContext(ctx, "cannot clean up a challenge of an interrupted renewal: its path is no longer configured",
					"certificate", req.Name, "path", e.Path, "identifier", e.Challenge.Identifier.Value)
				continue
			}
			if err := req.Paths[i].Solver.CleanUp(cctx, e.Challenge); err != nil {
				errs = append(errs, fmt.Errorf("cleaning up %s on path %s: %w", e.Challenge.Identifier.Value, e.Path, err))
				continue
			}
			m.log.InfoContext(ctx, "cleaned up a challenge left by an interrupted renewal", "certificate", req.Name, "path", e.Path, "identifier", e.Challenge.Identifier.Value)
		}
		cancel()
		if len(errs) == 0 {
			if err := m.store.Delete(ctx, cleanupKey(req.Name)); err != nil {
				errs = append(errs, err)
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("reading the cleanup journal: %w", err))
	}
	if req.DryRun {
		return errors.Join(errs...)
	}
	if data, err := m.store.Load(ctx, deployKey(req.Name)); err == nil {
		var pd pendingDeploy
		_ = json.Unmarshal(data, &pd)
		if rec, err := m.store.LoadRecord(ctx, req.Name); err == nil {
			m.log.InfoContext(ctx, "deploying a version an interrupted renewal stored", "certificate", req.Name, "version", rec.Version)
			info := deploy.Info{Name: req.Name, Domains: rec.Identifiers, LiveDir: m.store.LiveDir(req.Name), Version: rec.Version, NotAfter: rec.NotAfter}
			if err := m.planOf(req).Run(context.WithoutCancel(ctx), info, m.log); err != nil {
				errs = append(errs, err)
			}
		}
		if err := m.store.Delete(ctx, deployKey(req.Name)); err != nil {
			errs = append(errs, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("reading the pending deploy: %w", err))
	}
	return errors.Join(errs...)
}

// plan returns the deploy plan of req: Deploy, with DeployHook as its hook
// when Deploy names none.
func (req Request) plan() deploy.Plan {
	p := req.Deploy
	if p.Hook.Command == "" {
		p.Hook = req.DeployHook
	}
	return p
}

// planOf returns the deploy plan the manager runs for req: none when
// every node deploys for itself (Options.NoDeploy).
func (m *Manager) planOf(req Request) deploy.Plan {
	if m.noDeploy {
		return deploy.Plan{}
	}
	return req.plan()
}

// deployLive runs req's deploy plan for the version just stored, marking it
// pending first so that a crash in between is caught up by Sweep.
func (m *Manager) deployLive(ctx context.Context, req Request, info deploy.Info) error {
	plan := m.planOf(req)
	if plan.Empty() {
		return nil
	}
	data, _ := json.Marshal(pendingDeploy{Version: info.Version})
	if err := m.store.Store(ctx, deployKey(req.Name), data); err != nil {
		m.log.WarnContext(ctx, "marking the deploy pending", "certificate", req.Name, "error", err)
	}
	err := plan.Run(context.WithoutCancel(ctx), info, m.log)
	if derr := m.store.Delete(context.WithoutCancel(ctx), deployKey(req.Name)); derr != nil {
		m.log.WarnContext(ctx, "clearing the pending deploy", "certificate", req.Name, "error", derr)
	}
	return err
}

// reconcileRecord makes the record of name describe the version live/
// points at, when a crash came between the switch of live/ and the save of
// the record. Without it the schedule, `detour list` and the ARI
// identifier would describe the previous certificate. The renewal window
// fetched for the previous certificate is dropped; the next ARI poll
// fetches the live one's.
func (m *Manager) reconcileRecord(ctx context.Context, name string) error {
	rec, err := m.store.LoadRecord(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading the record: %w", err)
	}
	b, version, err := m.store.LoadCertificate(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if version == rec.Version {
		return nil
	}
	leaf, err := parseLeaf(b.CertPEM)
	if err != nil {
		return fmt.Errorf("reading live version %d: %w", version, err)
	}
	m.log.WarnContext(ctx, "the record lagged behind live/ after an interrupted renewal; updating it from the live certificate",
		"certificate", name, "record_version", rec.Version, "live_version", version)
	rec.Version = version
	rec.Serial = leaf.SerialNumber.Text(16)
	rec.ARIID, _ = acme.ARIID(leaf)
	rec.LiveSum = b.LiveSum()
	rec.NotBefore, rec.NotAfter = leaf.NotBefore, leaf.NotAfter
	rec.Issued = leaf.NotBefore
	rec.ARI = nil
	rec.Last = &store.Attempt{Time: m.now(), OK: true}
	if err := m.store.SaveRecord(ctx, rec); err != nil {
		return fmt.Errorf("updating the record to live version %d: %w", version, err)
	}
	return nil
}

// RebuildRecord replaces the record of req.Name, which cannot be read, by
// one written from the live certificate and req (the configuration's
// description of the certificate); the unreadable file is kept beside it
// (see store.FS.SetAsideRecord). Without a live certificate only the file
// is set aside, and the certificate counts as never issued. It returns
// where the file went.
func (m *Manager) RebuildRecord(ctx context.Context, req Request) (string, error) {
	unlock, err := m.store.TryLock(ctx, req.Name)
	if err != nil {
		return "", err
	}
	defer unlock()
	kept, err := m.store.SetAsideRecord(ctx, req.Name)
	if err != nil {
		return "", err
	}
	b, version, err := m.store.LoadCertificate(ctx, req.Name)
	if errors.Is(err, fs.ErrNotExist) {
		m.log.WarnContext(ctx, "set an unreadable record aside; there is no live certificate, so this one counts as never issued",
			"certificate", req.Name, "kept", kept)
		return kept, nil
	} else if err != nil {
		return kept, err
	}
	leaf, err := parseLeaf(b.CertPEM)
	if err != nil {
		return kept, fmt.Errorf("reading live version %d: %w", version, err)
	}
	rec := recordFor(req, leaf, b, version)
	rec.Last = &store.Attempt{Time: m.now(), OK: true}
	if err := m.store.SaveRecord(ctx, rec); err != nil {
		return kept, fmt.Errorf("writing the rebuilt record: %w", err)
	}
	m.log.WarnContext(ctx, "rebuilt an unreadable record from the live certificate and the configuration",
		"certificate", req.Name, "version", version, "kept", kept)
	return kept, nil
}

// keepIssued writes the issued certificate of req aside, before anything
// else is stored, so that a full disk or a crash while storing it does not
// throw it away (it counted against the CA's rate limits).
func (m *Manager) keepIssued(ctx context.Context, req Request, p pendingIssued) error {
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return m.store.Store(ctx, issuedKey(req.Name), data)
}

// installIssued stores a certificate an earlier renewal of req kept aside
// (see keepIssued) and could not store, and its record. It returns the
// result when there was one to install; an error keeps it for the next
// try.
func (m *Manager) installIssued(ctx context.Context, req Request) (*Result, error) {
	key := issuedKey(req.Name)
	data, err := m.store.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		key = legacyIssuedKey(req.Name)
		data, err = m.store.Load(ctx, key)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("reading the issued certificate kept aside: %w", err)
	}
	var p pendingIssued
	if err := json.Unmarshal(data, &p); err != nil {
		m.log.ErrorContext(ctx, "discarding an unreadable issued certificate kept aside", "certificate", req.Name, "error", err)
		return nil, m.store.Delete(ctx, key)
	}
	leaf, err := parseLeaf(p.Bundle.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("the issued certificate kept aside: %w", err)
	}
	if live, _, err := m.store.LoadCertificate(ctx, req.Name); err == nil && bytes.Equal(live.CertPEM, p.Bundle.CertPEM) {
		// Stored already (the record is reconciled from live/ by Sweep);
		// only the note was left.
		return nil, m.store.Delete(ctx, key)
	}
	if !m.now().Before(leaf.NotAfter) {
		m.log.WarnContext(ctx, "discarding an issued certificate kept aside: it has expired", "certificate", req.Name, "not_after", leaf.NotAfter)
		return nil, m.store.Delete(ctx, key)
	}
	version, err := m.store.PutCertificate(ctx, req.Name, p.Bundle)
	if err != nil {
		return nil, fmt.Errorf("storing the certificate issued on %s, kept in %s: %w", p.Issued.UTC().Format(time.RFC3339), key, err)
	}
	rec := recordFor(req, leaf, p.Bundle, version)
	rec.Account, rec.KeyType, rec.Issued = p.Account, p.KeyType, p.Issued
	rec.Last = &store.Attempt{Time: m.now(), OK: true, Path: joinPaths(p.PathUsed)}
	if err := m.store.SaveRecord(ctx, rec); err != nil {
		return nil, fmt.Errorf("the certificate kept aside is live (version %d) but its record could not be saved: %w", version, err)
	}
	if err := m.store.Delete(ctx, key); err != nil {
		m.log.WarnContext(ctx, "removing the note of an installed certificate", "certificate", req.Name, "error", err)
	}
	m.log.WarnContext(ctx, "stored a certificate an earlier renewal could not store (no new order was made)", "certificate", req.Name,
		"version", version, "serial", rec.Serial, "issued", p.Issued)
	return &Result{Name: req.Name, Version: version, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Serial: rec.Serial, PathUsed: p.PathUsed}, nil
}
