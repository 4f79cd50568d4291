//go:build unix

package router

import (
	"math"
	"syscall"

	"golang.org/x/sys/unix"
)

// fdLimit is the process's soft RLIMIT_NOFILE (the Go runtime raises it to
// the hard limit at start), or 0 when it is unknown or unlimited.
func fdLimit() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY || rl.Cur > math.MaxInt32 {
		return 0
	}
	return int(rl.Cur)
}

// connFD is the number of c's descriptor, or -1 when c has none of its
// own.
func connFD(c any) int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	_ = raw.Control(func(s uintptr) { fd = int(s) })
	return fd
}
