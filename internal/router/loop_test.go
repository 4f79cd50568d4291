package router

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Every kind of backend address carries data both ways, with half-closes
// and the PROXY header: a literal loopback address and a Unix socket (on
// Linux the event loop connects those itself), a name that needs the
// resolver (connected by the net package, then handed to the loop), and
// IPv6 loopback where the machine has it.
func TestBackendKinds(t *testing.T) {
	hello := captureHello(t, helloCfg("app.example.com"))
	kinds := map[string]func(t *testing.T) *backend{
		"ipv4": func(t *testing.T) *backend { return startBackendOn(t, "tcp", "127.0.0.1:0", sumBackend) },
		"name": func(t *testing.T) *backend {
			b := startBackendOn(t, "tcp", "127.0.0.1:0", sumBackend)
			b.addr = "localhost:" + b.addr[strings.LastIndex(b.addr, ":")+1:]
			return b
		},
		"unix": func(t *testing.T) *backend {
			return startBackendOn(t, "unix", filepath.Join(t.TempDir(), "https.sock"), sumBackend)
		},
		"ipv6": func(t *testing.T) *backend {
			ln, err := net.Listen("tcp", "[::1]:0")
			if err != nil {
				t.Skipf("no IPv6 loopback: %v", err)
			}
			ln.Close()
			return startBackendOn(t, "tcp", "[::1]:0", sumBackend)
		},
	}
	for name, start := range kinds {
		t.Run(name, func(t *testing.T) {
			b := start(t)
			for _, proxy := range []bool{false, true} {
				r, addr := startRouter(t, Options{}, Route{Backend: b.addr, ProxyProtocol: proxy})
				for _, size := range []int{0, 1000, 3 << 20} {
					sent, got := exchange(t, addr, hello, size)
					// The backend hashes what it read: with the PROXY
					// header first, the hash differs; its presence is
					// checked by TestProxyProtocolV2.
					sum := sha256.Sum256(sent)
					if !proxy && string(got) != hex.EncodeToString(sum[:]) {
						t.Fatalf("size %d: backend read something else than the %d bytes sent", size, len(sent))
					}
					if proxy && (len(got) != 64 || string(got) == hex.EncodeToString(sum[:])) {
						t.Fatalf("size %d, PROXY header on: backend answered %q", size, got)
					}
				}
				if st := r.Stats(); st.Routed != 3 || st.Failed != 0 {
					t.Errorf("stats %+v, want 3 routed", st)
				}
			}
		})
	}
}

// A backend that is not there fails the connection at once and is counted,
// whether the address is a port nobody listens on or a missing socket.
func TestBackendRefused(t *testing.T) {
	hello := captureHello(t, helloCfg("app.example.com"))
	for name, backend := range map[string]string{
		"tcp":  unusedAddr(t),
		"unix": "unix:" + filepath.Join(t.TempDir(), "missing.sock"),
	} {
		t.Run(name, func(t *testing.T) {
			r, addr := startRouter(t, Options{}, Route{Backend: backend})
			c := dial(t, addr, hello)
			waitClosed(t, c, 5*time.Second)
			deadline := time.Now().Add(5 * time.Second)
			for r.Stats().Failed != 1 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond) // the count lands just after the close
			}
			if st := r.Stats(); st.Failed != 1 || st.Routed != 0 {
				t.Errorf("stats %+v, want 1 failed, none routed", st)
			}
		})
	}
}

// A backend that stops reading fills the socket buffers on the way: the
// router keeps what it could not write and stops reading the client until
// the backend reads again, and every byte arrives in order.
func TestSlowBackend(t *testing.T) {
	hello := captureHello(t, helloCfg("app.example.com"))
	const size = 24 << 20 // more than loopback's socket buffers hold
	got := make(chan []byte, 1)
	b := startBackend(t, func(c net.Conn) {
		time.Sleep(300 * time.Millisecond) // the buffers fill meanwhile
		all, _ := io.ReadAll(c)
		got <- all
		_, _ = c.Write([]byte("done"))
	})
	_, addr := startRouter(t, Options{}, Route{Backend: b.addr})
	body := make([]byte, size)
	_, _ = rand.Read(body)
	c := dial(t, addr, hello)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(body); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	if reply, err := io.ReadAll(c); err != nil || string(reply) != "done" {
		t.Fatalf("reply %q, %v", reply, err)
	}
	all := <-got
	if !bytes.Equal(all, append(append([]byte(nil), hello...), body...)) {
		t.Fatalf("backend read %d bytes, want the %d sent, in order", len(all), len(hello)+size)
	}
}

// Many connections at once, of every size, interleave on the event loop:
// each gets its own bytes back, whole and in order, and nothing stays
// open.
func TestManyConcurrentConnections(t *testing.T) {
	hello := captureHello(t, helloCfg("app.example.com"))
	b := startBackend(t, tagEcho("B"))
	r, addr := startRouter(t, Options{}, Route{Backend: b.addr})
	const clients = 64
	errs := make(chan error, clients)
	for i := range clients {
		go func() {
			size := []int{0, 1, 300, 17 << 10, 200 << 10, 2 << 20}[i%6]
			body := make([]byte, size)
			_, _ = rand.Read(body)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			go func() {
				_, _ = c.Write(append(append([]byte(nil), hello...), body...))
				_ = c.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				errs <- err
				return
			}
			if want := append(append([]byte("B"), hello...), body...); !bytes.Equal(got, want) {
				errs <- fmt.Errorf("client %d (%d bytes) read %d bytes back, not its own", i, size, len(got))
				return
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.Stats().Active != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // the release follows the client's EOF
	}
	if st := r.Stats(); st.Active != 0 || st.Routed != clients {
		t.Errorf("stats %+v, want %d routed and none active", st, clients)
	}
}

// A connection still sending its ClientHello when the drain runs out is
// closed with the others, and Serve returns.
func TestShutdownDuringHello(t *testing.T) {
	b := startBackend(t, tagEcho("B"))
	r, addr, cancel, done := serveRouter(t, Options{DrainTimeout: 200 * time.Millisecond, PeekTimeout: time.Minute}, Route{Backend: b.addr})
	hello := captureHello(t, helloCfg("app.example.com"))
	c := dial(t, addr, hello[:len(hello)/2])
	deadline := time.Now().Add(5 * time.Second)
	for r.Stats().Active != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // until the router has it
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return with a connection reading its hello")
	}
	waitClosed(t, c, 2*time.Second)
	if st := r.Stats(); st.Active != 0 || st.Rejected != 1 {
		t.Errorf("stats %+v, want the half hello rejected and none active", st)
	}
}
