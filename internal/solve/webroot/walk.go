package webroot

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Bounds on one walk: the symbolic links it follows (the kernel allows
// 40), and how often it looks again at a name that changed under it.
const (
	maxLinks   = 16
	maxRetries = 8
)

// step is a name walk still has to open.
type step struct {
	name string
	// link and target are the symbolic link (as a path to show) the name
	// comes from and where it points; both are empty for .well-known and
	// acme-challenge themselves, the only names Present may create.
	link, target string
}

// walkDir is a directory walk has opened.
type walkDir struct {
	fd  int
	rel string // relative to the root, symbolic links resolved
}

// walk opens <root>/.well-known/acme-challenge and returns its descriptor
// and its path relative to the root with symbolic links resolved. With
// create, directories that are missing are created with s.dirMode (and
// recorded in s.created); without, walk stops at the first missing one and
// returns the deepest directory that exists.
//
// The kernel follows no symbolic link: every name is opened with openDir.
// A link met on the way is read, and its target walked the same way from
// the directory holding the link (from the root when the target is
// absolute), so a link that stays inside the root works and one leading
// out of it is refused however the webroot changes meanwhile.
func (s *Solver) walk(r rootDir, create bool) (fd int, rel string, err error) {
	const want = wellKnown + "/" + acmeChallenge
	if fd, err := openDir(r.fd, want); err == nil {
		return fd, want, nil // the usual case: two plain directories
	}
	top, err := openDir(r.fd, ".")
	if err != nil {
		return -1, "", fmt.Errorf("opening webroot %s: %w", s.root, err)
	}
	stack := []walkDir{{top, "."}}
	defer func() {
		keep := len(stack) - 1
		if err != nil {
			keep = len(stack)
		}
		for _, d := range stack[:keep] {
			unix.Close(d.fd)
		}
	}()
	todo := []step{{name: wellKnown}, {name: acmeChallenge}}
	links, retries := 0, 0
	retry := func(shown string) error {
		if retries++; retries > maxRetries {
			return fmt.Errorf("%s keeps changing while Detour uses it; find out what replaces it and stop it", shown)
		}
		return nil
	}
	for len(todo) > 0 {
		st, cur := todo[0], stack[len(stack)-1]
		switch st.name {
		case "", ".":
			todo = todo[1:]
			continue
		case "..":
			if len(stack) > 1 {
				unix.Close(cur.fd)
				stack, todo = stack[:len(stack)-1], todo[1:]
				continue
			}
			n, ok := backInside(r.real, todo)
			if !ok {
				return -1, "", s.linkError(st.link, st.target)
			}
			todo = todo[n:]
			continue
		}
		rel := path.Join(cur.rel, st.name)
		shown := s.display(rel)
		fd, err := openDir(cur.fd, st.name)
		switch {
		case err == nil:
			stack, todo = append(stack, walkDir{fd, rel}), todo[1:]

		case errors.Is(err, unix.ENOENT) && st.link != "":
			return -1, "", s.linkBroken(st.link, err)

		case errors.Is(err, unix.ENOENT) && !create:
			return cur.fd, cur.rel, nil

		case errors.Is(err, unix.ENOENT):
			if err := mkdirat(cur.fd, st.name, uint32(s.dirMode)); errors.Is(err, unix.EEXIST) {
				if err := retry(shown); err != nil {
					return -1, "", err
				}
				continue // someone else made it meanwhile: look again
			} else if err != nil {
				return -1, "", s.explainWrite(s.display(cur.rel), err)
			}
			s.created = append(s.created, rel)
			s.log.Debug("created directory", "path", shown)
			// O_RDONLY, not O_PATH: fchmod needs a real descriptor. The
			// mode is set exactly, whatever the umask.
			fd, err := openat(cur.fd, st.name, unix.O_RDONLY|unix.O_DIRECTORY)
			if err != nil {
				return -1, "", fmt.Errorf("opening %s, which Detour just created: %w", shown, err)
			}
			if err := unix.Fchmod(fd, uint32(s.dirMode)); err != nil {
				unix.Close(fd)
				return -1, "", fmt.Errorf("setting mode %o on %s: %w", s.dirMode, shown, err)
			}
			stack, todo = append(stack, walkDir{fd, rel}), todo[1:]

		case isLinkOrNotDir(err):
			var sb unix.Stat_t
			if err := unix.Fstatat(cur.fd, st.name, &sb, unix.AT_SYMLINK_NOFOLLOW); err != nil && !errors.Is(err, unix.ENOENT) {
				return -1, "", fmt.Errorf("inspecting %s: %w", shown, err)
			} else if err != nil || sb.Mode&unix.S_IFMT == unix.S_IFDIR {
				if err := retry(shown); err != nil {
					return -1, "", err
				}
				continue // it changed since openDir failed: look again
			}
			if sb.Mode&unix.S_IFMT != unix.S_IFLNK {
				return -1, "", fmt.Errorf("%s exists but is not a directory; remove or rename it so Detour can create the directory the web server serves challenges from", shown)
			}
			if links++; links > maxLinks {
				return -1, "", fmt.Errorf("%s: too many levels of symbolic links; point it straight at a directory inside the webroot %s", shown, s.root)
			}
			target, err := readlinkat(cur.fd, st.name)
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				if err := retry(shown); err != nil {
					return -1, "", err
				}
				continue // no longer a link
			} else if err != nil {
				return -1, "", fmt.Errorf("reading the symbolic link %s: %w", shown, err)
			}
			shownTarget := target
			if !filepath.IsAbs(target) {
				shownTarget = filepath.Join(filepath.Dir(shown), target)
			} else {
				rel, ok := s.beneathRoot(r, target)
				if !ok {
					return -1, "", s.linkError(shown, target)
				}
				for _, d := range stack[1:] {
					unix.Close(d.fd)
				}
				stack, target = stack[:1], rel
			}
			var next []step
			for name := range strings.SplitSeq(filepath.ToSlash(target), "/") {
				next = append(next, step{name: name, link: shown, target: shownTarget})
			}
			todo = append(next, todo[1:]...)

		default:
			return -1, "", fmt.Errorf("opening %s: %w", shown, err)
		}
	}
	d := stack[len(stack)-1]
	return d.fd, d.rel, nil
}

// backInside handles a link whose target climbs above the root with "..":
// if the rest of that target comes straight back into the root (as in
// "../html/acme" for a root /var/www/html), it returns how many steps lead
// back to the root itself. Those name only the root's ancestors, which
// whoever can write the webroot cannot change, so they are followed by
// name, and nothing above the root is opened.
func backInside(realRoot string, todo []step) (int, bool) {
	p := realRoot
	for i, st := range todo {
		if st.link != todo[0].link || st.target != todo[0].target {
			break // the rest comes from another link
		}
		if p = filepath.Join(p, st.name); p == realRoot {
			return i + 1, true
		}
	}
	return 0, false
}

// beneathRoot returns the absolute path target relative to the root, if it
// names the root or something below it.
func (s *Solver) beneathRoot(r rootDir, target string) (string, bool) {
	target = filepath.Clean(target)
	for _, base := range []string{r.real, s.root} {
		if within(base, target) {
			rel, err := filepath.Rel(base, target)
			return filepath.ToSlash(rel), err == nil
		}
	}
	return "", false
}

// linkError refuses the symbolic link link, which points at target outside
// the root.
func (s *Solver) linkError(link, target string) error {
	// Only to word the message: nothing is created or changed through it.
	if _, err := os.Stat(target); err != nil {
		return s.linkBroken(link, err)
	}
	return fmt.Errorf("%s is a symbolic link to %s, outside the webroot %s; Detour writes only inside the webroot: replace the link with a directory, or point root = at the directory the link leads to", link, target, s.root)
}

// linkBroken reports a symbolic link whose target does not exist.
func (s *Solver) linkBroken(link string, err error) error {
	return fmt.Errorf("%s is a symbolic link that cannot be followed (%w); remove it so Detour can create the directory, or point it at a directory inside %s", link, err, s.root)
}

// readlinkat returns the target of the symbolic link name in dirfd.
func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}
