package migrate

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/store/etcdstore"
)

// version is one certificate version of this host.
type version struct {
	n int
	b store.Bundle
}

// source is what this host holds of one certificate: its live version
// and the versions to copy, ascending, the live one last.
type source struct {
	live     int
	versions []version
}

// numbers returns the version numbers of vs.
func numbers(vs []version) []int {
	out := make([]int, len(vs))
	for i, v := range vs {
		out[i] = v.n
	}
	return out
}

// certificates copies every certificate, then its record.
func (m *migrator) certificates(ctx context.Context) error {
	scan, err := m.From.ScanRecords(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.add(ctx, Item{Kind: KindRecord, Name: "renewal/", File: m.file("renewal"), Outcome: Unreadable, Err: err,
			Detail: "the records cannot be listed; make the directory readable and run again"})
	}
	names, err := m.names(scan)
	if err != nil {
		return err
	}
	records := map[string]store.Record{}
	for _, r := range scan.Records {
		records[r.Name] = r
	}
	broken := map[string]store.BrokenRecord{}
	for _, b := range scan.Broken {
		broken[b.Name] = b
	}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		certOK := true
		if m.hasCertificate(name) {
			certOK = m.certificate(ctx, name)
		}
		if r, ok := records[name]; ok {
			if certOK {
				m.record(ctx, r)
			} else {
				m.add(ctx, Item{Kind: KindRecord, Name: name, File: m.file(recordKey(name)), EtcdKey: m.recordEtcdKey(name), Outcome: Skipped,
					Detail: "its certificate was not copied (see above), and a record must not describe a certificate etcd does not hold"})
			}
		}
		if b, ok := broken[name]; ok {
			m.add(ctx, Item{Kind: KindRecord, Name: name, File: b.File, EtcdKey: m.recordEtcdKey(name), Outcome: Unreadable, Err: b.Err,
				Detail: "restore the file from a backup, or fix it, and run again (`detour status` on this host says more)"})
		}
	}
	for _, file := range scan.Ignored {
		m.add(ctx, Item{Kind: KindRecord, Name: filepath.Base(file), File: file, Outcome: Skipped,
			Detail: "not a certificate record (a copy of another one, or a name no certificate can have)"})
	}
	return nil
}

func recordKey(name string) string { return "renewal/" + name + ".json" }

// recordEtcdKey and certEtcdKey are where package etcdstore keeps a record
// and a certificate, for messages.
func (m *migrator) recordEtcdKey(name string) string {
	return m.To.Prefix() + "/store/records/" + name + ".json"
}
func (m *migrator) certEtcdKey(name string) string {
	return m.To.Prefix() + "/store/certs/" + name + "/"
}

// hasCertificate reports whether this host has archive/<name> or
// live/<name>.
func (m *migrator) hasCertificate(name string) bool {
	for _, dir := range []string{"archive", "live"} {
		if _, err := os.Lstat(filepath.Join(m.From.Dir(), dir, name)); err == nil {
			return true
		}
	}
	return false
}

// certificate copies the versions of name not in etcd yet and reports
// it. It returns whether etcd holds this host's certificate afterwards (on
// a dry run: would), so that its record may follow.
func (m *migrator) certificate(ctx context.Context, name string) bool {
	src, ok := m.readSource(ctx, name)
	if !ok {
		return false
	}
	it := Item{Kind: KindCertificate, Name: name, File: filepath.Join(m.From.Dir(), "archive", name), EtcdKey: m.certEtcdKey(name)}
	d := m.decide(ctx, name, src)
	if d.outcome == Copied && !m.DryRun {
		// Decide again under the certificate's lock, which the fleet's
		// renewals take: nothing else stores a version meanwhile.
		unlock, err := m.To.Lock(ctx, name)
		if err != nil {
			it.Outcome, it.Err, it.Detail = Failed, err, "locking the certificate in etcd failed; run again"
			m.add(ctx, it)
			return false
		}
		defer func() { _ = unlock() }()
		if d = m.decide(ctx, name, src); d.outcome == Copied {
			if err := m.copyVersions(ctx, name, src.versions[d.from:]); err != nil {
				it.Outcome, it.Err = Failed, err
				it.Detail = "writing to etcd failed; run again: the versions written are recognised and the rest follow"
				m.add(ctx, it)
				return false
			}
		}
	}
	it.Outcome, it.Err, it.Detail = d.outcome, d.err, d.detail
	if d.outcome == Copied {
		it.Detail = fmt.Sprintf("versions %s, live %d", intList(numbers(src.versions[d.from:])), src.live)
		if d.from > 0 {
			it.Detail += fmt.Sprintf(" (%s in etcd already)", intList(numbers(src.versions[:d.from])))
		}
	}
	m.add(ctx, it)
	return d.outcome == Copied || d.outcome == Already
}

// decision is what to do with one certificate.
type decision struct {
	outcome Outcome // Copied (copy versions[from:]), Already, Conflict or Failed
	from    int
	detail  string
	err     error
}

// decide compares what etcd holds of name with src. etcd must hold
// nothing, or the first versions of src (an earlier run stopped half-way)
// with the last of them live, or also a live pointer this package moved
// over a gap (see reserve) before it stopped. The live version's content
// is compared in full (certificate, chain and key); older ones by number,
// as the store's API reads the live one only: a history that is not this
// host's has another live certificate.
func (m *migrator) decide(ctx context.Context, name string, src source) decision {
	st, err := m.etcdState(ctx, name)
	if err != nil {
		return decision{outcome: Failed, err: err, detail: "reading it from etcd failed; run again"}
	}
	want := numbers(src.versions)
	conflict := func(why string) decision {
		return decision{outcome: Conflict, detail: fmt.Sprintf("etcd already holds certificate %s (versions %s, live %s) and it is not this host's (versions %s, live %d): %s; not overwritten. "+
			"To keep the fleet's, leave it (this host's stays in %s, and its record is not copied); to use this host's, delete the fleet's "+
			"(etcdctl del --prefix %s; etcdctl del %s) and run again",
			name, intList(st.versions), st.liveText(), intList(want), src.live, why, filepath.Join(m.From.Dir(), "archive", name),
			m.certEtcdKey(name), m.recordEtcdKey(name))}
	}
	k := len(st.versions)
	if k > len(want) || !slices.Equal(st.versions, want[:k]) {
		return conflict("the version numbers differ")
	}
	if k > 0 && st.hasLive && st.live == st.versions[k-1] {
		b, n, err := m.To.LoadCertificate(ctx, name)
		if err != nil {
			var km *etcdstore.KeyMismatchError
			if errors.As(err, &km) {
				return conflict(fmt.Sprintf("its live version is encrypted with key %q, which this node's encryption_key_file lacks", km.KeyID))
			}
			return decision{outcome: Failed, err: err, detail: "reading it from etcd failed; run again"}
		}
		if n != st.live || !sameBundle(b, src.versions[k-1].b) {
			return conflict(fmt.Sprintf("version %d differs", st.live))
		}
		if k == len(want) {
			return decision{outcome: Already}
		}
		return decision{outcome: Copied, from: k}
	}
	switch {
	case k == 0 && !st.hasLive:
		return decision{outcome: Copied}
	case st.hasLive && k < len(want) && st.live == want[k]-1 && (k == 0 || st.live > st.versions[k-1]):
		// A run stopped between moving live over a gap and storing
		// the version after it.
		return decision{outcome: Copied, from: k}
	}
	return conflict("its live pointer names another version")
}

// copyVersions stores vs in etcd, each under its own number.
func (m *migrator) copyVersions(ctx context.Context, name string, vs []version) error {
	for _, v := range vs {
		undo, err := m.reserve(ctx, name, v.n)
		if err != nil {
			return err
		}
		n, err := m.To.PutCertificate(ctx, name, v.b)
		if err != nil {
			undo()
			return fmt.Errorf("storing version %d: %w", v.n, err)
		}
		if n != v.n {
			return fmt.Errorf("storing version %d: etcd numbered it %d: another writer stored a version of %s meanwhile", v.n, n, name)
		}
	}
	return nil
}

// readSource reads this host's certificate name without changing
// anything. Versions above the live one never went live (a store
// interrupted before its switch) and are not copied; an unreadable older
// version is reported and skipped (the others keep their numbers). An
// unreadable live version makes the whole certificate unreadable: ok is
// false, and the item is reported.
func (m *migrator) readSource(ctx context.Context, name string) (source, bool) {
	liveFile := filepath.Join(m.From.Dir(), "live", name)
	unreadable := func(file string, err error, detail string) (source, bool) {
		m.add(ctx, Item{Kind: KindCertificate, Name: name, File: file, EtcdKey: m.certEtcdKey(name), Outcome: Unreadable, Err: err, Detail: detail})
		return source{}, false
	}
	live, err := m.liveVersion(name)
	if err != nil {
		return unreadable(liveFile, err, fmt.Sprintf("which version is live cannot be told: repair live/%s on this host first (`detour status %s` says how), then run again", name, name))
	}
	nums, err := m.From.ArchiveVersions(ctx, name)
	if err != nil {
		return unreadable(filepath.Join(m.From.Dir(), "archive", name), err, "its archive cannot be read; make it readable and run again")
	}
	src := source{live: live}
	for _, n := range nums {
		if n > live {
			m.add(ctx, Item{Kind: KindVersion, Name: fmt.Sprintf("%s version %d", name, n), File: m.versionFiles(name, n), Outcome: Skipped,
				Detail: fmt.Sprintf("it never went live on this host (a store interrupted before its switch; live is version %d)", live)})
			continue
		}
		b, err := m.readVersion(ctx, name, n)
		if err != nil {
			if n == live {
				return unreadable(m.versionFiles(name, n), err, fmt.Sprintf("the live version %d cannot be read; repair it on this host (`detour status %s`), then run again", n, name))
			}
			m.add(ctx, Item{Kind: KindVersion, Name: fmt.Sprintf("%s version %d", name, n), File: m.versionFiles(name, n), EtcdKey: m.certEtcdKey(name),
				Outcome: Unreadable, Err: err,
				Detail: "this old version is not copied (the others keep their numbers); restore its files from a backup and run again to copy it"})
			continue
		}
		src.versions = append(src.versions, version{n: n, b: b})
	}
	if len(src.versions) == 0 || src.versions[len(src.versions)-1].n != live {
		return unreadable(m.versionFiles(name, live), fmt.Errorf("live/%s names version %d, whose archive files are incomplete", name, live),
			fmt.Sprintf("repair it on this host (`detour status %s`), then run again", name))
	}
	return src, true
}

// versionFiles names the archive files of version n, for messages.
func (m *migrator) versionFiles(name string, n int) string {
	return filepath.Join(m.From.Dir(), "archive", name, fmt.Sprintf("{cert,chain,privkey}%d.pem", n))
}

// readVersion reads version n of name from archive/ (the files live/
// links to) and checks it as store.FS.PutCertificate would.
func (m *migrator) readVersion(ctx context.Context, name string, n int) (store.Bundle, error) {
	var parts [3][]byte
	for i, kind := range []string{"cert", "chain", "privkey"} {
		b, err := m.From.Load(ctx, fmt.Sprintf("archive/%s/%s%d.pem", name, kind, n))
		if err != nil {
			return store.Bundle{}, err
		}
		parts[i] = b
	}
	b := store.Bundle{CertPEM: parts[0], ChainPEM: parts[1], KeyPEM: parts[2]}
	if err := b.Verify(); err != nil {
		return store.Bundle{}, fmt.Errorf("version %d: %w", n, err)
	}
	// Verify stops at the first thing in the chain that is not a PEM
	// block; a damaged chain file must not pass for a shorter chain.
	rest := b.ChainPEM
	for {
		block, r := pem.Decode(rest)
		if block == nil {
			break
		}
		rest = r
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return store.Bundle{}, fmt.Errorf("version %d: chain%d.pem holds something that is not a PEM certificate", n, n)
	}
	return b, nil
}

// archiveFileRE matches the base name of a live link's target in the
// layout of earlier versions and certbot.
var archiveFileRE = regexp.MustCompile(`^(cert|chain|fullchain|privkey)([0-9]+)\.pem$`)

// liveVersion returns the version live/<name> points at, reading the
// links only (store.FS's own reading repairs, which a migration must
// not): the link to ../archive/<name>/.vN, or the four links of the
// earlier layout, which must agree. A switch of those four left
// unfinished (.detour-swap) is an error: store.FS finishes it the next
// time it loads the certificate.
func (m *migrator) liveVersion(name string) (int, error) {
	p := filepath.Join(m.From.Dir(), "live", name)
	fi, err := os.Lstat(p)
	if err != nil {
		return 0, err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(p)
		if err != nil {
			return 0, err
		}
		n, err := strconv.Atoi(strings.TrimPrefix(target, "../archive/"+name+"/.v"))
		if err != nil || n <= 0 || target != "../archive/"+name+"/.v"+strconv.Itoa(n) {
			return 0, fmt.Errorf("live link %s points at %q, not ../archive/%s/.vN", p, target, name)
		}
		return n, nil
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("%s is neither a symbolic link nor a directory", p)
	}
	if _, err := os.Lstat(filepath.Join(p, ".detour-swap")); err == nil {
		return 0, fmt.Errorf("%s: a switch of its links was interrupted (.detour-swap)", p)
	}
	live := 0
	for _, kind := range []string{"cert", "chain", "fullchain", "privkey"} {
		target, err := os.Readlink(filepath.Join(p, kind+".pem"))
		if err != nil {
			return 0, err
		}
		mm := archiveFileRE.FindStringSubmatch(filepath.Base(target))
		n := 0
		if mm != nil && mm[1] == kind {
			n, _ = strconv.Atoi(mm[2])
		}
		if n <= 0 || (live != 0 && n != live) {
			return 0, fmt.Errorf("the links in %s do not all point at one archive version (%s -> %s)", p, kind+".pem", target)
		}
		live = n
	}
	return live, nil
}

// record copies the record r unless etcd holds it already.
func (m *migrator) record(ctx context.Context, r store.Record) {
	it := Item{Kind: KindRecord, Name: r.Name, File: m.file(recordKey(r.Name)), EtcdKey: m.recordEtcdKey(r.Name)}
	have, err := m.To.LoadRecord(ctx, r.Name)
	switch {
	case errors.Is(err, store.ErrNotExist):
		if !m.DryRun {
			if err := m.To.SaveRecord(ctx, r); err != nil {
				it.Outcome, it.Err, it.Detail = Failed, err, "writing to etcd failed; run again"
				break
			}
		}
		it.Outcome = Copied
	case err != nil:
		it.Outcome, it.Err = Failed, err
		it.Detail = fmt.Sprintf("reading the fleet's record failed; run again (if etcd answers, the fleet's record is damaged: repair or delete %s)", it.EtcdKey)
	case sameRecord(have, r):
		it.Outcome = Already
	default:
		it.Outcome = Conflict
		it.Detail = fmt.Sprintf("etcd already holds a different record for %s (version %d, serial %s; this host's: version %d, serial %s); not overwritten. "+
			"To keep the fleet's, leave it (this host's stays in %s); to use this host's, delete the fleet's (etcdctl del %s) and run again",
			r.Name, have.Version, have.Serial, r.Version, r.Serial, it.File, it.EtcdKey)
	}
	m.add(ctx, it)
}

// sameRecord compares two records as stored (JSON).
func sameRecord(a, b store.Record) bool {
	ja, erra := json.Marshal(a)
	jb, errb := json.Marshal(b)
	return erra == nil && errb == nil && string(ja) == string(jb)
}

// sameBundle compares two bundles byte for byte.
func sameBundle(a, b store.Bundle) bool {
	return string(a.CertPEM) == string(b.CertPEM) && string(a.ChainPEM) == string(b.ChainPEM) && string(a.KeyPEM) == string(b.KeyPEM)
}

// intList formats version numbers: "1, 2, 3", "none".
func intList(ns []int) string {
	if len(ns) == 0 {
		return "none"
	}
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}
