//go:build !linux

package webroot

import "golang.org/x/sys/unix"

const dirOpenFlags = unix.O_RDONLY | unix.O_DIRECTORY

// openDirOpenat2 exists only on Linux.
func openDirOpenat2(int, string) (int, error) { return -1, unix.ENOSYS }

func openat2Supported() bool { return false }
