package router

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSourceKey(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"}, // from a dual-stack listener
		{"2001:db8::1", "2001:db8::"},
		{"2001:db8::ffff:1:2:3", "2001:db8::"},
		{"2001:db8:0:1::1", "2001:db8:0:1::"},
		{"fe80::1%eth0", "fe80::"},
		{"::1", "::"},
	}
	for _, tt := range tests {
		if got := sourceKey(netip.MustParseAddr(tt.addr)); got != netip.MustParseAddr(tt.want) {
			t.Errorf("sourceKey(%s) = %s, want %s", tt.addr, got, tt.want)
		}
	}
	if got := sourceKey(netip.Addr{}); got.IsValid() {
		t.Errorf("sourceKey(invalid) = %s", got)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use, for logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// The per-source limit counts an IPv4 address, or an IPv6 /64, whatever
// the port, and only connections listed (still reading their hello): one
// that leaves makes room for another.
func TestPeekPerSourceLimit(t *testing.T) {
	tests := []struct {
		name   string
		source func(i int) string // the i-th address of one source
		other  []string           // addresses of other sources
	}{
		{
			name:   "ipv4",
			source: func(int) string { return "192.0.2.1" },
			other:  []string{"192.0.2.2", "198.51.100.1"},
		},
		{
			name:   "ipv4 mapped",
			source: func(i int) string { return []string{"192.0.2.1", "::ffff:192.0.2.1"}[i%2] },
			other:  []string{"::ffff:192.0.2.2", "192.0.2.3"},
		},
		{
			name:   "ipv6",
			source: func(i int) string { return fmt.Sprintf("2001:db8:0:7:%x::%x", i, i+1) },
			other:  []string{"2001:db8:0:8::1", "2001:db8:1:7::1", "::ffff:192.0.2.1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			const limit = 5
			g := newGuard(slog.New(slog.NewTextHandler(&logs, nil)), limit, -1, 0)
			var in []*conn
			for i := range limit {
				cn := &conn{}
				if !g.admit(cn, netip.MustParseAddr(tt.source(i)), nil, nil) {
					t.Fatalf("connection %d from %s refused, below the limit", i+1, tt.source(i))
				}
				in = append(in, cn)
			}
			for i := range 3 {
				if g.admit(&conn{}, netip.MustParseAddr(tt.source(limit+i)), nil, nil) {
					t.Fatalf("connection %d from %s admitted, over the limit of %d", limit+i+1, tt.source(limit+i), limit)
				}
			}
			for _, a := range tt.other {
				if !g.admit(&conn{}, netip.MustParseAddr(a), nil, nil) {
					t.Errorf("%s refused: counted with %s", a, tt.source(0))
				}
			}
			if g.leave(in[0]) || g.leave(in[0]) {
				t.Error("leave reports an eviction")
			}
			in[0] = &conn{}
			if !g.admit(in[0], netip.MustParseAddr(tt.source(99)), nil, nil) {
				t.Error("refused after one left")
			}
			if g.admit(&conn{}, netip.MustParseAddr(tt.source(100)), nil, nil) {
				t.Error("admitted over the limit again")
			}
			if got := g.overSource.Load(); got != 4 {
				t.Errorf("counted %d over the limit, want 4", got)
			}
			if got := g.peeking(); got != limit+len(tt.other) {
				t.Errorf("peeking = %d, want %d", got, limit+len(tt.other))
			}
			if n := strings.Count(logs.String(), "too many connections"); n != 1 {
				t.Errorf("logged %d times in one episode, want once:\n%s", n, logs.String())
			}
			for _, cn := range in {
				g.leave(cn)
			}
			if n := len(g.sources); n != len(tt.other) {
				t.Errorf("%d sources counted, want %d: %v", n, len(tt.other), g.sources)
			}
		})
	}
}

// listenDual listens on the IPv6 wildcard, which takes IPv4 connections
// too (their addresses mapped into IPv6), or on 127.0.0.1 without IPv6.
func listenDual(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serveOn serves r on ln until the test ends and returns ln's loopback
// address.
func serveOn(t *testing.T, r *Router, ln net.Listener) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return fmt.Sprintf("127.0.0.1:%d", ln.Addr().(*net.TCPAddr).Port)
}

// dialFrom connects to addr from the local address src and sends data.
func dialFrom(t *testing.T, src, addr string, data []byte) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitStats polls r's counters until ok holds.
func waitStats(t *testing.T, r *Router, what string, ok func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok(r.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: stats %+v", what, r.Stats())
		}
		time.Sleep(time.Millisecond) // the router works on its own goroutines
	}
}

// Through a router, on a dual-stack listener: connections past their
// ClientHello do not count; one over the limit is closed at once; another
// IPv4 address is another source; a hello completed makes room.
func TestPeekPerSourceRouter(t *testing.T) {
	hello := captureHello(t, helloCfg("app.example.com"))
	b := startBackend(t, tagEcho("B"))
	for _, mode := range []string{"loops", "goroutines"} {
		t.Run(mode, func(t *testing.T) {
			tab, _ := NewTable([]Route{{Backend: b.addr}})
			var logs syncBuffer
			r, err := New(Options{MaxPeekPerSource: 4, DrainTimeout: 100 * time.Millisecond,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))}, tab)
			if err != nil {
				t.Fatal(err)
			}
			r.noLoops = mode == "goroutines"
			addr := serveOn(t, r, listenDual(t))

			for range 6 { // established: not counted
				c := dialFrom(t, "127.0.0.1", addr, hello)
				if got := string(readN(t, c, 1)); got != "B" {
					t.Fatalf("routed to %q", got)
				}
			}
			var idle []net.Conn
			for i := range 4 {
				idle = append(idle, dialFrom(t, "127.0.0.1", addr, hello[:i*10]))
			}
			waitStats(t, r, "4 reading their hello", func(st Stats) bool { return st.Peeking == 4 })

			over := dialFrom(t, "127.0.0.1", addr, hello)
			waitClosed(t, over, 5*time.Second)
			if st := r.Stats(); st.OverSource != 1 || st.Accepted != 11 || st.Rejected != 0 {
				t.Errorf("stats %+v, want 1 over its source's limit of 11 accepted", st)
			}
			other := dialFrom(t, "127.0.0.2", addr, hello)
			if got := string(readN(t, other, 1)); got != "B" {
				t.Fatalf("another address: routed to %q", got)
			}
			if _, err := idle[3].Write(hello[30:]); err != nil {
				t.Fatal(err)
			}
			if got := string(readN(t, idle[3], 1)); got != "B" {
				t.Fatalf("hello completed: routed to %q", got)
			}
			again := dialFrom(t, "127.0.0.1", addr, hello)
			if got := string(readN(t, again, 1)); got != "B" {
				t.Fatalf("after a hello completed: routed to %q", got)
			}
			if st := r.Stats(); st.OverSource != 1 || st.Routed != 9 || st.Peeking != 3 {
				t.Errorf("stats %+v, want 9 routed, 3 reading their hello", st)
			}
			if n := strings.Count(logs.String(), "too many connections"); n != 1 {
				t.Errorf("logged %d times, want once:\n%s", n, logs.String())
			}
		})
	}
}

// With every descriptor in the reserve (a limit of 8 in a process that
// has more open), each connection accepted closes the two that have waited
// longest for their hello, never itself; a real client gets through.
func TestEvictOldestPeeking(t *testing.T) {
	hello := captureHello(t, helloCfg("app.example.com"))
	b := startBackend(t, tagEcho("B"))
	for _, mode := range []string{"loops", "goroutines"} {
		t.Run(mode, func(t *testing.T) {
			tab, _ := NewTable([]Route{{Backend: b.addr}})
			var logs syncBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			r, err := New(Options{Logger: log, PeekTimeout: time.Minute, DrainTimeout: 100 * time.Millisecond}, tab)
			if err != nil {
				t.Fatal(err)
			}
			r.guard = newGuard(log, DefaultMaxPeekPerSource, DefaultFDReserve, 8)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			r.noLoops = mode == "goroutines"
			addr := serveOn(t, r, ln)

			var idle []net.Conn
			for i := range 5 {
				idle = append(idle, dialFrom(t, fmt.Sprintf("127.0.0.%d", i+1), addr, hello[:i*10]))
				waitStats(t, r, "the connection accepted", func(st Stats) bool { return st.Accepted == uint64(i+1) })
			}
			for _, c := range idle[:4] {
				waitClosed(t, c, 5*time.Second)
			}
			if st := r.Stats(); st.Evicted != 4 || st.Peeking != 1 {
				t.Errorf("stats %+v, want 4 evicted and 1 reading its hello", st)
			}
			c := dialFrom(t, "127.0.0.9", addr, hello)
			if got := string(readN(t, c, 1)); got != "B" {
				t.Fatalf("routed to %q", got)
			}
			waitClosed(t, idle[4], 5*time.Second)
			if st := r.Stats(); st.Evicted != 5 || st.Routed != 1 || st.Rejected != 0 || st.Peeking != 0 {
				t.Errorf("stats %+v, want 5 evicted, 1 routed, none rejected", st)
			}
			if n := strings.Count(logs.String(), "running low"); n != 1 {
				t.Errorf("logged %d times, want once:\n%s", n, logs.String())
			}
		})
	}
}

// One Router serving two listeners keeps one reserve: a connection
// accepted on one evicts the oldest, waiting on the other (in the loops of
// another Serve call, closed by a goroutine).
func TestEvictAcrossServes(t *testing.T) {
	hello := captureHello(t, helloCfg("app.example.com"))
	tab, _ := NewTable([]Route{{Backend: unusedAddr(t)}})
	r, err := New(Options{PeekTimeout: time.Minute, DrainTimeout: 100 * time.Millisecond}, tab)
	if err != nil {
		t.Fatal(err)
	}
	r.guard = newGuard(slog.New(slog.DiscardHandler), DefaultMaxPeekPerSource, DefaultFDReserve, 8)
	var addrs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, serveOn(t, r, ln))
	}
	first := dialFrom(t, "127.0.0.1", addrs[0], hello[:10])
	waitStats(t, r, "the first connection", func(st Stats) bool { return st.Peeking == 1 })
	dialFrom(t, "127.0.0.2", addrs[1], hello[:10])
	waitClosed(t, first, 5*time.Second)
	waitStats(t, r, "one evicted", func(st Stats) bool { return st.Evicted == 1 && st.Peeking == 1 })
}

// Negative limits turn the guard off: nothing is listed or closed.
func TestGuardOff(t *testing.T) {
	tab, _ := NewTable(nil)
	r, err := New(Options{MaxPeekPerSource: -1, FDReserve: -1}, tab)
	if err != nil {
		t.Fatal(err)
	}
	if r.guard.on || r.guard.pressure(1<<30) {
		t.Fatalf("guard on: %+v", r.guard)
	}
	for range 100 {
		if !r.guard.admit(&conn{}, netip.MustParseAddr("192.0.2.1"), nil, nil) {
			t.Fatal("admit refused with no limit")
		}
	}
	if closed, _ := r.guard.exhausted(nil); closed != 0 || r.Stats().Peeking != 0 {
		t.Fatalf("closed %d, peeking %d", closed, r.Stats().Peeking)
	}
}

// BenchmarkGuardAdmitLeave: what the guard costs a connection, admitted at
// accept and unlisted when its hello is complete (one source each).
func BenchmarkGuardAdmitLeave(b *testing.B) {
	g := newGuard(slog.New(slog.DiscardHandler), DefaultMaxPeekPerSource, DefaultFDReserve, 1<<20)
	var cns [64]conn
	for i := range cns { // others in the list meanwhile
		g.admit(&cns[i], netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), nil, nil)
	}
	cn := &conn{}
	ip := netip.AddrFrom4([4]byte{192, 0, 2, 1})
	b.ReportAllocs()
	for b.Loop() {
		g.admit(cn, ip, nil, nil)
		g.leave(cn)
	}
}
