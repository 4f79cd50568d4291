package cli_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/testenv"
)

// `detour router` short of file descriptors: clients holding half a hello
// each, more than its limit allows. It says so, and keeps a reserve for
// new clients by closing the connections that have waited longest for
// their hello, so a real client is served while they are still there, and
// after they are gone. Run in a process of its own, with a low
// `ulimit -n`.
func TestRouterOutOfDescriptors(t *testing.T) {
	t.Parallel()
	bin := buildDetour(t)
	hello := clientHello(t)

	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.ReadFull(c, make([]byte, len(hello))); err == nil {
					_, _ = io.WriteString(c, "routed")
				}
			}()
		}
	}()
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))

	var stderr lockedBuffer
	cmd := exec.CommandContext(t.Context(), "sh", "-c", `ulimit -n 48 && exec "$0" "$@"`,
		bin, "router", "--listen", listen, "--backend", backend.Addr().String())
	cmd.Env = append(os.Environ(), "DETOUR_STATE_DIR="+filepath.Join(t.TempDir(), "state"))
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("detour router never listened: %v\n%s", err, stderr.String())
		}
		time.Sleep(10 * time.Millisecond) // polling for the listener of another process
	}

	// Clients that send half a hello and wait hold a descriptor each in
	// the router: more of them than its limit.
	var idle []net.Conn
	t.Cleanup(func() {
		for _, c := range idle {
			c.Close()
		}
	})
	for range 80 {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(hello[:len(hello)/2]); err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "file descriptors running low") {
		if time.Now().After(deadline) {
			t.Fatalf("the router never reported running low on descriptors\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond) // polling the log of another process
	}
	routed := func(when string) {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "routed" {
			t.Fatalf("%s: read %q, %v\n%s", when, got, err, stderr.String())
		}
	}
	routed("while the idle clients hold their connections")
	for _, c := range idle {
		c.Close()
	}
	idle = nil
	routed("after the idle clients are gone")
}

// clientHello returns the first flight of a TLS client: a ClientHello for
// app.example.com.
func clientHello(t *testing.T) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		defer a.Close()
		_ = tls.Client(a, &tls.Config{ServerName: "app.example.com", InsecureSkipVerify: true}).Handshake()
	}()
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16<<10)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}
