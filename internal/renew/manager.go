// Package renew obtains and renews certificates: it plans an order, checks
// each validation path before the CA is asked, drives the ACME flow through
// package acme, stores the result through package store, and decides when a
// certificate is due (RFC 9773 renewal windows, else a third of the lifetime
// left).
package renew

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/deploy"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
)

// Backend is the storage Manager needs: key/value, certificates, locks.
type Backend interface {
	store.Storage
	store.Certs
	store.Locker
	// LiveDir is the directory of name's live files, given to deploy hooks.
	LiveDir(name string) string
	// SetAsideRecord moves name's record file out of the way, keeping it,
	// and returns where it went.
	SetAsideRecord(ctx context.Context, name string) (string, error)
}

// Options configure a Manager.
type Options struct {
	Store  Backend // required
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// CleanupTimeout bounds CleanUp of every path, which runs even when the
	// renewal's context is cancelled. Default 30s.
	CleanupTimeout time.Duration
	// Policy tunes the schedule Renew decides with.
	Policy Policy
	// RenewalInfo, when set, lets Renew poll the CA's renewal window (see
	// Step.RenewalInfo).
	RenewalInfo ARIFetcher
	// NoDeploy leaves deploying to others: in a fleet, every node writes
	// its own live/ and runs its own reloads and hook (fleet.Deployer),
	// the orderer included, so Obtain stores the certificate and stops.
	NoDeploy bool
}

// Manager obtains, renews and records certificates.
type Manager struct {
	store   Backend
	log     *slog.Logger
	now     func() time.Time
	cleanup time.Duration
	policy  Policy
	ari     ARIFetcher
	// noDeploy: see Options.NoDeploy.
	noDeploy bool
}

// New returns a Manager.
func New(opts Options) (*Manager, error) {
	if opts.Store == nil {
		return nil, errors.New("renew: no store")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CleanupTimeout <= 0 {
		opts.CleanupTimeout = 30 * time.Second
	}
	return &Manager{store: opts.Store, log: opts.Logger, now: opts.Now, cleanup: opts.CleanupTimeout, policy: opts.Policy, ari: opts.RenewalInfo,
		noDeploy: opts.NoDeploy}, nil
}

// CA is one certificate authority as a renewal uses it.
type CA struct {
	Client   *acme.Client
	Name     string // shortcut or config name, for records and logs
	Email    string
	AgreeTOS bool
	EAB      *acme.EAB
	// RootBundle is the file the client's roots came from, kept in the
	// record so that a renewal can rebuild the client.
	RootBundle string
}

// Request is one certificate to obtain.
type Request struct {
	Name           string
	Identifiers    []ident.Identifier
	KeyType        acme.KeyType
	Profile        string
	PreferredChain string
	CA             CA
	// Paths in order of preference; Refs describe them for the record
	// (same order, same length).
	Paths []solve.Path
	Refs  []store.PathRef
	// Replaces is the ARI identifier of the certificate being replaced,
	// and ReplacesAccount the URL of the account it was issued to: a CA
	// refuses "replaces" from another account, so it is left out then.
	ReplacesAccount string
	// Replaces is the ARI identifier of the certificate being replaced.
	Replaces string
	// DryRun runs the whole flow but stores nothing.
	DryRun bool
	// SelfCheck, when set, is called after each Present (and Wait) and
	// before the CA is asked: it fetches the answer the way the CA will. A
	// failure moves on to the next path, costing no failed validation.
	SelfCheck func(ctx context.Context, p solve.Path, ch solve.Challenge) error
	// DeployHook runs after the new version is live (not on a dry run).
	DeployHook deploy.Hook
	// Deploy writes extra outputs and reloads servers after the new
	// version is live, then runs its hook (DeployHook when it has none).
	Deploy deploy.Plan
	// Expect, when set, is the certificate the decision to renew was
	// made on. Obtain compares it with the record under the
	// certificate's lock and orders nothing when another process (cron
	// and the agent, or another node of a fleet) renewed it meanwhile:
	// it returns a *SupersededError instead.
	Expect *Expected
	// Progress, when set, receives each step of Obtain as it ends (see
	// Event), one call at a time, on Obtain's goroutines: it must return
	// quickly. Nil reports nothing.
	Progress func(Event)

	// progress is Progress for one Obtain (set by Obtain).
	progress *progress
}

// Expected names a version of a certificate: the record's Version and
// Serial; the zero value is a certificate never issued.
type Expected struct {
	Version int
	Serial  string
}

// ExpectedOf returns what rec describes (the zero Expected for nil).
func ExpectedOf(rec *store.Record) Expected {
	if rec == nil {
		return Expected{}
	}
	return Expected{Version: rec.Version, Serial: rec.Serial}
}

// SupersededError is returned by Obtain when the certificate is no longer
// the one the renewal was decided on (Request.Expect): another process
// renewed it. Record is the record now, nil when there is none.
type SupersededError struct {
	Name     string
	Expected Expected
	Record   *store.Record
}

func (e *SupersededError) Error() string {
	now := Expected{}
	if e.Record != nil {
		now = ExpectedOf(e.Record)
	}
	return fmt.Sprintf("certificate %s was renewed meanwhile by another process (version %d, serial %s; this renewal was decided on version %d): nothing ordered",
		e.Name, now.Version, orNone(now.Serial), e.Expected.Version)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Result describes an obtained certificate.
type Result struct {
	Name      string
	Version   int // archive version now live (0 on a dry run)
	NotBefore time.Time
	NotAfter  time.Time
	Serial    string
	PathUsed  map[string]string // identifier -> path name
	Elapsed   time.Duration
	Files     []string // live files written
	ARI       *store.ARIWindow
	// DeployErr is set when the certificate was stored but its deploy hook
	// failed; the new certificate is live regardless.
	DeployErr error
}

// Error is a failed attempt: which stage failed, and whether the CA was
// asked to validate anything (a failure before that costs no failed
// validation, the rate limit that hurts).
type Error struct {
	Name  string
	Stage string // "preflight", "account", "order", "self-check", "validation", "finalize", "store"
	// AskedCA reports whether the CA was asked to validate a challenge.
	AskedCA bool
	Err     error
}

func (e *Error) Error() string {
	return fmt.Sprintf("certificate %q: %s: %v", e.Name, e.Stage, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// LogValue implements slog.LogValuer.
func (e *Error) LogValue() slog.Value {
	return slog.GroupValue(slog.String("certificate", e.Name), slog.String("stage", e.Stage),
		slog.Bool("asked_ca", e.AskedCA), slog.String("error", e.Err.Error()))
}
