// Package migrate moves a single host's Detour state into a fleet's etcd
// store (issue 11): `detour store migrate --to etcd`.
//
// What is copied is what the renewals of a fleet read from etcd (see
// plan.Shared): the ACME accounts (Storage keys under accounts/, secrets
// encrypted by the etcd store), every certificate version with its number
// and the live version, and the records. Everything else in the state
// directory belongs to this host and stays there: live/ itself (each node
// writes its own from etcd), locks, the agent's socket, firewall leases,
// acme-dns state, and the notes of unfinished renewals under pending/
// (challenges to clean up, a deploy, a renewal marker), which `detour
// renew` with the single-host configuration finishes.
//
// An issued certificate not yet stored (pending/<name>.issued.key, or .issued.json from earlier versions) is not
// copied: it is reported, and the run fails, until `detour renew` with the
// single-host configuration has stored it (without a new order). Copying
// the note would put its private key in etcd unencrypted (only keys named
// *.key or privkey* are encrypted) and leave the copied record describing
// the previous certificate; storing it as a version would make it live in
// the fleet with a record that does not describe it either.
//
// A run is idempotent. An entry etcd already holds with the same content
// is reported "already in etcd" and not written (a second run writes
// nothing at all). An entry etcd holds with different content is never
// overwritten: it is reported as a conflict naming the etcd key and what
// to do, and the run goes on with everything else. A file of this host
// that cannot be read (a truncated record, a damaged certificate version)
// is reported with the file and the reason, and the others are copied.
// The state directory is only read: nothing in it is written, repaired or
// removed (store.FS.LoadCertificate would repair, so it is not used).
package migrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/store/etcdstore"
)

// Options configure a migration.
type Options struct {
	// From is this host's state directory; required. It is only read.
	From *store.FS
	// To is the fleet's etcd store; required.
	To *etcdstore.Store
	// Client is the etcd client To was opened on; required. It is used
	// for one thing the store's API does not offer: moving the live
	// pointer of a certificate this run is copying over a version number
	// this host never completed, so that the next version keeps its
	// number (see reserve).
	Client *clientv3.Client
	// DryRun reports what would be copied and writes nothing.
	DryRun bool
	// Logger receives one event per entry; nil discards.
	Logger *slog.Logger
}

// Outcome is what happened to one entry.
type Outcome string

// Outcomes. Conflict, Unreadable, Unfinished and Failed are problems: the
// migration is not complete while any is reported.
const (
	// Copied: written to etcd (on a dry run: would be).
	Copied Outcome = "copied"
	// Already: etcd holds the same content; nothing written.
	Already Outcome = "already in etcd"
	// Conflict: etcd holds different content, or content this node
	// cannot read; not overwritten.
	Conflict Outcome = "conflict"
	// Unreadable: the file on this host cannot be read; not copied.
	Unreadable Outcome = "unreadable"
	// Unfinished: an issued certificate this host has not stored yet.
	Unfinished Outcome = "unfinished"
	// Failed: etcd failed while reading or writing it; run again.
	Failed Outcome = "failed"
	// Skipped: not copied on purpose (this host's own state, or a record
	// whose certificate could not be copied).
	Skipped Outcome = "not copied"
)

// Problem reports whether o leaves the migration incomplete.
func (o Outcome) Problem() bool {
	switch o {
	case Conflict, Unreadable, Unfinished, Failed:
		return true
	}
	return false
}

// Entry kinds.
const (
	KindAccount     = "account"
	KindCertificate = "certificate"
	KindVersion     = "version"
	KindRecord      = "record"
	KindPending     = "pending"
)

// Item is one entry of the report.
type Item struct {
	// Kind is KindAccount, KindCertificate, KindVersion, KindRecord or
	// KindPending.
	Kind string
	// Name is the Storage key (an account's, a pending note's) or the
	// certificate name.
	Name string
	// File is where it is on this host.
	File string
	// EtcdKey is where it is, or goes, in etcd.
	EtcdKey string
	// Outcome is what happened.
	Outcome Outcome
	// Detail says what was copied, or for a problem what to do.
	Detail string
	// Err is the underlying error of Unreadable and Failed items.
	Err error
}

// Report is what a run did, entry by entry, in the order done.
type Report struct {
	// DryRun reports that nothing was written (Copied means "would be").
	DryRun bool
	Items  []Item
}

// Count returns how many items had outcome o.
func (r Report) Count(o Outcome) int {
	n := 0
	for _, it := range r.Items {
		if it.Outcome == o {
			n++
		}
	}
	return n
}

// Problems returns the items that leave the migration incomplete.
func (r Report) Problems() []Item {
	var out []Item
	for _, it := range r.Items {
		if it.Outcome.Problem() {
			out = append(out, it)
		}
	}
	return out
}

// Err returns nil when the migration is complete, else an error counting
// the problems (each is in Items with what to do).
func (r Report) Err() error {
	var parts []string
	for _, o := range []Outcome{Conflict, Unreadable, Unfinished, Failed} {
		if n := r.Count(o); n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, o))
		}
	}
	if len(parts) == 0 {
		return nil
	}
	return fmt.Errorf("the migration is not complete (%s): everything else was %s, nothing in etcd was overwritten; fix what is listed and run it again",
		strings.Join(parts, ", "), map[bool]string{false: "copied", true: "checked (dry run)"}[r.DryRun])
}

// migrator is one run.
type migrator struct {
	Options
	log *slog.Logger
	rep Report
}

// Run copies From into To (see the package documentation) and returns
// what it did. The error is for what stops the whole run (ctx, options,
// the state directory unreadable); every problem with one entry is an
// item of the report, and Report.Err says whether there was any.
func Run(ctx context.Context, opts Options) (Report, error) {
	if opts.From == nil || opts.To == nil || opts.Client == nil {
		return Report{}, errors.New("migrating the state: From, To and Client are required")
	}
	m := &migrator{Options: opts, log: opts.Logger, rep: Report{DryRun: opts.DryRun}}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	// Accounts first: the records name them.
	if err := m.accounts(ctx); err != nil {
		return m.rep, err
	}
	if err := m.certificates(ctx); err != nil {
		return m.rep, err
	}
	if err := m.pending(ctx); err != nil {
		return m.rep, err
	}
	return m.rep, ctx.Err()
}

// add records an item and logs it.
func (m *migrator) add(ctx context.Context, it Item) {
	m.rep.Items = append(m.rep.Items, it)
	// The command prints every item; the log carries the problems, and
	// the rest at debug level.
	level := slog.LevelDebug
	if it.Outcome.Problem() {
		level = slog.LevelWarn
	}
	attrs := []any{"kind", it.Kind, "name", it.Name, "outcome", string(it.Outcome)}
	if it.File != "" {
		attrs = append(attrs, "path", it.File)
	}
	if it.EtcdKey != "" {
		attrs = append(attrs, "etcd_key", it.EtcdKey)
	}
	if it.Detail != "" {
		attrs = append(attrs, "detail", it.Detail)
	}
	if it.Err != nil {
		attrs = append(attrs, "error", it.Err)
	}
	m.log.Log(ctx, level, "migrating the state to etcd", attrs...)
}

// file returns the path of a Storage key in the state directory.
func (m *migrator) file(key string) string {
	return filepath.Join(m.From.Dir(), filepath.FromSlash(key))
}

// etcdKey returns the etcd key of a Storage key (the layout of package
// etcdstore), for messages.
func (m *migrator) etcdKey(key string) string { return m.To.Prefix() + "/store/kv/" + key }

// accounts copies the Storage keys under accounts/.
func (m *migrator) accounts(ctx context.Context) error {
	keys, err := m.From.List(ctx, "accounts")
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.add(ctx, Item{Kind: KindAccount, Name: "accounts/", File: m.file("accounts"), Outcome: Unreadable, Err: err,
			Detail: "the accounts cannot be listed; make the directory readable and run again"})
		return nil
	}
	for _, key := range keys {
		if err := ctx.Err(); err != nil {
			return err
		}
		m.copyKey(ctx, KindAccount, key)
	}
	return nil
}

// copyKey copies one Storage key unless etcd holds it already.
func (m *migrator) copyKey(ctx context.Context, kind, key string) {
	it := Item{Kind: kind, Name: key, File: m.file(key), EtcdKey: m.etcdKey(key)}
	value, err := m.From.Load(ctx, key)
	if err != nil {
		it.Outcome, it.Err, it.Detail = Unreadable, err, "make the file readable (or remove it if it is not needed) and run again"
		m.add(ctx, it)
		return
	}
	have, err := m.To.Load(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotExist):
		if !m.DryRun {
			if err := m.To.Store(ctx, key, value); err != nil {
				it.Outcome, it.Err, it.Detail = Failed, err, "writing to etcd failed; run again"
				m.add(ctx, it)
				return
			}
		}
		it.Outcome = Copied
	case err != nil:
		var km *etcdstore.KeyMismatchError
		if errors.As(err, &km) {
			it.Outcome, it.Err = Conflict, err
			it.Detail = fmt.Sprintf("etcd holds %s encrypted with key %q, which this node's encryption_key_file lacks; not overwritten: "+
				"add that key to the file (the fleet's key file) and run again", it.EtcdKey, km.KeyID)
		} else {
			it.Outcome, it.Err, it.Detail = Failed, err, "reading it from etcd failed; run again"
		}
	case string(have) == string(value):
		it.Outcome = Already
	default:
		it.Outcome = Conflict
		it.Detail = fmt.Sprintf("etcd already holds %s with different content; not overwritten. To keep the fleet's, leave it (this host's stays in %s); "+
			"to use this host's, delete the fleet's (etcdctl del %s) and run again", it.EtcdKey, it.File, it.EtcdKey)
	}
	m.add(ctx, it)
}

// pending reports the notes of unfinished renewals under pending/: an
// issued certificate not yet stored must be stored on this host first;
// the rest is this host's own work.
func (m *migrator) pending(ctx context.Context) error {
	keys, err := m.From.List(ctx, "pending")
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.add(ctx, Item{Kind: KindPending, Name: "pending/", File: m.file("pending"), Outcome: Unreadable, Err: err,
			Detail: "the notes of unfinished renewals cannot be listed; make the directory readable and run again"})
		return nil
	}
	for _, key := range keys {
		it := Item{Kind: KindPending, Name: key, File: m.file(key)}
		name, issued := strings.CutSuffix(strings.TrimPrefix(key, "pending/"), ".issued.key")
		if !issued {
			name, issued = strings.CutSuffix(strings.TrimPrefix(key, "pending/"), ".issued.json")
		}
		if issued {
			it.Outcome = Unfinished
			it.Detail = fmt.Sprintf("the CA issued a certificate for %s that this host has not stored yet; it is not copied (its key would reach etcd unencrypted). "+
				"Run `detour renew` with the single-host configuration (without [store] kind = \"etcd\"): it stores it, without a new order; then run migrate again", name)
		} else {
			it.Outcome = Skipped
			it.Detail = "unfinished work of a renewal on this host (challenges to clean up, a deploy, a marker); it stays here: `detour renew` with the single-host configuration finishes it"
		}
		m.add(ctx, it)
	}
	return nil
}

// names returns, sorted, every certificate name the state directory
// knows: directories of archive/, entries of live/, and records (read or
// not).
func (m *migrator) names(scan store.RecordScan) ([]string, error) {
	seen := map[string]bool{}
	for _, dir := range []string{"archive", "live"} {
		ents, err := os.ReadDir(filepath.Join(m.From.Dir(), dir))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("listing the certificates in %s: %w", filepath.Join(m.From.Dir(), dir), err)
		}
		for _, e := range ents {
			if store.ValidName(e.Name()) == nil && (dir == "live" || e.IsDir()) {
				seen[e.Name()] = true
			}
		}
	}
	for _, r := range scan.Records {
		seen[r.Name] = true
	}
	for _, b := range scan.Broken {
		seen[b.Name] = true
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}
