package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// errExchangeUnsupported is wrapped by renameExchange when the OS or the
// filesystem cannot swap two paths atomically.
var errExchangeUnsupported = errors.New("atomic exchange of paths is not supported here")

// liveREADME is written into every version directory, so it shows as
// live/<name>/README. <name> and <N> are replaced.
const liveREADME = `This directory is managed by Detour. It holds version <N> of the
certificate "<name>".

  cert.pem       the certificate alone
  chain.pem      the intermediate certificates
  fullchain.pem  cert.pem followed by chain.pem (what most servers want)
  privkey.pem    the private key; keep it secret

Point your server at live/<name>/fullchain.pem and live/<name>/privkey.pem
(or cert.pem and chain.pem), not at the archive.

live/<name> is a symbolic link to ../archive/<name>/.v<N>, a directory of
links to this version's files in archive/<name>/ (cert<N>.pem, chain<N>.pem,
fullchain<N>.pem, privkey<N>.pem). Detour makes a renewed certificate live
by replacing the one link live/<name> in a single rename, so each of these
paths gives either the old version or the new one, never a mix, even if
Detour is killed half-way. Every earlier version stays in archive/<name>/.

Do not move, rename or edit anything here; renewal would stop updating it.
`

// readme returns the README of version n of name.
func readme(name string, n int) []byte {
	return []byte(strings.NewReplacer("<name>", name, "<N>", strconv.Itoa(n)).Replace(liveREADME))
}

// makeVersionDir creates archive/<name>/.vN with a relative symlink to each
// archive file of version n and a README, fsyncs it, and fsyncs
// archive/<name> so that the archive files and the directory survive a
// crash before live/<name> is switched to them.
func (f *FS) makeVersionDir(name string, n int) error {
	dir := f.versionDir(name, n)
	if err := os.Mkdir(dir, modePrivateDir); err != nil {
		return fmt.Errorf("creating version directory: %w", err)
	}
	// Mkdir applies the umask; set the intended mode exactly.
	if err := os.Chmod(dir, modePrivateDir); err != nil {
		return fmt.Errorf("setting mode of version directory: %w", err)
	}
	if err := f.fail("version dir"); err != nil {
		return err
	}
	for _, kind := range certFiles {
		target := "../" + kind + strconv.Itoa(n) + ".pem"
		if err := os.Symlink(target, filepath.Join(dir, kind+".pem")); err != nil {
			return fmt.Errorf("creating version link: %w", err)
		}
		if err := f.fail("version link " + kind); err != nil {
			return err
		}
	}
	if err := writeFileExclusive(filepath.Join(dir, "README"), readme(name, n), modePublic); err != nil {
		return fmt.Errorf("writing README: %w", err)
	}
	if err := f.fail("version readme"); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if err := syncDir(f.archiveDir(name)); err != nil {
		return err
	}
	return f.fail("version synced")
}

// switchLive makes version n of name live: a new symlink to its version
// directory is renamed over live/<name>, the commit point, and live/ is
// fsynced. A live/<name> directory (the earlier layout) is replaced by
// replaceLegacy.
func (f *FS) switchLive(name string, n int) (err error) {
	defer func() {
		if err != nil {
			// A temporary entry may stay behind: the next recovery
			// reads live/ again.
			f.leftoversMu.Lock()
			f.leftovers = nil
			f.leftoversMu.Unlock()
		}
	}()
	tmp, err := tmpName(f.liveRoot(), name)
	if err != nil {
		return err
	}
	if err := os.Symlink(liveLinkTarget(name, n), tmp); err != nil {
		return fmt.Errorf("creating live link: %w", err)
	}
	if err := f.fail("temp link"); err != nil {
		return err
	}
	dst := f.liveDir(name)
	fi, err := os.Lstat(dst)
	switch {
	case errors.Is(err, fs.ErrNotExist), err == nil && fi.Mode()&fs.ModeSymlink != 0:
		if err := os.Rename(tmp, dst); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("switching live/%s to version %d: %w", name, n, err)
		}
	case err != nil:
		_ = os.Remove(tmp)
		return fmt.Errorf("inspecting live/%s: %w", name, err)
	case fi.IsDir():
		return f.replaceLegacy(name, n, tmp)
	default:
		_ = os.Remove(tmp)
		return fmt.Errorf("%s is neither a symbolic link nor a directory; move it away and store the certificate again", dst)
	}
	if err := f.fail("switched"); err != nil {
		return err
	}
	return syncDir(f.liveRoot())
}

// replaceLegacy replaces the live/<name> directory of the earlier layout
// with tmp, the new symlink to version n. Where renameat2 RENAME_EXCHANGE
// works, the two are exchanged in one atomic step; elsewhere the directory
// is renamed aside and tmp renamed into place, and a crash between the two
// renames is undone by recoverLiveTemps. The old directory is removed last.
func (f *FS) replaceLegacy(name string, n int, tmp string) error {
	dst := f.liveDir(name)
	old := tmp // after an exchange, tmp names the old directory
	err := f.exchange(tmp, dst)
	switch {
	case err == nil:
	case errors.Is(err, errExchangeUnsupported):
		f.log.Debug("exchanging paths is not supported; converting live directory with two renames", "path", dst, "error", err)
		aside, err := tmpName(f.liveRoot(), name)
		if err != nil {
			_ = os.Remove(tmp)
			return err
		}
		if err := os.Rename(dst, aside); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("moving live/%s aside: %w", name, err)
		}
		if err := f.fail("legacy aside"); err != nil {
			return err
		}
		if err := os.Rename(tmp, dst); err != nil {
			// Put the directory back so that the old version stays live.
			if rerr := os.Rename(aside, dst); rerr != nil {
				return fmt.Errorf("switching live/%s to version %d: %w; restoring it: %w", name, n, err, rerr)
			}
			_ = os.Remove(tmp)
			return fmt.Errorf("switching live/%s to version %d: %w", name, n, err)
		}
		old = aside
	default:
		_ = os.Remove(tmp)
		return fmt.Errorf("switching live/%s to version %d: %w", name, n, err)
	}
	if err := f.fail("switched"); err != nil {
		return err
	}
	if err := syncDir(f.liveRoot()); err != nil {
		return err
	}
	if err := f.fail("live synced"); err != nil {
		return err
	}
	f.log.Info("converted live directory to a single link", "name", name, "version", n, "path", dst)
	return f.removeLegacyDir(old)
}

// liveTemps returns the temporary entries of name in live/: the names
// tmpName(live, name) makes, ".tmp-<name>-" and 16 hex digits. The fixed
// length keeps another name's entries out ("a" never matches
// ".tmp-a-b-...").
func (f *FS) liveTemps(name string) ([]string, error) {
	ents, err := os.ReadDir(f.liveRoot())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading live directory: %w", err)
	}
	prefix := tmpPrefix + name + "-"
	var out []string
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if ok && len(rest) == 16 && strings.Trim(rest, "0123456789abcdef") == "" {
			out = append(out, filepath.Join(f.liveRoot(), e.Name()))
		}
	}
	return out, nil
}

// leftoverTemps is liveTemps without reading live/ for every name: the
// first call reads it once and notes the temporary entries of every name;
// later calls answer from the note. Reading live/ (thousands of entries in
// a fleet) on every load and put made deploying N certificates quadratic.
// A name whose live/<name> is missing (a conversion interrupted between its
// renames, which needs its temporary entry) is always read afresh.
// Temporary entries this process makes are gone when its switch ends; one
// another process's crash leaves after the note is garbage beside an
// intact live/<name>, removed by the next process that starts.
func (f *FS) leftoverTemps(name string) ([]string, error) {
	if _, err := os.Lstat(f.liveDir(name)); err != nil {
		return f.liveTemps(name)
	}
	f.leftoversMu.Lock()
	defer f.leftoversMu.Unlock()
	if f.leftovers == nil {
		ents, err := os.ReadDir(f.liveRoot())
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading live directory: %w", err)
		}
		f.leftovers = map[string][]string{}
		for _, e := range ents {
			rest, ok := strings.CutPrefix(e.Name(), tmpPrefix)
			if !ok || len(rest) < 18 || rest[len(rest)-17] != '-' {
				continue
			}
			n, suffix := rest[:len(rest)-17], rest[len(rest)-16:]
			if strings.Trim(suffix, "0123456789abcdef") == "" {
				f.leftovers[n] = append(f.leftovers[n], filepath.Join(f.liveRoot(), e.Name()))
			}
		}
	}
	return f.leftovers[name], nil
}

// forgetTemps drops name's noted temporary entries once they are dealt
// with.
func (f *FS) forgetTemps(name string) {
	f.leftoversMu.Lock()
	defer f.leftoversMu.Unlock()
	delete(f.leftovers, name)
}

// recoverLiveTemps removes the temporary links a crash left in live/ for
// name, removes old live directories left by a finished conversion, and, if
// live/<name> is missing because a conversion without RENAME_EXCHANGE was
// interrupted between its two renames, renames the old directory back.
// The caller holds the certificate lock, so no temporary entry is in use.
func (f *FS) recoverLiveTemps(name string) error {
	temps, err := f.leftoverTemps(name)
	if err != nil || len(temps) == 0 {
		return err
	}
	defer f.forgetTemps(name)
	dst := f.liveDir(name)
	_, err = os.Lstat(dst)
	missing := errors.Is(err, fs.ErrNotExist)
	if err != nil && !missing {
		return fmt.Errorf("inspecting live/%s: %w", name, err)
	}
	for _, p := range temps {
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		switch {
		case fi.IsDir() && missing && isLegacyDir(p):
			f.log.Warn("restoring live directory left aside by an interrupted conversion", "name", name, "path", dst)
			if err := os.Rename(p, dst); err != nil {
				return fmt.Errorf("restoring live/%s from %s: %w", name, p, err)
			}
			missing = false
		case fi.IsDir():
			if err := f.removeLegacyDir(p); err != nil {
				return err
			}
		default:
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("removing temporary link: %w", err)
			}
			f.log.Debug("removed stale temporary link", "path", p)
		}
	}
	return syncDir(f.liveRoot())
}

// isLegacyDir reports whether dir still holds a cert.pem link, as a live
// directory of the earlier layout moved aside does; one already emptied by
// removeLegacyDir does not.
func isLegacyDir(dir string) bool {
	fi, err := os.Lstat(filepath.Join(dir, "cert.pem"))
	return err == nil && fi.Mode()&fs.ModeSymlink != 0
}

// removeOrphanVersions removes the version directories of name newer than
// the live version (all of them when no version directory is live): they
// were made by a PutCertificate that crashed before its switch and never
// went live. Their archive files stay, as ArchiveVersions reports them and
// their numbers are never reused. Older version directories, which were
// live once, are kept. A live/<name> link that is not Detour's leaves the
// archive alone.
func (f *FS) removeOrphanVersions(name string) error {
	scan, err := f.scanArchive(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	live := 0
	if target, err := os.Readlink(f.liveDir(name)); err == nil {
		n, ok := parseLiveTarget(name, target)
		if !ok {
			return nil
		}
		live = n
	}
	removed := false
	for _, n := range scan.dirs {
		if n <= live {
			continue
		}
		dir := f.versionDir(name, n)
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("removing version directory that never went live: %w", err)
		}
		f.log.Debug("removed version directory that never went live", "name", name, "version", n, "path", dir)
		removed = true
	}
	if removed {
		return syncDir(f.archiveDir(name))
	}
	return nil
}
