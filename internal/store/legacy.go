package store

// The layout of earlier Detour versions, and of certbot: live/<name>/ is a
// directory of four symlinks straight into archive/<name>/, switched one by
// one. It is still read (LoadCertificate, imports from certbot), an
// interrupted switch of it is still completed, and PutCertificate converts
// it to the single live link (replaceLegacy). Nothing here writes a new
// version in this layout.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// intentFile, in a live/<name>/ directory of the earlier layout, holds the
// version a swap of its four links was switching to.
const intentFile = ".detour-swap"

// linkTarget returns the relative symlink target of one live file of
// version n in the earlier layout, the one certbot uses.
func linkTarget(name, kind string, n int) string {
	return "../../archive/" + name + "/" + kind + strconv.Itoa(n) + ".pem"
}

// legacyVersion returns the version the four links of a live/<name>
// directory point at; all four must agree.
func (f *FS) legacyVersion(name string) (int, error) {
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

// recoverLegacy completes or abandons a swap of the four links of a
// live/<name> directory interrupted by a crash of an earlier Detour
// version. If live/<name>/.detour-swap exists and all four archive files of
// the version it names exist, the links are switched to that version (roll
// forward); otherwise the intent is removed and the previous version stays
// live. Temporary links in the directory are removed.
func (f *FS) recoverLegacy(name string) error {
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

// swapLinks points every link of a live/<name> directory at version n, each
// replaced by renaming a new symlink over it, then fsyncs the directory and
// removes the intent file. It is idempotent, so recovery can repeat it.
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

// removeStaleTemps removes temporary entries left in a live/<name>
// directory by a crash. The caller holds the certificate lock, so none of
// them is in use.
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

// removeLegacyDir removes a live directory of the earlier layout once it is
// no longer live/<name>: the entries Detour or certbot made in it (the four
// links, README, the intent file, temporary links), then the directory.
// Anything else in it is left, with a warning, rather than deleted.
func (f *FS) removeLegacyDir(dir string) error {
	known := map[string]bool{"README": true, intentFile: true}
	for _, kind := range certFiles {
		known[kind+".pem"] = true
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading old live directory: %w", err)
	}
	for _, e := range ents {
		if !known[e.Name()] && !(strings.HasPrefix(e.Name(), tmpPrefix) && !e.IsDir()) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing old live directory: %w", err)
		}
	}
	if err := os.Remove(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		f.log.Warn("old live directory holds files Detour did not make; move them elsewhere and remove the directory",
			"path", dir, "error", err)
		return nil
	}
	f.log.Debug("removed old live directory", "path", dir)
	return syncDir(filepath.Dir(dir))
}
