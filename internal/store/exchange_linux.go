//go:build linux

package store

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// renameExchange swaps the paths a and b atomically with renameat2(2)
// RENAME_EXCHANGE (Linux 3.15 and later; ext4, XFS, Btrfs, tmpfs and others).
// Where the kernel or the filesystem does not support it, the error wraps
// errExchangeUnsupported.
func renameExchange(a, b string) error {
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("exchanging %s and %s: %w: %w", a, b, errExchangeUnsupported, err)
	default:
		return fmt.Errorf("exchanging %s and %s: %w", a, b, err)
	}
}
