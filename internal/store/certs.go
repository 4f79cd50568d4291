package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
)

// certFiles are the four files of a certificate version, in the order they
// are written.
var certFiles = [...]string{"cert", "chain", "fullchain", "privkey"}

// archiveFileRE matches an archive file name and captures its version.
var archiveFileRE = regexp.MustCompile(`^(cert|chain|fullchain|privkey)([0-9]+)\.pem$`)

// versionDirRE matches the name of a version directory in archive/<name>/
// and captures its version.
var versionDirRE = regexp.MustCompile(`^\.v([0-9]+)$`)

// MaxNameLen is the longest certificate name ValidName accepts. A name is
// one path component of several files ("renewal/<name>.json",
// "locks/.cert-<name>.lock", temporary ".tmp-<name>.json-<random>" and
// ".tmp-<name>-<16 hex>"), and file systems allow 255 bytes per component;
// 64 leaves room for every decoration and keeps paths such as
// live/<name>/fullchain.pem short enough to type into a server's
// configuration. DNS names are longer (253 characters): config.DefaultName
// shortens the names it derives from them to fit.
const MaxNameLen = 64

// ValidName checks a certificate name: 1 to MaxNameLen characters of a-z,
// 0-9, '.', '-' and '_', not starting with '.' or '-'. The name becomes a
// directory under archive/ and live/ and a file under renewal/.
func ValidName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLen {
		return fmt.Errorf("invalid certificate name %q: must be 1-%d characters long", name, MaxNameLen)
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("invalid certificate name %q: must not start with %q", name, name[0])
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("invalid certificate name %q: use only lower-case letters a-z, digits 0-9, '.', '-' and '_'", name)
		}
	}
	return nil
}

// LivePath returns the path of file ("cert.pem", "chain.pem",
// "fullchain.pem" or "privkey.pem") in live/<name>/, the path to give a
// server. It does not check that the file exists.
func (f *FS) LivePath(name, file string) string {
	return filepath.Join(f.dir, "live", name, file)
}

// LiveDir returns the directory of name's live files.
func (f *FS) LiveDir(name string) string { return f.liveDir(name) }

func (f *FS) archiveDir(name string) string { return filepath.Join(f.dir, "archive", name) }
func (f *FS) liveDir(name string) string    { return filepath.Join(f.dir, "live", name) }
func (f *FS) liveRoot() string              { return filepath.Join(f.dir, "live") }

// archiveFile returns the path of one archive file of version n.
func (f *FS) archiveFile(name, kind string, n int) string {
	return filepath.Join(f.archiveDir(name), kind+strconv.Itoa(n)+".pem")
}

// versionDir returns the path of archive/<name>/.vN, the directory
// live/<name> points at while version n is live.
func (f *FS) versionDir(name string, n int) string {
	return filepath.Join(f.archiveDir(name), ".v"+strconv.Itoa(n))
}

// liveLinkTarget returns the target of live/<name> while version n is live.
func liveLinkTarget(name string, n int) string {
	return "../archive/" + name + "/.v" + strconv.Itoa(n)
}

// parseLiveTarget returns the version a live/<name> target names; ok is
// false unless target is exactly what liveLinkTarget makes.
func parseLiveTarget(name, target string) (n int, ok bool) {
	m := versionDirRE.FindStringSubmatch(filepath.Base(target))
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n <= 0 || target != liveLinkTarget(name, n) {
		return 0, false
	}
	return n, true
}

// ArchiveVersions returns, ascending, the versions of name whose four
// archive files all exist. Versions left incomplete by a crash are not
// listed (but their numbers are never reused). It returns an error wrapping
// fs.ErrNotExist when name has no archive directory.
func (f *FS) ArchiveVersions(ctx context.Context, name string) ([]int, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	scan, err := f.scanArchive(name)
	if err != nil {
		return nil, err
	}
	var out []int
	for n, c := range scan.files {
		if c == len(certFiles) {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

// archiveScan is what archive/<name>/ holds.
type archiveScan struct {
	files map[int]int // archive files present, per version
	dirs  []int       // versions that have a .vN directory, ascending
}

// scanArchive reads archive/<name>/.
func (f *FS) scanArchive(name string) (archiveScan, error) {
	ents, err := os.ReadDir(f.archiveDir(name))
	if err != nil {
		return archiveScan{}, fmt.Errorf("reading archive of %q: %w", name, err)
	}
	scan := archiveScan{files: make(map[int]int)}
	for _, e := range ents {
		if m := archiveFileRE.FindStringSubmatch(e.Name()); m != nil {
			if n, err := strconv.Atoi(m[2]); err == nil && n > 0 {
				scan.files[n]++
			}
			continue
		}
		if m := versionDirRE.FindStringSubmatch(e.Name()); m != nil && e.IsDir() {
			if n, err := strconv.Atoi(m[1]); err == nil && n > 0 {
				scan.dirs = append(scan.dirs, n)
			}
		}
	}
	sort.Ints(scan.dirs)
	return scan, nil
}

// nextVersion returns one more than the highest version any archive file,
// version directory or the live link uses, so that a version half-written
// before a crash is never reused.
func (f *FS) nextVersion(name string) (int, error) {
	scan, err := f.scanArchive(name)
	if err != nil {
		return 0, err
	}
	high := 0
	for n := range scan.files {
		high = max(high, n)
	}
	for _, n := range scan.dirs {
		high = max(high, n)
	}
	if live, err := f.liveVersion(name); err == nil {
		high = max(high, live)
	}
	return high + 1, nil
}

// PutCertificate stores b as the next version of name and makes it live.
//
// The bundle is verified first (the leaf and chain parse, the key parses and
// matches the leaf), so a mismatched pair never reaches live/. The four
// archive files are created (O_EXCL) and fsynced, the version directory
// archive/<name>/.vN with its four links and README is created and fsynced,
// and then one rename of a new symlink over live/<name> makes version N
// live (see the package documentation). A crash at any point leaves the
// previous version or the new one wholly live; nothing needs repairing, and
// Recover only tidies leftovers. A live/<name> directory in the layout of
// earlier Detour versions or certbot is converted by the same switch.
func (f *FS) PutCertificate(ctx context.Context, name string, b Bundle) (version int, err error) {
	if err := ValidName(name); err != nil {
		return 0, err
	}
	if err := b.Verify(); err != nil {
		return 0, fmt.Errorf("storing certificate %q: %w", name, err)
	}
	unlock, err := f.acquire(ctx, certLockKey(name), true)
	if err != nil {
		return 0, fmt.Errorf("storing certificate %q: locking: %w", name, err)
	}
	defer func() { _ = unlock() }()
	n, err := f.put(name, b)
	if err != nil {
		return 0, fmt.Errorf("storing certificate %q: %w", name, err)
	}
	f.log.Debug("certificate stored", "name", name, "version", n, "path", f.liveDir(name))
	return n, nil
}

// put is PutCertificate with the certificate lock held. Each failpoint
// return leaves the disk exactly as a crash at that step would.
func (f *FS) put(name string, b Bundle) (int, error) {
	if err := f.recover(name); err != nil {
		return 0, err
	}
	if err := f.fail("recovered"); err != nil {
		return 0, err
	}
	if err := f.mkdirs("archive/" + name); err != nil {
		return 0, err
	}
	if err := f.mkdirs("live"); err != nil {
		return 0, err
	}
	n, err := f.nextVersion(name)
	if err != nil {
		return 0, err
	}
	contents := map[string][]byte{
		"cert":      b.CertPEM,
		"chain":     b.ChainPEM,
		"fullchain": b.FullchainPEM(),
		"privkey":   b.KeyPEM,
	}
	for _, kind := range certFiles {
		mode := modePublic
		if kind == "privkey" {
			mode = modeSecret
		}
		if err := writeFileExclusive(f.archiveFile(name, kind, n), contents[kind], mode); err != nil {
			f.dropVersion(name, n)
			return 0, fmt.Errorf("writing archive version %d: %w", n, err)
		}
		if err := f.fail("archive " + kind); err != nil {
			return 0, err
		}
	}
	if err := f.makeVersionDir(name, n); err != nil {
		f.dropVersion(name, n)
		return 0, fmt.Errorf("preparing version %d: %w", n, err)
	}
	if err := f.switchLive(name, n); err != nil {
		return 0, err
	}
	return n, nil
}

// dropVersion removes what a PutCertificate that failed (a full disk)
// wrote of version n, which nothing points at: no partial archive files
// stay behind.
func (f *FS) dropVersion(name string, n int) {
	for _, kind := range certFiles {
		if err := os.Remove(f.archiveFile(name, kind, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			f.log.Warn("removing a partial archive file", "certificate", name, "version", n, "error", err)
		}
	}
	if err := os.RemoveAll(f.versionDir(name, n)); err != nil {
		f.log.Warn("removing a partial version directory", "certificate", name, "version", n, "error", err)
	}
}

// liveVersion returns the live version of name: the version live/<name>
// points at or, for the layout of earlier versions and certbot, the version
// its four links agree on. A name with nothing in live/ gives an error
// wrapping fs.ErrNotExist.
func (f *FS) liveVersion(name string) (int, error) {
	p := f.liveDir(name)
	fi, err := os.Lstat(p)
	if err != nil {
		return 0, fmt.Errorf("reading live version: %w", err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return 0, fmt.Errorf("reading live link: %w", err)
		}
		n, ok := parseLiveTarget(name, target)
		if !ok {
			return 0, fmt.Errorf("live link %s points at %q, not ../archive/%s/.vN; remove it and store the certificate again",
				p, target, name)
		}
		return n, nil
	case fi.IsDir():
		return f.legacyVersion(name)
	default:
		return 0, fmt.Errorf("%s is neither a symbolic link nor a directory; move it away and store the certificate again", p)
	}
}

// Recover tidies what a PutCertificate of name interrupted by a crash left
// behind: temporary links in live/, version directories that never went
// live, a live directory of the earlier layout left aside by an interrupted
// conversion (it is put back). It also completes, or abandons, a swap of the
// earlier layout's four links recorded in live/<name>/.detour-swap (see
// recoverLegacy). PutCertificate and LoadCertificate call it themselves; a
// daemon may call it for every name at start-up.
func (f *FS) Recover(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	unlock, err := f.acquire(ctx, certLockKey(name), true)
	if err != nil {
		return fmt.Errorf("recovering certificate %q: locking: %w", name, err)
	}
	defer func() { _ = unlock() }()
	if err := f.recover(name); err != nil {
		return fmt.Errorf("recovering certificate %q: %w", name, err)
	}
	return nil
}

// recover is Recover with the certificate lock held.
func (f *FS) recover(name string) error {
	if err := f.recoverLiveTemps(name); err != nil {
		return err
	}
	if fi, err := os.Lstat(f.liveDir(name)); err == nil && fi.IsDir() {
		if err := f.recoverLegacy(name); err != nil {
			return err
		}
	}
	return f.removeOrphanVersions(name)
}

// LoadCertificate returns the live version of name, read through the live/
// paths, and its version number. It first tidies up after a crash (see
// Recover). A name never stored gives an error wrapping fs.ErrNotExist.
func (f *FS) LoadCertificate(ctx context.Context, name string) (b Bundle, version int, err error) {
	if err := ValidName(name); err != nil {
		return Bundle{}, 0, err
	}
	unlock, err := f.acquire(ctx, certLockKey(name), true)
	if err != nil {
		return Bundle{}, 0, fmt.Errorf("loading certificate %q: locking: %w", name, err)
	}
	defer func() { _ = unlock() }()
	if err := f.recover(name); err != nil {
		return Bundle{}, 0, fmt.Errorf("loading certificate %q: %w", name, err)
	}
	version, err = f.liveVersion(name)
	if err != nil {
		return Bundle{}, 0, fmt.Errorf("loading certificate %q: %w", name, err)
	}
	// The lock keeps every PutCertificate out, so the three reads see one
	// version.
	read := func(kind string) ([]byte, error) {
		return os.ReadFile(f.LivePath(name, kind+".pem"))
	}
	if b.CertPEM, err = read("cert"); err == nil {
		if b.ChainPEM, err = read("chain"); err == nil {
			b.KeyPEM, err = read("privkey")
		}
	}
	if err != nil {
		return Bundle{}, 0, fmt.Errorf("loading certificate %q version %d: %w", name, version, err)
	}
	return b, version, nil
}

// fail calls the test failpoint, if any, for step.
func (f *FS) fail(step string) error {
	if f.failpoint == nil {
		return nil
	}
	if err := f.failpoint(step); err != nil {
		return fmt.Errorf("failpoint %q: %w", step, err)
	}
	return nil
}
