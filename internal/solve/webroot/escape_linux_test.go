package webroot

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The tests here prove that nothing outside the webroot is ever created,
// changed or removed, whatever symbolic links someone who can write the
// webroot puts in place, before Present or while Detour works.

// snapshot describes every file and directory below dir: path -> mode and
// content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := make(map[string]string)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(b)
		}
		m[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sameSnapshot(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, v := range before {
		if after[p] != v {
			t.Errorf("%s: %s was %q, now %q", what, p, v, after[p])
		}
	}
	for p, v := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s (%q) appeared", what, p, v)
		}
	}
}

// outsideDir returns a directory outside the root, laid out so that a write
// or removal through a link at .well-known or at acme-challenge would hit a
// file: <outside>/tok and <outside>/acme-challenge/tok.
func outsideDir(t *testing.T) string {
	t.Helper()
	outside := t.TempDir()
	mkdirAll(t, filepath.Join(outside, "acme-challenge"))
	for _, p := range []string{"tok", "acme-challenge/tok", "victim"} {
		if err := os.WriteFile(filepath.Join(outside, p), []byte("not Detour's"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return outside
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestOpenDir: both implementations of openDir open plain directories and
// refuse the same things.
func TestOpenDir(t *testing.T) {
	bothWays(t, func(t *testing.T) {
		root, outside := t.TempDir(), t.TempDir()
		mkdirAll(t, filepath.Join(root, "a/b"))
		symlink(t, "a", filepath.Join(root, "link"))
		symlink(t, outside, filepath.Join(root, "a/out"))
		if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		rootfd, err := openRootDir(root)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(rootfd)
		for _, tt := range []struct {
			rel  string
			want error // nil, unix.ENOENT, or errLink for ENOTDIR/ELOOP
		}{
			{".", nil}, {"a", nil}, {"a/b", nil},
			{"link", errLink}, {"link/b", errLink}, {"a/out", errLink}, {"file", errLink},
			{"missing", unix.ENOENT}, {"a/missing", unix.ENOENT},
		} {
			fd, err := openDir(rootfd, tt.rel)
			if err == nil {
				unix.Close(fd)
			}
			switch {
			case tt.want == nil && err != nil,
				tt.want == errLink && !isLinkOrNotDir(err),
				tt.want == unix.ENOENT && !errors.Is(err, unix.ENOENT):
				t.Errorf("openDir(%q): %v, want %v", tt.rel, err, tt.want)
			}
		}
	})
}

var errLink = errors.New("ENOTDIR or ELOOP")

// Detour falls back to the walk where openat2 is missing or refused.
func TestOpenat2Usable(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{nil, true},
		{unix.EACCES, true}, // the lookup ran: the call exists
		{unix.ENOSYS, false},
		{unix.EINVAL, false},
		{unix.EPERM, false},
	} {
		if got := openat2Usable(tt.err); got != tt.want {
			t.Errorf("openat2Usable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	t.Logf("openat2 on this kernel: %v", openat2Supported())
}

// (a) A symbolic link already in place that leads outside the root: Check
// and Present refuse, naming the link and saying what to do, and nothing
// outside changes.
func TestLinkOutsideInPlace(t *testing.T) {
	bothWays(t, func(t *testing.T) {
		tests := []struct {
			name  string
			setup func(t *testing.T, root, outside string)
			link  string // the link the error must name
		}{
			{"well-known", func(t *testing.T, root, outside string) {
				symlink(t, outside, filepath.Join(root, ".well-known"))
			}, ".well-known"},
			{"acme-challenge", func(t *testing.T, root, outside string) {
				mkdirAll(t, filepath.Join(root, ".well-known"))
				symlink(t, outside, filepath.Join(root, ".well-known/acme-challenge"))
			}, ".well-known/acme-challenge"},
			{"acme-challenge relative", func(t *testing.T, root, outside string) {
				mkdirAll(t, filepath.Join(root, ".well-known"))
				rel, err := filepath.Rel(filepath.Join(root, ".well-known"), outside)
				if err != nil {
					t.Fatal(err)
				}
				symlink(t, rel, filepath.Join(root, ".well-known/acme-challenge"))
			}, ".well-known/acme-challenge"},
			{"through a link inside the root", func(t *testing.T, root, outside string) {
				symlink(t, "hop", filepath.Join(root, ".well-known"))
				symlink(t, outside, filepath.Join(root, "hop"))
			}, "hop"},
			{"up and into a sibling", func(t *testing.T, root, outside string) {
				symlink(t, filepath.Join("..", filepath.Base(outside)), filepath.Join(root, ".well-known"))
			}, ".well-known"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				root, outside := t.TempDir(), outsideDir(t)
				tt.setup(t, root, outside)
				before := snapshot(t, outside)
				s := newSolver(t, root)
				ch := chal("example.com", "tok")
				for what, err := range map[string]error{
					"Check":   s.Check(context.Background(), ch.Identifier),
					"Present": s.Present(context.Background(), ch),
				} {
					if err == nil {
						t.Fatalf("%s accepted a link leading out of the root", what)
					}
					msg := err.Error()
					if !strings.Contains(msg, filepath.Join(root, tt.link)+" is a symbolic link") || !strings.Contains(msg, "outside the webroot") || !strings.Contains(msg, "replace the link with a directory") {
						t.Errorf("%s: %v; want it to name %s as the symbolic link leading outside and say what to do", what, err, tt.link)
					}
				}
				if err := s.CleanUp(context.Background(), ch); err != nil {
					t.Errorf("CleanUp: %v", err)
				}
				sameSnapshot(t, "outside the root", before, snapshot(t, outside))
			})
		}
	})
}

// Links that stay inside the root keep working, and what Detour creates
// through them is removed again.
func TestLinkInsideRoot(t *testing.T) {
	bothWays(t, func(t *testing.T) {
		tests := []struct {
			name    string
			setup   func(t *testing.T, root string)
			answer  string // where the answer lands
			created string // a directory Detour creates and removes, if any
		}{
			{"absolute", func(t *testing.T, root string) {
				mkdirAll(t, filepath.Join(root, "shared/acme"))
				mkdirAll(t, filepath.Join(root, ".well-known"))
				symlink(t, filepath.Join(root, "shared/acme"), filepath.Join(root, ".well-known/acme-challenge"))
			}, "shared/acme/tok", ""},
			{"link to a link", func(t *testing.T, root string) {
				mkdirAll(t, filepath.Join(root, "site/acme"))
				symlink(t, "site", filepath.Join(root, "current"))
				mkdirAll(t, filepath.Join(root, ".well-known"))
				symlink(t, "../current/acme", filepath.Join(root, ".well-known/acme-challenge"))
			}, "site/acme/tok", ""},
			{"up and straight back in", func(t *testing.T, root string) {
				mkdirAll(t, filepath.Join(root, "site/acme"))
				mkdirAll(t, filepath.Join(root, ".well-known"))
				symlink(t, filepath.Join("../..", filepath.Base(root), "site/acme"), filepath.Join(root, ".well-known/acme-challenge"))
			}, "site/acme/tok", ""},
			{"created below a linked well-known", func(t *testing.T, root string) {
				mkdirAll(t, filepath.Join(root, "site/wk"))
				symlink(t, "site/wk", filepath.Join(root, ".well-known"))
			}, "site/wk/acme-challenge/tok", "site/wk/acme-challenge"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := context.Background()
				root := t.TempDir()
				tt.setup(t, root)
				s := newSolver(t, root)
				ch := chal("example.com", "tok")
				if err := s.Check(ctx, ch.Identifier); err != nil {
					t.Fatal(err)
				}
				if err := s.Present(ctx, ch); err != nil {
					t.Fatal(err)
				}
				if b, err := os.ReadFile(filepath.Join(root, tt.answer)); err != nil || string(b) != ch.KeyAuthorization {
					t.Errorf("answer at %s: %q, %v", tt.answer, b, err)
				}
				if b, err := os.ReadFile(filepath.Join(root, ".well-known/acme-challenge/tok")); err != nil || string(b) != ch.KeyAuthorization {
					t.Errorf("answer as the web server sees it: %q, %v", b, err)
				}
				if err := s.CleanUp(ctx, ch); err != nil {
					t.Fatal(err)
				}
				if exists(t, filepath.Join(root, tt.answer)) {
					t.Error("answer left behind")
				}
				if tt.created != "" && exists(t, filepath.Join(root, tt.created)) {
					t.Errorf("%s, which Detour created, left behind", tt.created)
				}
				if !exists(t, filepath.Join(root, ".well-known")) {
					t.Error("the link .well-known was removed")
				}
			})
		}
	})
}

// (c) CleanUp removes nothing outside the root, whatever was replaced by a
// symbolic link since Present.
func TestCleanUpFollowsNoLink(t *testing.T) {
	bothWays(t, func(t *testing.T) {
		tests := []struct {
			name     string
			existing bool // .well-known/acme-challenge exist before Present
			swap     func(t *testing.T, root, outside string)
			wantErr  string // "" for none
		}{
			{"answer replaced by a link", true, func(t *testing.T, root, outside string) {
				answer := filepath.Join(root, ".well-known/acme-challenge/tok")
				if err := os.Remove(answer); err != nil {
					t.Fatal(err)
				}
				symlink(t, filepath.Join(outside, "victim"), answer)
			}, ""},
			{"acme-challenge replaced by a link", true, func(t *testing.T, root, outside string) {
				d := filepath.Join(root, ".well-known/acme-challenge")
				if err := os.Rename(d, d+".moved"); err != nil {
					t.Fatal(err)
				}
				symlink(t, outside, d)
			}, "is now a symbolic link"},
			{"created well-known replaced by a link", false, func(t *testing.T, root, outside string) {
				d := filepath.Join(root, ".well-known")
				if err := os.Rename(d, d+".moved"); err != nil {
					t.Fatal(err)
				}
				symlink(t, outside, d)
			}, "is now a symbolic link"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := context.Background()
				root, outside := t.TempDir(), outsideDir(t)
				if tt.existing {
					mkdirAll(t, filepath.Join(root, ".well-known/acme-challenge"))
				}
				s := newSolver(t, root)
				ch := chal("example.com", "tok")
				if err := s.Present(ctx, ch); err != nil {
					t.Fatal(err)
				}
				tt.swap(t, root, outside)
				before := snapshot(t, outside)
				err := s.CleanUp(ctx, ch)
				switch {
				case tt.wantErr == "" && err != nil:
					t.Errorf("CleanUp: %v", err)
				case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
					t.Errorf("CleanUp: %v, want an error containing %q", err, tt.wantErr)
				}
				sameSnapshot(t, "outside the root", before, snapshot(t, outside))
			})
		}
	})
}

// watchOutside reports, through the returned function, every change
// inotify(7) sees in dirs.
func watchOutside(t *testing.T, dirs ...string) func() []string {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	names := make(map[int]string)
	for _, d := range dirs {
		wd, err := unix.InotifyAddWatch(fd, d, unix.IN_CREATE|unix.IN_DELETE|unix.IN_MODIFY|unix.IN_ATTRIB|
			unix.IN_MOVED_FROM|unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF)
		if err != nil {
			t.Fatal(err)
		}
		names[wd] = d
	}
	return func() []string {
		var events []string
		buf := make([]byte, 64<<10)
		for {
			n, err := unix.Read(fd, buf)
			if err == unix.EAGAIN {
				return events
			}
			if err != nil {
				t.Fatal(err)
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
				events = append(events, filepath.Join(names[int(ev.Wd)], name)+" mask "+maskString(ev.Mask))
				off += unix.SizeofInotifyEvent + int(ev.Len)
			}
		}
	}
}

func maskString(m uint32) string {
	var s []string
	for bit, name := range map[uint32]string{unix.IN_CREATE: "create", unix.IN_DELETE: "delete", unix.IN_MODIFY: "modify",
		unix.IN_ATTRIB: "attrib", unix.IN_MOVED_FROM: "moved_from", unix.IN_MOVED_TO: "moved_to",
		unix.IN_CLOSE_WRITE: "close_write", unix.IN_DELETE_SELF: "delete_self", unix.IN_MOVE_SELF: "move_self"} {
		if m&bit != 0 {
			s = append(s, name)
		}
	}
	return strings.Join(s, "|")
}

// (b) An attacker who can write the webroot swaps a challenge directory
// for a symbolic link to a directory outside and back, as fast as it can,
// while Check, Present and CleanUp run: nothing outside is ever created,
// changed or removed (inotify would see even a file created and removed
// again), and no descriptor leaks.
func TestSwapAttack(t *testing.T) {
	bothWays(t, func(t *testing.T) {
		for _, swapped := range []string{".well-known/acme-challenge", ".well-known"} {
			t.Run(swapped, func(t *testing.T) {
				ctx := context.Background()
				root, outside := t.TempDir(), outsideDir(t)
				mkdirAll(t, filepath.Join(root, ".well-known/acme-challenge"))
				dir := filepath.Join(root, swapped)
				link := dir + ".evil"
				symlink(t, outside, link)
				if err := unix.Renameat2(unix.AT_FDCWD, dir, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE); err != nil {
					t.Fatalf("renameat2(RENAME_EXCHANGE), which the attacker uses, fails on this filesystem: %v", err)
				}
				if err := unix.Renameat2(unix.AT_FDCWD, dir, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE); err != nil {
					t.Fatal(err)
				}
				before := snapshot(t, outside)
				events := watchOutside(t, outside, filepath.Join(outside, "acme-challenge"))
				fds := openFDs(t)

				stop := make(chan struct{})
				var swaps atomic.Int64
				var wg sync.WaitGroup
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						// Atomically: the directory becomes the link and
						// the link the directory, then back.
						if err := unix.Renameat2(unix.AT_FDCWD, dir, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE); err != nil {
							t.Errorf("attacker: %v", err)
							return
						}
						swaps.Add(1)
					}
				})

				s := newSolver(t, root)
				ch := chal("example.com", "tok")
				var presented, refused, cleanupErrs int
				deadline := time.Now().Add(20 * time.Second)
				for i := 0; i < 3000 && time.Now().Before(deadline); i++ {
					s.Check(ctx, ch.Identifier)
					if err := s.Present(ctx, ch); err != nil {
						refused++
					} else {
						presented++
					}
					if err := s.CleanUp(ctx, ch); err != nil {
						cleanupErrs++
					}
				}
				close(stop)
				wg.Wait()
				t.Logf("%d swaps; %d Presents succeeded, %d refused; %d CleanUps reported a change", swaps.Load(), presented, refused, cleanupErrs)

				if ev := events(); len(ev) > 0 {
					if len(ev) > 10 {
						ev = ev[:10]
					}
					t.Errorf("Detour changed things outside the root: %s", strings.Join(ev, "; "))
				}
				sameSnapshot(t, "outside the root", before, snapshot(t, outside))
				if got := openFDs(t); got != fds {
					t.Errorf("%d descriptors open after the attack, %d before", got, fds)
				}
				if swaps.Load() < 100 {
					t.Errorf("the attacker swapped only %d times", swaps.Load())
				}
			})
		}
	})
}
