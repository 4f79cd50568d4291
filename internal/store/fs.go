package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// File and directory modes used by FS.
//
// Secrets (private keys) are 0600 and everything else 0644. Directories that
// hold secrets or point at them — accounts/, archive/ and live/ — are 0700,
// with everything below them, as certbot makes archive/ and live/ (certbot's
// choice is kept so that tools expecting its layout see the same
// permissions; a server reading live/ runs as root, as with certbot).
// locks/ is 0700 too: only Detour itself takes the locks. Other directories
// (renewal/) are 0755. A state directory NewFS creates is 0700.
// Modes are set explicitly, so the umask does not change them; directories
// that already exist are left as they are.
const (
	modeSecret     fs.FileMode = 0o600
	modePublic     fs.FileMode = 0o644
	modePrivateDir fs.FileMode = 0o700
	modePublicDir  fs.FileMode = 0o755
)

// tmpPrefix starts the name of every temporary file FS creates. Keys may not
// use it, and List never reports such files.
const tmpPrefix = ".tmp-"

// privateRoots are the top-level directories created 0700, with all their
// subdirectories.
var privateRoots = map[string]bool{"accounts": true, "archive": true, "live": true, "locks": true}

// FSOptions configures an FS.
type FSOptions struct {
	// Logger receives recovery and locking events; nil discards them.
	Logger *slog.Logger
}

// FS is the filesystem backend: Storage, Locker and Certs on one state
// directory, with certificates in the certbot layout described in the
// package documentation. An FS is safe for concurrent use by goroutines, and
// several processes may share one state directory: locks are flock(2) locks
// and every write is a rename of a fully written and fsynced file.
type FS struct {
	dir string
	log *slog.Logger

	mu   sync.Mutex
	sems map[string]chan struct{} // in-process lock per lock file; one per name ever locked

	// exchange swaps two paths atomically (renameExchange); tests replace
	// it to exercise the fallback for filesystems that cannot.
	exchange func(a, b string) error
	// failpoint, set only by tests, is called at each step of
	// PutCertificate; a non-nil error stops it there as a crash would,
	// leaving everything on disk as it is.
	failpoint func(step string) error

	// leftovers caches, from one read of live/, the temporary entries a
	// crash left there, by certificate name (see leftoverTemps); nil
	// before the first read.
	leftoversMu sync.Mutex
	leftovers   map[string][]string
}

var (
	_ Storage = (*FS)(nil)
	_ Locker  = (*FS)(nil)
	_ Certs   = (*FS)(nil)
)

// NewFS returns an FS rooted at dir, creating dir (mode 0700) if it does not
// exist; the mode of an existing dir is not changed. It checks that dir can be written by creating and removing a
// temporary file, so that a bad --state-dir is reported at start-up rather
// than after a certificate has been issued.
func NewFS(dir string, opts FSOptions) (*FS, error) {
	if dir == "" {
		return nil, errors.New("state directory is empty: set one with --state-dir")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving state directory %q: %w", dir, err)
	}
	if err := os.MkdirAll(abs, modePrivateDir); err != nil {
		return nil, stateDirError(abs, "creating it", err)
	}
	probe, err := os.CreateTemp(abs, tmpPrefix+"probe-")
	if err != nil {
		return nil, stateDirError(abs, "writing to it", err)
	}
	name := probe.Name()
	closeErr := probe.Close()
	if err := os.Remove(name); err != nil {
		return nil, stateDirError(abs, "removing a test file from it", err)
	}
	if closeErr != nil {
		return nil, stateDirError(abs, "writing to it", closeErr)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &FS{dir: abs, log: logger, sems: make(map[string]chan struct{}), exchange: renameExchange}, nil
}

// stateDirError builds the error NewFS returns: it names the directory, the
// OS reason and what the user can do about it.
func stateDirError(dir, doing string, err error) error {
	reason := err
	var pe *fs.PathError
	if errors.As(err, &pe) {
		reason = pe.Err
	}
	return fmt.Errorf("state directory %q cannot be used: %s: %w; choose another with --state-dir or run as a user who can write it",
		dir, doing, reason)
}

// Dir returns the absolute path of the state directory.
func (f *FS) Dir() string { return f.dir }

// ValidKey reports whether key is an acceptable Storage key, for every
// backend: relative, "/" separated, with no empty, "." or ".." elements, no
// backslashes or NUL bytes, and no element starting with ".tmp-" (reserved
// for the filesystem's temporary files).
func ValidKey(key string) error {
	if key == "" {
		return errors.New("invalid key: empty")
	}
	if strings.HasPrefix(key, "/") {
		return fmt.Errorf("invalid key %q: must be relative, not start with \"/\"", key)
	}
	if strings.ContainsAny(key, "\\\x00") {
		return fmt.Errorf("invalid key %q: must not contain backslashes or NUL bytes; use \"/\" as the separator", key)
	}
	for _, el := range strings.Split(key, "/") {
		switch {
		case el == "":
			return fmt.Errorf("invalid key %q: empty path element", key)
		case el == "." || el == "..":
			return fmt.Errorf("invalid key %q: must not contain %q elements", key, el)
		case strings.HasPrefix(el, tmpPrefix):
			return fmt.Errorf("invalid key %q: elements starting with %q are reserved", key, tmpPrefix)
		}
	}
	return nil
}

// IsSecret reports whether key names a secret, for every backend: its
// last element ends in ".key" or starts with "privkey" (kept 0600 on disk,
// encrypted in etcd).
func IsSecret(key string) bool {
	base := key
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		base = key[i+1:]
	}
	return strings.HasSuffix(base, ".key") || strings.HasPrefix(base, "privkey")
}

// path returns the filesystem path of a validated key.
func (f *FS) path(key string) string {
	return filepath.Join(f.dir, filepath.FromSlash(key))
}

// Load returns the value stored under key. A missing key gives an error
// wrapping fs.ErrNotExist.
func (f *FS) Load(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := ValidKey(key); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(f.path(key))
	if err != nil {
		return nil, fmt.Errorf("loading %q: %w", key, err)
	}
	return b, nil
}

// Store writes value under key atomically: the value goes to a temporary
// file in the same directory, which is fsynced and renamed over the key, and
// the directory is fsynced. Secret keys are written 0600, others 0644.
func (f *FS) Store(ctx context.Context, key string, value []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidKey(key); err != nil {
		return err
	}
	if err := f.mkdirs(parentKey(key)); err != nil {
		return fmt.Errorf("storing %q: %w", key, err)
	}
	mode := modePublic
	if IsSecret(key) {
		mode = modeSecret
	}
	if err := writeFileAtomic(f.path(key), value, mode); err != nil {
		return fmt.Errorf("storing %q: %w", key, err)
	}
	return nil
}

// Delete removes key; a missing key is not an error.
func (f *FS) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidKey(key); err != nil {
		return err
	}
	p := f.path(key)
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting %q: %w", key, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("deleting %q: it is a directory, not a key", key)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting %q: %w", key, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("deleting %q: %w", key, err)
	}
	return nil
}

// List returns, sorted, the keys at or below prefix, which is a key or a
// directory of keys ("accounts", "accounts/" and "" for everything). A
// prefix that does not exist gives an empty list. Symbolic links (live/)
// are listed as keys; temporary files are not.
func (f *FS) List(ctx context.Context, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	prefix = strings.TrimSuffix(prefix, "/")
	root := f.dir
	if prefix != "" {
		if err := ValidKey(prefix); err != nil {
			return nil, err
		}
		root = f.path(prefix)
	}
	var keys []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), tmpPrefix) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(f.dir, p)
		if err != nil {
			return err
		}
		keys = append(keys, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing %q: %w", prefix, err)
	}
	sort.Strings(keys)
	return keys, nil
}

// parentKey returns the key of the directory holding key ("" for the root).
func parentKey(key string) string {
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		return key[:i]
	}
	return ""
}

// mkdirs creates the directory dirKey and its parents under the state
// directory with the modes described at modePrivateDir. Existing directories
// are left as they are.
func (f *FS) mkdirs(dirKey string) error {
	if dirKey == "" {
		return nil
	}
	els := strings.Split(dirKey, "/")
	mode := modePublicDir
	if privateRoots[els[0]] {
		mode = modePrivateDir
	}
	p := f.dir
	for _, el := range els {
		p = filepath.Join(p, el)
		err := os.Mkdir(p, mode)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("creating directory: %w", err)
		}
		// Mkdir applies the umask; set the intended mode exactly.
		if err := os.Chmod(p, mode); err != nil {
			return fmt.Errorf("setting directory mode: %w", err)
		}
		if err := syncDir(filepath.Dir(p)); err != nil {
			return err
		}
	}
	return nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory: write, fsync, chmod, rename, fsync the directory.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tmpPrefix+filepath.Base(path)+"-")
	if err != nil {
		return fmt.Errorf("creating temporary file: %w", err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			_ = tmp.Close()
			_ = os.Remove(name)
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("setting file mode: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("writing temporary file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("syncing temporary file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("closing temporary file: %w", err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("renaming into place: %w", err)
	}
	ok = true
	return syncDir(dir)
}

// writeFileExclusive creates path, which must not exist, writes data and
// fsyncs it. It does not fsync the directory.
func writeFileExclusive(path string, data []byte, mode fs.FileMode) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if err := fh.Chmod(mode); err != nil {
		_ = fh.Close()
		return fmt.Errorf("setting mode of %s: %w", path, err)
	}
	if _, err := fh.Write(data); err != nil {
		_ = fh.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := fh.Sync(); err != nil {
		_ = fh.Close()
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", path, err)
	}
	return nil
}

// syncDir fsyncs a directory so that renames and creations in it survive a
// crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening directory to sync: %w", err)
	}
	err = d.Sync()
	closeErr := d.Close()
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	if closeErr != nil {
		return fmt.Errorf("closing directory %s: %w", dir, closeErr)
	}
	return nil
}

// tmpName returns a fresh temporary name in dir for base.
func tmpName(dir, base string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating temporary name: %w", err)
	}
	return filepath.Join(dir, tmpPrefix+base+"-"+hex.EncodeToString(b[:])), nil
}
