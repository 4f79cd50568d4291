//go:build unix

package router

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The descriptor tests run the router in a child process (this test binary
// again, with fdChildEnv set) whose RLIMIT_NOFILE is low, and attack it
// from this one: connections that send half a ClientHello, or nothing, and
// wait. The child's PeekTimeout is a minute, so that they hold their
// descriptors for the whole test (with the default 5 s an attacker only
// has to reconnect every 5 s). Then a real TLS client must get through,
// its handshake passed to a real TLS backend in this process, in time.
const (
	fdChildEnv   = "DETOUR_ROUTER_FD_CHILD" // "mode limit backend"
	fdChildLimit = 128
)

func TestHalfHellosOutOfDescriptors(t *testing.T) {
	if os.Getenv(fdChildEnv) != "" {
		fdChild(t)
		return
	}
	cert := selfSigned(t, "app.example.com")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	hello := captureHello(t, helloCfg("app.example.com", "h2"))

	// attack opens n idle connections from each of sources; every other
	// one sends half a ClientHello.
	attack := func(t *testing.T, addr string, n int, sources ...string) {
		for _, src := range sources {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
			for i := range n {
				c, err := d.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				if i%2 == 1 {
					if _, err := c.Write(hello[:len(hello)/2]); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	scenarios := map[string]func(t *testing.T, child *fdChildProc){
		// One source, many more idle connections than descriptors.
		"one source": func(t *testing.T, child *fdChildProc) {
			attack(t, child.addr, 2*fdChildLimit, "127.0.0.1")
		},
		// Several sources, each with fewer than the per-source limit,
		// together more than the descriptors.
		"many sources": func(t *testing.T, child *fdChildProc) {
			attack(t, child.addr, 50, "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
		},
		// A few idle connections, and the rest of the process takes
		// every descriptor left.
		"process full": func(t *testing.T, child *fdChildProc) {
			attack(t, child.addr, 20, "127.0.0.1", "127.0.0.2")
			child.settle(t)
			if got := child.command(t, "fill"); !strings.HasPrefix(got, "filled ") {
				t.Fatalf("fill: %s", got)
			}
		},
	}
	for name, attackFn := range scenarios {
		for _, mode := range []string{"loops", "goroutines"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				t.Parallel()
				child := startFDChild(t, mode, ln.Addr().String())
				attackFn(t, child)
				child.settle(t)

				d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.200")}, Timeout: 10 * time.Second}
				start := time.Now()
				c, err := tls.DialWithDialer(d, "tcp", child.addr, &tls.Config{ServerName: "app.example.com", RootCAs: pool})
				if err != nil {
					t.Fatalf("a real client did not get through in %s: %v\nrouter: %s\n%s",
						time.Since(start).Round(time.Millisecond), err, child.command(t, "stats"), child.stderr.String())
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				if got := string(readN(t, c, 4)); got != "ping" {
					t.Fatalf("echo = %q", got)
				}
				t.Logf("through in %s; router: %s\n%s", time.Since(start).Round(time.Millisecond), child.command(t, "stats"), child.stderr.String())
			})
		}
	}
}

// fdChildProc is a router running in a child process.
type fdChildProc struct {
	addr   string
	mu     sync.Mutex // one command at a time
	stdin  io.Writer
	lines  *bufio.Scanner
	stderr *lockedBuffer
}

// startFDChild starts the child process and waits for its address.
func startFDChild(t *testing.T, mode, backend string) *fdChildProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestHalfHellosOutOfDescriptors$")
	cmd.Env = append(os.Environ(), fdChildEnv+"="+fmt.Sprintf("%s %d %s", mode, fdChildLimit, backend))
	p := &fdChildProc{stderr: &lockedBuffer{}}
	cmd.Stderr = p.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close() // the child stops serving and exits
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	p.stdin, p.lines = stdin, bufio.NewScanner(stdout)
	got := p.read(t)
	addr, ok := strings.CutPrefix(got, "addr ")
	if !ok {
		t.Fatalf("child: %s\n%s", got, p.stderr.String())
	}
	p.addr = addr
	return p
}

// read returns the child's next line of its own (the test framework's
// are skipped).
func (p *fdChildProc) read(t *testing.T) string {
	t.Helper()
	for p.lines.Scan() {
		if line := p.lines.Text(); strings.HasPrefix(line, "fdchild ") {
			return strings.TrimPrefix(line, "fdchild ")
		}
	}
	t.Fatalf("child ended: %v\n%s", p.lines.Err(), p.stderr.String())
	return ""
}

// command sends cmd to the child and returns its answer.
func (p *fdChildProc) command(t *testing.T, cmd string) string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := io.WriteString(p.stdin, cmd+"\n"); err != nil {
		t.Fatal(err)
	}
	return p.read(t)
}

// settle waits until the child's router has stopped accepting: it has
// taken every connection it can.
func (p *fdChildProc) settle(t *testing.T) {
	t.Helper()
	last, same := "", 0
	for deadline := time.Now().Add(10 * time.Second); same < 3 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond) // polling another process
		if s := p.command(t, "stats"); s == last {
			same++
		} else {
			last, same = s, 0
		}
	}
}

// fdChild is the child process: a router with a low RLIMIT_NOFILE,
// routing to the backend named in fdChildEnv, serving until its standard
// input ends, and answering commands read from it: "stats", and "fill"
// (open files until none more can be, as a busy process would).
func fdChild(t *testing.T) {
	var mode, backend string
	var limit int
	if _, err := fmt.Sscan(os.Getenv(fdChildEnv), &mode, &limit, &backend); err != nil {
		t.Fatal(err)
	}
	var rl unix.Rlimit
	rl.Cur, rl.Max = rlim(rl.Cur, limit), rlim(rl.Max, limit)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	tab, err := NewTable([]Route{{Backend: backend}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Options{
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, nil)),
		PeekTimeout:  time.Minute,
		DrainTimeout: 100 * time.Millisecond,
	}, tab)
	if err != nil {
		t.Fatal(err)
	}
	r.noLoops = mode == "goroutines"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln) }()
	fmt.Printf("fdchild addr %s\n", ln.Addr())

	var held []*os.File
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "stats":
			st := r.Stats()
			fmt.Printf("fdchild stats accepted=%d active=%d routed=%d rejected=%d\n", st.Accepted, st.Active, st.Routed, st.Rejected)
		case "fill":
			for {
				f, err := os.Open(os.DevNull)
				if err != nil {
					break
				}
				held = append(held, f)
			}
			fmt.Printf("fdchild filled %s\n", strconv.Itoa(len(held)))
		}
	}
	for _, f := range held {
		f.Close()
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}

// rlim is n as a limit of unix.Rlimit, whose type differs between systems.
func rlim[T ~int64 | ~uint64](_ T, n int) T { return T(n) }

// lockedBuffer is a strings.Builder safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
