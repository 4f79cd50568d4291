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
// be base64url (RFC 8555 §8.1), and .well-known or acme-challenge being a
// symbolic link that leads outside the root is refused, so nothing is ever
// written outside the document root.
package webroot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

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

// mkdir is os.Mkdir; tests replace it to fail halfway through Present.
var mkdir = os.Mkdir

// Solver writes http-01 answers into a web server's document root. It is
// safe for concurrent use.
type Solver struct {
	log      *slog.Logger
	root     string
	dirMode  fs.FileMode
	fileMode fs.FileMode

	mu      sync.Mutex
	files   map[string]int // token -> Presents holding its file
	created []string       // directories this solver created, outermost first
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
		files:    make(map[string]int),
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
	realRoot, err := s.checkRoot(id.Value)
	if err != nil {
		return err
	}
	// Probe the deepest directory that exists: that is where Present
	// writes (or creates the next directory).
	probeDir := s.root
	for _, d := range []string{s.wellKnownDir(), s.challengeDir()} {
		ok, err := s.checkDir(d, realRoot)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		probeDir = d
	}
	f, err := os.CreateTemp(probeDir, ".detour-probe-*")
	if err != nil {
		return s.explainWrite(probeDir, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("removing probe file %s: %w", name, err)
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
	if err := s.present(ch); err != nil {
		if s.total() == 0 {
			// Nothing else is presented: undo the directories this
			// failed attempt created.
			s.removeCreated()
		}
		return fmt.Errorf("presenting http-01 for %q in webroot %s: %w", ch.Identifier.Value, s.root, err)
	}
	s.files[ch.Token]++
	s.log.Debug("wrote http-01 answer", "identifier", ch.Identifier.Value, "path", s.answerPath(ch.Token))
	return nil
}

// present does Present's work; s.mu is held.
func (s *Solver) present(ch solve.Challenge) error {
	realRoot, err := s.checkRoot(ch.Identifier.Value)
	if err != nil {
		return err
	}
	for _, d := range []string{s.wellKnownDir(), s.challengeDir()} {
		ok, err := s.checkDir(d, realRoot)
		if err != nil {
			return err
		}
		if ok {
			continue
		}
		if err := mkdir(d, s.dirMode); err != nil {
			return s.explainWrite(filepath.Dir(d), err)
		}
		s.created = append(s.created, d)
		s.log.Debug("created directory", "path", d)
		if err := os.Chmod(d, s.dirMode); err != nil {
			return fmt.Errorf("setting mode %o on %s: %w", s.dirMode, d, err)
		}
	}
	return s.writeAtomic(s.answerPath(ch.Token), []byte(ch.KeyAuthorization))
}

// writeAtomic writes data to a temporary file in path's directory and
// renames it over path.
func (s *Solver) writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".detour-"+filepath.Base(path)+"-*")
	if err != nil {
		return s.explainWrite(dir, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Chmod(s.fileMode); err != nil {
		return fmt.Errorf("setting mode %o on %s: %w", s.fileMode, tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp, path, err)
	}
	return nil
}

// CleanUp removes ch's answer file once no Present holds it, and after the
// last answer the directories this solver created, if they are empty.
// Cleaning up a challenge that was never presented does nothing.
func (s *Solver) CleanUp(ctx context.Context, ch solve.Challenge) error {
	if !solve.ValidToken(ch.Token) {
		return nil // Present refused it, so nothing is in place.
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.files[ch.Token]
	if !ok {
		return nil
	}
	var errs []error
	if n > 1 {
		s.files[ch.Token] = n - 1
	} else {
		delete(s.files, ch.Token)
		p := s.answerPath(ch.Token)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing %s: %w", p, err))
		} else {
			s.log.Debug("removed http-01 answer", "identifier", ch.Identifier.Value, "path", p)
		}
	}
	if s.total() == 0 {
		errs = append(errs, s.removeCreated())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleaning up http-01 for %q: %w", ch.Identifier.Value, err)
	}
	return nil
}

// total is the number of Presents in place; s.mu is held.
func (s *Solver) total() int {
	n := 0
	for _, c := range s.files {
		n += c
	}
	return n
}

// removeCreated removes the directories this solver created, innermost
// first, keeping any that are no longer empty (someone else put files
// there). s.mu is held.
func (s *Solver) removeCreated() error {
	var errs []error
	for i := len(s.created) - 1; i >= 0; i-- {
		d := s.created[i]
		err := os.Remove(d)
		switch {
		case err == nil:
			s.log.Debug("removed directory", "path", d)
		case errors.Is(err, fs.ErrNotExist):
		case errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST):
			s.log.Info("keeping directory that is not empty", "path", d)
		default:
			errs = append(errs, fmt.Errorf("removing directory %s: %w", d, err))
		}
	}
	s.created = nil
	return errors.Join(errs...)
}

// checkRoot verifies the root is an existing directory and returns its
// real path (symbolic links resolved).
func (s *Solver) checkRoot(name string) (string, error) {
	fi, err := os.Stat(s.root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("webroot %s does not exist: set root = to the directory your web server serves for %s (nginx: its `root` directive; Apache: DocumentRoot)", s.root, name)
	case err != nil:
		return "", fmt.Errorf("webroot %s cannot be used: %w; set root = to the directory your web server serves for %s (nginx: its `root` directive; Apache: DocumentRoot)", s.root, err, name)
	case !fi.IsDir():
		return "", fmt.Errorf("webroot %s is not a directory: set root = to the directory your web server serves for %s (nginx: its `root` directive; Apache: DocumentRoot)", s.root, name)
	}
	real, err := filepath.EvalSymlinks(s.root)
	if err != nil {
		return "", fmt.Errorf("resolving webroot %s: %w", s.root, err)
	}
	return real, nil
}

// checkDir reports whether directory d exists. It fails when d exists but
// is not a directory, or is a symbolic link that resolves outside realRoot.
func (s *Solver) checkDir(d, realRoot string) (bool, error) {
	fi, err := os.Lstat(d)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("inspecting %s: %w", d, err)
	}
	if fi.Mode().Type() == fs.ModeSymlink {
		target, err := filepath.EvalSymlinks(d)
		if err != nil {
			return false, fmt.Errorf("%s is a symbolic link that cannot be followed (%w); remove it so Detour can create the directory, or point it at a directory inside %s", d, err, s.root)
		}
		if !within(realRoot, target) {
			return false, fmt.Errorf("%s is a symbolic link to %s, outside the webroot %s; Detour writes only inside the webroot: replace the link with a directory, or point root = at the directory the link leads to", d, target, s.root)
		}
		if fi, err = os.Stat(target); err != nil {
			return false, fmt.Errorf("inspecting %s: %w", target, err)
		}
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("%s exists but is not a directory; remove or rename it so Detour can create the directory the web server serves challenges from", d)
	}
	return true, nil
}

// explainWrite describes a failure to create a file or directory in dir.
func (s *Solver) explainWrite(dir string, err error) error {
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("webroot directory %s is not writable by Detour (uid %d): %w; give Detour's user write access to it (chown, chmod g+w or setfacl), or run Detour as the user that owns the webroot", dir, os.Geteuid(), err)
	}
	return fmt.Errorf("cannot create files in webroot directory %s: %w; check that root = names the directory your web server serves", dir, err)
}

// within reports whether path is root or below it. Both are clean,
// absolute, symlink-free paths.
func within(root, path string) bool {
	if path == root {
		return true
	}
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

func (s *Solver) wellKnownDir() string { return filepath.Join(s.root, wellKnown) }
func (s *Solver) challengeDir() string { return filepath.Join(s.root, wellKnown, acmeChallenge) }
func (s *Solver) answerPath(token string) string {
	return filepath.Join(s.challengeDir(), token)
}

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
