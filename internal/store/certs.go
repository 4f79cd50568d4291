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
	"strings"
)

// certFiles are the four files of a certificate version, in the order they
// are written and switched.
var certFiles = [...]string{"cert", "chain", "fullchain", "privkey"}

// intentFile, in live/<name>/, holds the version a swap is switching to
// while the symlinks are being replaced.
const intentFile = ".detour-swap"

// archiveFileRE matches an archive file name and captures its version.
var archiveFileRE = regexp.MustCompile(`^(cert|chain|fullchain|privkey)([0-9]+)\.pem$`)

// liveREADME is written once into live/<name>/.
const liveREADME = `This directory is managed by Detour.

cert.pem, chain.pem, fullchain.pem and privkey.pem are symbolic links to the
current version in ../../archive/<name>/. Point your server at these links,
not at the archive: Detour switches them to each renewed certificate.

  cert.pem       the certificate alone
  chain.pem      the intermediate certificates
  fullchain.pem  cert.pem followed by chain.pem (what most servers want)
  privkey.pem    the private key; keep it secret

Do not move or rename these files; renewal would stop updating them.
`

// ValidName checks a certificate name: 1-64 characters of a-z, 0-9, '.',
// '-' and '_', not starting with '.' or '-'. The name becomes a directory
// under archive/ and live/ and a file under renewal/.
func ValidName(name string) error {
	if len(name) == 0 || len(name) > 64 {
		return fmt.Errorf("invalid certificate name %q: must be 1-64 characters long", name)
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

func (f *FS) archiveDir(name string) string { return filepath.Join(f.dir, "archive", name) }
func (f *FS) liveDir(name string) string    { return filepath.Join(f.dir, "live", name) }

// LiveDir returns the directory of name's live files.
func (f *FS) LiveDir(name string) string { return f.liveDir(name) }

// archiveFile returns the path of one archive file of version n.
func (f *FS) archiveFile(name, kind string, n int) string {
	return filepath.Join(f.archiveDir(name), kind+strconv.Itoa(n)+".pem")
}

// linkTarget returns the relative symlink target certbot uses for one file
// of version n.
func linkTarget(name, kind string, n int) string {
	return "../../archive/" + name + "/" + kind + strconv.Itoa(n) + ".pem"
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
	counts, err := f.scanArchive(name)
	if err != nil {
		return nil, err
	}
	var out []int
	for n, c := range counts {
		if c == len(certFiles) {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

// scanArchive counts the archive files present per version.
func (f *FS) scanArchive(name string) (map[int]int, error) {
	ents, err := os.ReadDir(f.archiveDir(name))
	if err != nil {
		return nil, fmt.Errorf("reading archive of %q: %w", name, err)
	}
	counts := make(map[int]int)
	for _, e := range ents {
		m := archiveFileRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		n, err := strconv.Atoi(m[2])
		if err != nil || n <= 0 {
			continue
		}
		counts[n]++
	}
	return counts, nil
}

// PutCertificate stores b as the next version of name and makes it live.
//
// The bundle is verified first (the leaf and chain parse, the key parses and
// matches the leaf), so a mismatched pair never reaches live/. The four
// archive files are created and fsynced, then the intent file
// live/<name>/.detour-swap records the version, then each live symlink is
// replaced atomically, the directory is fsynced and the intent removed. A
// crash at any point leaves either the old version live or an intent that
// the next operation on name completes (see Recover).
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

	if err := f.recover(name); err != nil {
		return 0, fmt.Errorf("storing certificate %q: %w", name, err)
	}
	if err := f.mkdirs("archive/" + name); err != nil {
		return 0, fmt.Errorf("storing certificate %q: %w", name, err)
	}
	if err := f.mkdirs("live/" + name); err != nil {
		return 0, fmt.Errorf("storing certificate %q: %w", name, err)
	}
	n, err := f.nextVersion(name)
	if err != nil {
		return 0, fmt.Errorf("storing certificate %q: %w", name, err)
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
			return 0, fmt.Errorf("storing certificate %q: writing archive version %d: %w", name, n, err)
		}
	}
	if err := syncDir(f.archiveDir(name)); err != nil {
		return 0, fmt.Errorf("storing certificate %q: %w", name, err)
	}

	intent := filepath.Join(f.liveDir(name), intentFile)
	if err := writeFileAtomic(intent, []byte(strconv.Itoa(n)+"\n"), modePublic); err != nil {
		return 0, fmt.Errorf("storing certificate %q: writing swap intent: %w", name, err)
	}
	if err := f.swapLinks(name, n); err != nil {
		return 0, fmt.Errorf("storing certificate %q: %w", name, err)
	}
	if err := f.writeREADME(name); err != nil {
		return 0, fmt.Errorf("storing certificate %q: %w", name, err)
	}
	f.log.Debug("certificate stored", "name", name, "version", n, "path", f.liveDir(name))
	return n, nil
}

// nextVersion returns one more than the highest version any archive file or
// the live links use, so that a version half-written before a crash is
// never reused.
func (f *FS) nextVersion(name string) (int, error) {
	counts, err := f.scanArchive(name)
	if err != nil {
		return 0, err
	}
	high := 0
	for n := range counts {
		high = max(high, n)
	}
	if live, err := f.liveVersion(name); err == nil {
		high = max(high, live)
	}
	return high + 1, nil
}

// swapLinks points every live symlink of name at version n, each replaced
// by renaming a new symlink over it, then fsyncs live/<name> and removes the
// intent file. It is idempotent, so recovery can repeat it.
func (f *FS) swapLinks(name string, n int) error {
	dir := f.liveDir(name)
	for _, kind := range certFiles {
		tmp, err := tmpName(dir, kind+".pem")
		if err != nil {
			return err
		}
		if err := os.Symlink(linkTarget(name, kind, n), tmp); err != nil {
			return fmt.Errorf("creating symlink: %w", err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, kind+".pem")); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("switching %s.pem to version %d: %w", kind, n, err)
		}
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, intentFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing swap intent: %w", err)
	}
	return syncDir(dir)
}

// writeREADME writes live/<name>/README unless it exists.
func (f *FS) writeREADME(name string) error {
	p := filepath.Join(f.liveDir(name), "README")
	if _, err := os.Lstat(p); err == nil {
		return nil
	}
	text := strings.ReplaceAll(liveREADME, "<name>", name)
	if err := writeFileAtomic(p, []byte(text), modePublic); err != nil {
		return fmt.Errorf("writing README: %w", err)
	}
	return nil
}

// Recover completes or abandons a swap of name's live links interrupted by
// a crash. If live/<name>/.detour-swap exists and all four archive files of
// the version it names exist, the links are switched to that version (roll
// forward); otherwise the intent is removed and the previous version stays
// live. PutCertificate and LoadCertificate call it themselves; a daemon may
// call it for every name at start-up.
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
	dir := f.liveDir(name)
	f.removeStaleTemps(dir)
	intent := filepath.Join(dir, intentFile)
	raw, err := os.ReadFile(intent)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading swap intent: %w", err)
	}
	n, perr := strconv.Atoi(strings.TrimSpace(string(raw)))
	complete := perr == nil && n > 0
	for _, kind := range certFiles {
		if !complete {
			break
		}
		if _, err := os.Stat(f.archiveFile(name, kind, n)); err != nil {
			complete = false
		}
	}
	if complete {
		f.log.Warn("completing interrupted certificate swap", "name", name, "version", n, "path", dir)
		if err := f.swapLinks(name, n); err != nil {
			return fmt.Errorf("completing interrupted swap to version %d: %w", n, err)
		}
		return nil
	}
	f.log.Warn("dropping interrupted certificate swap: archive version incomplete",
		"name", name, "intent", strings.TrimSpace(string(raw)), "path", dir)
	if err := os.Remove(intent); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing swap intent: %w", err)
	}
	return syncDir(dir)
}

// removeStaleTemps removes temporary entries left in live/<name> by a crash.
// The caller holds the certificate lock, so none of them is in use.
func (f *FS) removeStaleTemps(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) && !e.IsDir() {
			p := filepath.Join(dir, e.Name())
			if err := os.Remove(p); err == nil {
				f.log.Debug("removed stale temporary file", "path", p)
			}
		}
	}
}

// liveVersion returns the version the live links of name point at; all
// four must agree.
func (f *FS) liveVersion(name string) (int, error) {
	version := 0
	for _, kind := range certFiles {
		p := filepath.Join(f.liveDir(name), kind+".pem")
		target, err := os.Readlink(p)
		if err != nil {
			return 0, fmt.Errorf("reading live link: %w", err)
		}
		m := archiveFileRE.FindStringSubmatch(filepath.Base(target))
		if m == nil || m[1] != kind {
			return 0, fmt.Errorf("live link %s points at %q, not an archive file %sN.pem; restore it or store the certificate again", p, target, kind)
		}
		n, err := strconv.Atoi(m[2])
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("live link %s points at %q, which has no valid version", p, target)
		}
		if version != 0 && n != version {
			return 0, fmt.Errorf("live links of %q point at different versions (%d and %d); store the certificate again", name, version, n)
		}
		version = n
	}
	return version, nil
}

// LoadCertificate returns the live version of name, read through the live/
// symlinks, and the version they point at. It first completes any
// interrupted swap (see Recover). A name never stored gives an error
// wrapping fs.ErrNotExist.
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
