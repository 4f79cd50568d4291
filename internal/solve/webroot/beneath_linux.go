//go:build linux

package webroot

import (
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// dirOpenFlags open a directory only to name things in it: O_PATH needs no
// read permission on it.
const dirOpenFlags = unix.O_PATH | unix.O_DIRECTORY

// beneath confines openat2(2) to the starting directory and refuses every
// symbolic link (and /proc magic link) on the way, the last element included.
const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openDirOpenat2 is openDir in one openat2(2) call.
func openDirOpenat2(dirfd int, rel string) (int, error) {
	how := unix.OpenHow{Flags: dirOpenFlags | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: beneath}
	for range 16 {
		fd, err := unix.Openat2(dirfd, rel, &how)
		// EAGAIN: a concurrent rename made the kernel give up on proving
		// the walk stayed beneath dirfd; it asks for a retry.
		if err != unix.EINTR && err != unix.EAGAIN {
			return fd, err
		}
	}
	return -1, unix.EAGAIN
}

// openat2Supported reports whether the kernel has openat2(2) (Linux 5.6)
// and lets Detour call it. It asks once, opening the working directory.
var openat2Supported = sync.OnceValue(func() bool {
	fd, err := unix.Openat2(unix.AT_FDCWD, ".", &unix.OpenHow{Flags: dirOpenFlags | unix.O_CLOEXEC, Resolve: beneath})
	if err == nil {
		unix.Close(fd)
	}
	return openat2Usable(err)
})

// openat2Usable tells from the error of a probing openat2(2) whether it
// can be used: ENOSYS from an older kernel, EINVAL from one that does not
// know the RESOLVE flags, EPERM from a seccomp filter (older container
// runtimes) mean it cannot. Any other error came from the lookup itself.
func openat2Usable(err error) bool {
	return !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EPERM)
}
