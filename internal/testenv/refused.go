package testenv

import (
	"syscall"
	"testing"
)

// RefusedPort returns a TCP port on 127.0.0.1 that refuses connections for
// the rest of the test: a socket is bound to it without listening (a
// connection gets a reset), and holding the binding keeps any other test
// from being given the port. Closing a listener instead leaves the port
// free for the next test that asks for one, which then answers.
func RefusedPort(t testing.TB) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*syscall.SockaddrInet4).Port
}
