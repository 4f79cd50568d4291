package importer

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/store"
)

// Outcome is what happened to one entry of an import.
type Outcome string

// Outcomes. All but Imported and Already leave the import incomplete.
const (
	// Imported: written to the state directory (on a dry run: would be).
	Imported Outcome = "imported"
	// Already: the state directory holds it already; nothing written.
	Already Outcome = "already imported"
	// NotMapped: no Detour path could be mapped; not imported.
	NotMapped Outcome = "not mapped"
	// Conflict: Detour's state or configuration holds something else
	// under its name; nothing overwritten.
	Conflict Outcome = "conflict"
	// Unreadable: the source's files cannot be read.
	Unreadable Outcome = "unreadable"
	// Failed: writing failed; run the import again.
	Failed Outcome = "failed"
)

// Problem reports whether o leaves the import incomplete.
func (o Outcome) Problem() bool { return o != Imported && o != Already }

// Entry kinds of a Report.
const (
	KindAccount     = "account"
	KindCertificate = "certificate"
)

// Item is one entry of a Report.
type Item struct {
	// Kind is KindAccount or KindCertificate.
	Kind string
	// Name is the account's storage prefix, or the certificate's name.
	Name string
	// Source is where it comes from (a file of the source).
	Source string
	// Outcome is what happened.
	Outcome Outcome
	// Detail says what was written, or for a problem why and what to do.
	Detail string
	// Err is the underlying error of Unreadable and Failed items.
	Err error
}

// Report is what Apply did, entry by entry: accounts first.
type Report struct {
	// DryRun reports that nothing was written.
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

// Item returns the item of kind called name.
func (r Report) Item(kind, name string) (Item, bool) {
	for _, it := range r.Items {
		if it.Kind == kind && it.Name == name {
			return it, true
		}
	}
	return Item{}, false
}

// Err returns nil when everything is imported, else an error counting
// what is not (each is an item, with why and what to do).
func (r Report) Err() error {
	var parts []string
	for _, o := range []Outcome{NotMapped, Conflict, Unreadable, Failed} {
		if n := r.Count(o); n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, o))
		}
	}
	if len(parts) == 0 {
		return nil
	}
	done := "imported"
	if r.DryRun {
		done = "checked (dry run)"
	}
	return fmt.Errorf("the import is not complete (%s): everything else was %s, nothing was overwritten; fix what is listed and run it again", strings.Join(parts, ", "), done)
}

// accountRecord is the account record Detour keeps next to an account key
// (accounts/<prefix>/account.json): the fields of package renew's account
// record, which renewals read (a test holds the two together), and where
// the account was imported from.
type accountRecord struct {
	URL          string    `json:"url"`
	Directory    string    `json:"directory"`
	Email        string    `json:"email,omitempty"`
	Created      time.Time `json:"created"`
	Thumbprint   string    `json:"thumbprint,omitempty"`
	ImportedFrom string    `json:"imported_from,omitempty"`
}

// Apply writes p into the state directory st: each account under its
// prefix (key and record, so that renewals use exactly that account with
// no registration), then each certificate's versions (the live one last,
// so that it is live) and its record, which names the CA and account that
// issued it: its first renewal then sends "replaces" (RFC 9773) with its
// ARI identifier. A certificate is written under its lock; its record is
// written last, so an import that was interrupted is finished by the next.
//
// Nothing is ever overwritten: an account, certificate or record of the
// same name that is not the imported one is a Conflict. What is there
// already is Already, so a second run writes nothing. One certificate's
// problem never stops the others. With dryRun nothing is written; st may
// then be nil (no state directory yet: everything would be imported).
func Apply(ctx context.Context, st *store.FS, p ImportPlan, dryRun bool) (Report, error) {
	rep := Report{DryRun: dryRun}
	accountOK := map[*AccountPlan]bool{}
	for _, ap := range p.Accounts {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		it := applyAccount(ctx, st, ap, p.Client, dryRun)
		accountOK[ap] = !it.Outcome.Problem()
		rep.Items = append(rep.Items, it)
	}
	for _, cp := range p.Certificates {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		it := Item{Kind: KindCertificate, Name: cp.Name, Source: cp.File}
		switch {
		case cp.Err != nil:
			it.Outcome, it.Err, it.Detail = Unreadable, cp.Err, "fix the file, or leave the certificate to its client"
		case cp.Unmapped != nil:
			it.Outcome, it.Detail = NotMapped, cp.Unmapped.Reason+"; "+cp.Unmapped.Suggestion
		case cp.Conflict != "":
			it.Outcome, it.Detail = Conflict, cp.Conflict
		case !accountOK[cp.Account]:
			it.Outcome, it.Detail = Conflict, fmt.Sprintf("its account (%s) was not imported: see the account above", cp.Account.Prefix)
		default:
			it = applyCertificate(ctx, st, cp, dryRun)
		}
		rep.Items = append(rep.Items, it)
	}
	return rep, nil
}

// applyAccount stores one account under its prefix, unless it is there.
func applyAccount(ctx context.Context, st *store.FS, ap *AccountPlan, client string, dryRun bool) Item {
	it := Item{Kind: KindAccount, Name: ap.Prefix, Source: ap.File}
	tp, err := acme.Thumbprint(acme.Account{PrivateKey: ap.Key})
	if err != nil {
		it.Outcome, it.Err, it.Detail = Unreadable, err, "the account key cannot be used"
		return it
	}
	keyPEM, err := acme.EncodeKey(ap.Key)
	if err != nil {
		it.Outcome, it.Err, it.Detail = Unreadable, err, "the account key cannot be used"
		return it
	}
	keyKey, recKey := ap.Prefix+"/account.key", ap.Prefix+"/account.json"
	haveKey, haveRec := false, false
	if st != nil {
		if old, err := st.Load(ctx, keyKey); err == nil {
			oldKey, derr := acme.DecodeKey(old)
			oldTP := ""
			if derr == nil {
				oldTP, _ = acme.Thumbprint(acme.Account{PrivateKey: oldKey})
			}
			if oldTP != tp {
				it.Outcome, it.Detail = Conflict, fmt.Sprintf("%s/%s holds another account key for %s: Detour keeps one account per CA and contact; move that directory away to import this account (certificates Detour issued with the other are then renewed without \"replaces\" once)",
					st.Dir(), keyKey, ap.Directory)
				return it
			}
			haveKey = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			it.Outcome, it.Err, it.Detail = Failed, err, "reading Detour's account"
			return it
		}
		if old, err := st.Load(ctx, recKey); err == nil {
			var rec accountRecord
			if err := json.Unmarshal(old, &rec); err != nil || rec.URL != ap.URL || rec.Directory != ap.Directory {
				it.Outcome, it.Detail = Conflict, fmt.Sprintf("%s/%s describes another account (%s at %s): move that directory away to import %s",
					st.Dir(), recKey, rec.URL, rec.Directory, ap.URL)
				return it
			}
			haveRec = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			it.Outcome, it.Err, it.Detail = Failed, err, "reading Detour's account"
			return it
		}
	}
	if haveKey && haveRec {
		it.Outcome, it.Detail = Already, ap.URL
		return it
	}
	it.Outcome, it.Detail = Imported, fmt.Sprintf("%s at %s, key and URL stored: no new registration", ap.URL, ap.Directory)
	if dryRun {
		return it
	}
	rec, _ := json.MarshalIndent(accountRecord{URL: ap.URL, Directory: ap.Directory, Email: ap.Email, Created: time.Now().UTC(),
		Thumbprint: tp, ImportedFrom: client + " " + ap.File}, "", "  ")
	// The key first: a record without its key would be a lost key.
	if !haveKey {
		if err := st.Store(ctx, keyKey, keyPEM); err != nil {
			it.Outcome, it.Err, it.Detail = Failed, err, "storing the account key"
			return it
		}
	}
	if err := st.Store(ctx, recKey, rec); err != nil {
		it.Outcome, it.Err, it.Detail = Failed, err, "storing the account record"
	}
	return it
}

// applyCertificate stores one certificate's versions, secrets and record.
func applyCertificate(ctx context.Context, st *store.FS, cp *CertPlan, dryRun bool) Item {
	it := Item{Kind: KindCertificate, Name: cp.Name, Source: cp.File}
	fail := func(o Outcome, err error, format string, args ...any) Item {
		it.Outcome, it.Err, it.Detail = o, err, fmt.Sprintf(format, args...)
		return it
	}
	var stored [][]byte // the leaves of Detour's archive, by version
	var versions []int
	var rec *store.Record
	if st != nil {
		if !dryRun {
			unlock, err := st.Lock(ctx, cp.Name)
			if err != nil {
				return fail(Failed, err, "locking %s", cp.Name)
			}
			defer unlock()
		}
		r, err := st.LoadRecord(ctx, cp.Name)
		switch {
		case err == nil:
			rec = &r
		case !errors.Is(err, fs.ErrNotExist):
			return fail(Conflict, err, "Detour's record of %q cannot be read; the import does not replace it: restore it, or move it away and import again", cp.Name)
		}
		if versions, stored, err = archivedLeaves(ctx, st, cp.Name); err != nil {
			return fail(Conflict, err, "Detour's archive of %q cannot be read; the import does not touch it", cp.Name)
		}
	}
	n := 0 // source versions Detour holds already, as its first versions
	for n < len(cp.Versions) && n < len(stored) {
		if !bytes.Equal(stored[n], cp.Versions[n].Leaf.Raw) {
			return fail(Conflict, nil, "Detour already has a certificate named %q (version %d differs from the one imported): import into another state directory, or move archive/%s, live/%s and renewal/%s.json away",
				cp.Name, versions[n], cp.Name, cp.Name, cp.Name)
		}
		n++
	}
	switch {
	case rec != nil && n == len(cp.Versions):
		it.Outcome, it.Detail = Already, fmt.Sprintf("%d version(s); live: version %d", len(stored), rec.Version)
		if len(stored) > n {
			it.Detail += " (renewed by Detour since)"
		}
		return it
	case rec != nil, len(stored) > len(cp.Versions):
		return fail(Conflict, nil, "Detour already has a certificate named %q that is not this one (renewal/%s.json, archive/%s): import into another state directory, or move them away",
			cp.Name, cp.Name, cp.Name)
	}
	todo := cp.Versions[n:]
	it.Outcome = Imported
	it.Detail = fmt.Sprintf("%d version(s), live: the source's version %d", len(cp.Versions), cp.Versions[len(cp.Versions)-1].N)
	if n > 0 {
		it.Detail += fmt.Sprintf(" (%d stored by an earlier run)", n)
	}
	if dryRun {
		return it
	}
	for _, s := range cp.Secrets {
		if old, err := st.Load(ctx, s.Key); err == nil && bytes.Equal(old, s.Data) {
			continue
		}
		if err := st.Store(ctx, s.Key, s.Data); err != nil {
			return fail(Failed, err, "storing %s", s.Key)
		}
	}
	live := 0
	if len(versions) > 0 && len(todo) == 0 {
		live = versions[len(cp.Versions)-1]
	}
	for _, v := range todo {
		var err error
		if live, err = st.PutCertificate(ctx, cp.Name, v.Bundle); err != nil {
			return fail(Failed, err, "storing version %d of %s; run the import again to finish", v.N, cp.Name)
		}
	}
	r := cp.Record
	last := cp.Versions[len(cp.Versions)-1]
	ariID, _ := acme.ARIID(last.Leaf)
	r.Version, r.Serial, r.ARIID, r.LiveSum = live, last.Leaf.SerialNumber.Text(16), ariID, last.Bundle.LiveSum()
	r.NotBefore, r.NotAfter, r.Issued = last.Leaf.NotBefore, last.Leaf.NotAfter, last.Leaf.NotBefore
	if err := st.SaveRecord(ctx, r); err != nil {
		return fail(Failed, err, "storing the record of %s; run the import again to finish", cp.Name)
	}
	return it
}

// archivedLeaves returns the complete versions of name in Detour's archive
// and the DER of each one's leaf; none when there is no archive.
func archivedLeaves(ctx context.Context, st *store.FS, name string) ([]int, [][]byte, error) {
	versions, err := st.ArchiveVersions(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	leaves := make([][]byte, len(versions))
	for i, v := range versions {
		file := filepath.Join(st.Dir(), "archive", name, "cert"+strconv.Itoa(v)+".pem")
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, nil, err
		}
		b, _ := pem.Decode(raw)
		if b == nil {
			return nil, nil, fmt.Errorf("%s holds no PEM block", file)
		}
		leaves[i] = b.Bytes
	}
	return versions, leaves, nil
}
