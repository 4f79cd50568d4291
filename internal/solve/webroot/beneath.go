package webroot

import (
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Everything below the webroot is reached from a directory file descriptor
// one name at a time (openat, mkdirat, unlinkat, renameat), and the kernel
// never follows a symbolic link there: someone who can write the webroot
// can swap a directory for a link at any moment, and a path checked first
// and used afterwards would then lead Detour, often running as root, out of
// the webroot. Links that stay inside the root are read and resolved by
// Detour itself (see walk).

// openDir opens the directory rel below dirfd. rel is "." or a clean,
// slash-separated relative path without "." or ".." elements; no element of
// it may be a symbolic link (ENOTDIR or ELOOP when one is). It is
// openDirOpenat2 where the kernel has openat2(2) and openDirWalk otherwise;
// tests set it to force either.
var openDir = openDirDefault

func openDirDefault(dirfd int, rel string) (int, error) {
	if openat2Supported() {
		return openDirOpenat2(dirfd, rel)
	}
	return openDirWalk(dirfd, rel)
}

// openDirWalk is openDir for kernels without openat2: one openat(2) with
// O_NOFOLLOW|O_DIRECTORY per element, each relative to the previous one.
func openDirWalk(dirfd int, rel string) (int, error) {
	fd, err := openat(dirfd, ".", dirOpenFlags)
	if err != nil || rel == "." {
		return fd, err
	}
	for name := range strings.SplitSeq(rel, "/") {
		next, err := openat(fd, name, dirOpenFlags)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// openat is openat(2) with O_NOFOLLOW|O_CLOEXEC, retried on EINTR.
func openat(dirfd int, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// isLinkOrNotDir reports whether err is what opening a directory gives
// when an element is a symbolic link or not a directory.
func isLinkOrNotDir(err error) bool {
	return errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP)
}

// createTemp creates a new file named prefix plus a random number in dirfd,
// never following a symbolic link, and returns its name. Its mode is 0600
// until the caller sets it.
func createTemp(dirfd int, prefix string) (string, *os.File, error) {
	for range 10000 {
		name := prefix + strconv.FormatUint(uint64(rand.Uint32()), 10)
		fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		switch {
		case err == nil:
			return name, os.NewFile(uintptr(fd), name), nil
		case err == unix.EEXIST, err == unix.EINTR:
			continue
		default:
			return "", nil, err
		}
	}
	return "", nil, unix.EEXIST
}
