// Package webroot implements the "webroot" validation path: the web server
// that owns port 80 keeps serving, and Detour writes each http-01 answer
// (RFC 8555 §8.3) as a static file under its document root:
//
//	<root>/.well-known/acme-challenge/<token>  containing the key authorization
//
// Files are written atomically (a temporary file renamed into place), so the
// web server never serves half an answer. Directories that do not exist are
// created and, once the last answer is cleaned up, removed again if empty;
// directories that existed before are never removed. Tokens are checked to
// be base64url (RFC 8555 §8.1).
//
// Nothing is ever created or removed outside the document root, even while
// someone who can write it swaps directories for symbolic links: every file
// and directory below the root is reached from the root's file descriptor
// one name at a time, with openat2(2) RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS
// where the kernel has it and openat(2) O_NOFOLLOW otherwise, so the kernel
// follows no link there. A link at .well-known or acme-challenge that stays
// inside the root is read and followed by Detour itself, confined to the
// root; one that leads out of it is refused.
package webroot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// Default permissions: the web server usually runs as another user and must
// be able to read the answer.
const (
	DefaultDirMode  fs.FileMode = 0o755
	DefaultFileMode fs.FileMode = 0o644
)

// The directories between the root and the answers (RFC 8615, RFC 8555 §8.3).
const (
	wellKnown     = ".well-known"
	acmeChallenge = "acme-challenge"
)

// Options configures a webroot solver.
type Options struct {
	// Logger receives diagnostics. Nil discards everything.
	Logger *slog.Logger
	// Root is the document root the web server serves on port 80 for the
	// certificate's names (nginx: `root`; Apache: DocumentRoot). It must
	// exist; Detour never creates it.
	Root string
	// DirMode is the permission of directories Detour creates
	// (DefaultDirMode when zero). It is applied exactly, whatever the umask.
	DirMode fs.FileMode
	// FileMode is the permission of answer files (DefaultFileMode when
	// zero). It is applied exactly, whatever the umask.
	FileMode fs.FileMode
}

var discardLogger = slog.New(slog.DiscardHandler)

// mkdirat is unix.Mkdirat; tests replace it to fail halfway through
// Present.
var mkdirat = unix.Mkdirat

// Solver writes http-01 answers into a web server's document root. It is
// safe for concurrent use.
type Solver struct {
	log      *slog.Logger
	root     string
	dirMode  fs.FileMode
	fileMode fs.FileMode

	mu      sync.Mutex
	files   map[string]answer // token -> its file
	created []string          // directories this solver created, relative to the root, outermost first
}

// answer is a file Present wrote.
type answer struct {
	n   int    // Presents holding it
	dir string // its directory relative to the root, symbolic links resolved
}

var _ solve.Solver = (*Solver)(nil)

// New returns a webroot solver. It touches nothing until Present.
func New(opts Options) (*Solver, error) {
	if opts.Root == "" {
		return nil, errors.New("webroot path: root is empty; set root = to the directory your web server serves on port 80 (nginx: its `root` directive; Apache: DocumentRoot)")
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("resolving webroot %s: %w", opts.Root, err)
	}
	s := &Solver{
		log:      opts.Logger,
		root:     root,
		dirMode:  opts.DirMode.Perm(),
		fileMode: opts.FileMode.Perm(),
		files:    make(map[string]answer),
	}
	if s.log == nil {
		s.log = discardLogger
	}
	if s.dirMode == 0 {
		s.dirMode = DefaultDirMode
	}
	if s.fileMode == 0 {
		s.fileMode = DefaultFileMode
	}
	return s, nil
}

// Root returns the absolute document root.
func (s *Solver) Root() string { return s.root }

// Type returns solve.HTTP01.
func (s *Solver) Type() string { return solve.HTTP01 }

// Check reports whether answers for id can be written now: wildcards cannot
// use http-01, the root must be an existing directory, the challenge
// directories must not lead outside it, and Detour must be able to create a
// file where the answers go. Check cannot see whether the web server
// serves this root for id; the self-check proves that after Present.
func (s *Solver) Check(ctx context.Context, id ident.Identifier) error {
	if !solve.Applicable(solve.HTTP01, id) {
		return fmt.Errorf("%w: http-01 cannot validate %q; wildcard names need a dns-01 path", solve.ErrNotApplicable, id.Value)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.openRoot(id.Value)
	if err != nil {
		return err
	}
	defer unix.Close(r.fd)
	// Probe the deepest directory that exists: that is where Present
	// writes (or creates the next directory).
	fd, rel, err := s.walk(r, false)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	name, f, err := createTemp(fd, ".detour-probe-")
	if err != nil {
		return s.explainWrite(s.display(rel), err)
	}
	f.Close()
	if err := unix.Unlinkat(fd, name, 0); err != nil {
		return fmt.Errorf("removing probe file %s: %w", s.display(path.Join(rel, name)), err)
	}
	return nil
}

// Present writes ch's key authorization to
// <root>/.well-known/acme-challenge/<token>.
func (s *Solver) Present(ctx context.Context, ch solve.Challenge) error {
	if err := validate(ch); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.openRoot(ch.Identifier.Value)
	if err != nil {
		return fmt.Errorf("presenting http-01 for %q in webroot %s: %w", ch.Identifier.Value, s.root, err)
	}
	defer unix.Close(r.fd)
	dir, err := s.present(r, ch)
	if err != nil {
		if s.total() == 0 {
			// Nothing else is presented: undo the directories this
			// failed attempt created.
			s.removeCreated(r.fd)
		}
		return fmt.Errorf("presenting http-01 for %q in webroot %s: %w", ch.Identifier.Value, s.root, err)
	}
	s.files[ch.Token] = answer{n: s.files[ch.Token].n + 1, dir: dir}
	s.log.Debug("wrote http-01 answer", "identifier", ch.Identifier.Value, "path", s.display(path.Join(dir, ch.Token)))
	return nil
}

// present does Present's work and returns the answer's directory relative
// to the root; s.mu is held.
func (s *Solver) present(r rootDir, ch solve.Challenge) (string, error) {
	fd, rel, err := s.walk(r, true)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	return rel, s.writeAtomic(fd, rel, ch.Token, []byte(ch.KeyAuthorization))
}

// writeAtomic writes data to a temporary file in the directory dirfd (rel
// below the root) and renames it over name.
func (s *Solver) writeAtomic(dirfd int, rel, name string, data []byte) (err error) {
	tmp, f, err := createTemp(dirfd, ".detour-"+name[:min(len(name), 64)]+"-")
	if err != nil {
		return s.explainWrite(s.display(rel), err)
	}
	shown := s.display(path.Join(rel, tmp))
	defer func() {
		if err != nil {
			f.Close()
			unix.Unlinkat(dirfd, tmp, 0)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", shown, err)
	}
	if err := f.Chmod(s.fileMode); err != nil {
		return fmt.Errorf("setting mode %o on %s: %w", s.fileMode, shown, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", shown, err)
	}
	if err := unix.Renameat(dirfd, tmp, dirfd, name); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", shown, name, err)
	}
	return nil
}

// CleanUp removes ch's answer file once no Present holds it, and after the
// last answer the directories this solver created, if they are empty.
// Cleaning up a challenge that was never presented does nothing. It
// follows no symbolic link: a directory replaced by one since Present is
// left alone and reported.
func (s *Solver) CleanUp(ctx context.Context, ch solve.Challenge) error {
	if !solve.ValidToken(ch.Token) {
		return nil // Present refused it, so nothing is in place.
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.files[ch.Token]
	if !ok {
		return nil
	}
	if a.n > 1 {
		a.n--
		s.files[ch.Token] = a
		return nil
	}
	delete(s.files, ch.Token)
	rootfd, err := openRootDir(s.root)
	if errors.Is(err, unix.ENOENT) {
		s.created = nil
		return nil // the whole webroot is gone, answers and all
	}
	if err != nil {
		return fmt.Errorf("cleaning up http-01 for %q: opening webroot %s: %w", ch.Identifier.Value, s.root, err)
	}
	defer unix.Close(rootfd)
	var errs []error
	p := s.display(path.Join(a.dir, ch.Token))
	if err := s.remove(rootfd, a.dir, ch.Token, 0); err != nil {
		errs = append(errs, fmt.Errorf("removing %s: %w", p, err))
	} else {
		s.log.Debug("removed http-01 answer", "identifier", ch.Identifier.Value, "path", p)
	}
	if s.total() == 0 {
		errs = append(errs, s.removeCreated(rootfd))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleaning up http-01 for %q: %w", ch.Identifier.Value, err)
	}
	return nil
}

// remove unlinks name in the directory dir (relative to the root; no
// element of it may be a symbolic link now). A name already gone is not an
// error. flags is 0 or unix.AT_REMOVEDIR. unlinkat's own error is returned
// as the bare errno.
func (s *Solver) remove(rootfd int, dir, name string, flags int) error {
	fd, err := openDir(rootfd, dir)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case isLinkOrNotDir(err):
		return fmt.Errorf("%s since Detour wrote there, and Detour follows no links below the webroot, so it removed nothing; find out who changed it, and remove %s yourself if Detour put it there", s.changed(rootfd, dir), name)
	case err != nil:
		return err
	}
	defer unix.Close(fd)
	if err := unix.Unlinkat(fd, name, flags); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// changed says which element of dir (relative to the root) is no longer
// a directory, for an error message.
func (s *Solver) changed(rootfd int, dir string) string {
	fd, err := openat(rootfd, ".", dirOpenFlags)
	if err != nil {
		return s.display(dir) + " changed"
	}
	defer func() { unix.Close(fd) }()
	rel := "."
	for name := range strings.SplitSeq(dir, "/") {
		rel = path.Join(rel, name)
		next, err := openat(fd, name, dirOpenFlags)
		if err == nil {
			unix.Close(fd)
			fd = next
			continue
		}
		var sb unix.Stat_t
		if unix.Fstatat(fd, name, &sb, unix.AT_SYMLINK_NOFOLLOW) == nil && sb.Mode&unix.S_IFMT == unix.S_IFLNK {
			return s.display(rel) + " is now a symbolic link"
		}
		return s.display(rel) + " is no longer a directory"
	}
	return s.display(dir) + " changed"
}

// total is the number of Presents in place; s.mu is held.
func (s *Solver) total() int {
	n := 0
	for _, a := range s.files {
		n += a.n
	}
	return n
}

// removeCreated removes the directories this solver created, innermost
// first, keeping any that are no longer empty (someone else put files
// there). s.mu is held.
func (s *Solver) removeCreated(rootfd int) error {
	var errs []error
	for i := len(s.created) - 1; i >= 0; i-- {
		rel := s.created[i]
		d := s.display(rel)
		err := s.remove(rootfd, path.Dir(rel), path.Base(rel), unix.AT_REMOVEDIR)
		switch {
		case err == nil:
			s.log.Debug("removed directory", "path", d)
		case errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST):
			s.log.Info("keeping directory that is not empty", "path", d)
		case err == unix.ENOTDIR: // from unlinkat itself, not from reaching its parent
			errs = append(errs, fmt.Errorf("removing directory %s: it is no longer the directory Detour created but a symbolic link or a file, so Detour left it alone; find out who replaced it", d))
		default:
			errs = append(errs, fmt.Errorf("removing directory %s: %w", d, err))
		}
	}
	s.created = nil
	return errors.Join(errs...)
}

// rootDir is the open webroot.
type rootDir struct {
	fd   int
	real string // its path with symbolic links resolved
}

// openRoot verifies the root is an existing directory and opens it. The
// root's own path may contain symbolic links: the operator configured it.
func (s *Solver) openRoot(name string) (rootDir, error) {
	fi, err := os.Stat(s.root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return rootDir{}, fmt.Errorf("webroot %s does not exist: set root = to the directory your web server serves for %s (nginx: its `root` directive; Apache: DocumentRoot)", s.root, name)
	case err != nil:
		return rootDir{}, fmt.Errorf("webroot %s cannot be used: %w; set root = to the directory your web server serves for %s (nginx: its `root` directive; Apache: DocumentRoot)", s.root, err, name)
	case !fi.IsDir():
		return rootDir{}, fmt.Errorf("webroot %s is not a directory: set root = to the directory your web server serves for %s (nginx: its `root` directive; Apache: DocumentRoot)", s.root, name)
	}
	real, err := filepath.EvalSymlinks(s.root)
	if err != nil {
		return rootDir{}, fmt.Errorf("resolving webroot %s: %w", s.root, err)
	}
	fd, err := openRootDir(s.root)
	if err != nil {
		return rootDir{}, fmt.Errorf("opening webroot %s: %w", s.root, err)
	}
	return rootDir{fd: fd, real: real}, nil
}

// openRootDir opens the directory at p, following symbolic links.
func openRootDir(p string) (int, error) {
	for {
		fd, err := unix.Open(p, dirOpenFlags|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// explainWrite describes a failure to create a file or directory in dir.
func (s *Solver) explainWrite(dir string, err error) error {
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("webroot directory %s is not writable by Detour (uid %d): %w; give Detour's user write access to it (chown, chmod g+w or setfacl), or run Detour as the user that owns the webroot", dir, os.Geteuid(), err)
	}
	return fmt.Errorf("cannot create files in webroot directory %s: %w; check that root = names the directory your web server serves", dir, err)
}

// within reports whether path is root or below it. Both are clean,
// absolute paths.
func within(root, path string) bool {
	if path == root {
		return true
	}
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// display turns a path relative to the root into the one to show.
func (s *Solver) display(rel string) string { return filepath.Join(s.root, filepath.FromSlash(rel)) }

// validate checks that ch can be written: http-01, a safe token, a key
// authorization.
func validate(ch solve.Challenge) error {
	if ch.Type != "" && ch.Type != solve.HTTP01 {
		return fmt.Errorf("presenting %s challenge with the http-01 webroot solver: wrong challenge type", ch.Type)
	}
	if !solve.Applicable(solve.HTTP01, ch.Identifier) {
		return fmt.Errorf("%w: http-01 cannot validate %q", solve.ErrNotApplicable, ch.Identifier.Value)
	}
	if !solve.ValidToken(ch.Token) {
		return fmt.Errorf("presenting http-01 for %q: token %q is not base64url; refusing to use it as a file name", ch.Identifier.Value, ch.Token)
	}
	if ch.KeyAuthorization == "" {
		return fmt.Errorf("presenting http-01 for %q: empty key authorization", ch.Identifier.Value)
	}
	return nil
}
