package standalone

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// mustIdent parses s or fails the test.
func mustIdent(t *testing.T, s string) ident.Identifier {
	t.Helper()
	id, err := ident.Parse(s)
	if err != nil {
		t.Fatalf("parsing identifier %q: %v", s, err)
	}
	return id
}

// challenge builds a challenge of type typ for name with the given token.
func challenge(t *testing.T, typ, name, token string) solve.Challenge {
	t.Helper()
	return solve.Challenge{
		Type:             typ,
		Identifier:       mustIdent(t, name),
		Token:            token,
		KeyAuthorization: token + ".dGh1bWJwcmludA",
	}
}

// listen binds 127.0.0.1:0.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("binding test listener: %v", err)
	}
	return ln
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln := listen(t)
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// assertRefused checks that nothing accepts connections on addr.
func assertRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
		t.Fatalf("dialing %s after the last CleanUp succeeded; want connection refused", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dialing %s: %v; want connection refused", addr, err)
	}
}

// reverseName returns the RFC 8738 §6 reverse-DNS name of ip.
func reverseName(ip netip.Addr) string {
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.in-addr.arpa", a[3], a[2], a[1], a[0])
		return b.String()
	}
	a := ip.As16()
	for i := 15; i >= 0; i-- {
		fmt.Fprintf(&b, "%x.%x.", a[i]&0xf, a[i]>>4)
	}
	b.WriteString("ip6.arpa")
	return b.String()
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// checker is what both solvers offer to the shared tests.
type checker interface {
	solve.Solver
	Close() error
	Addr() net.Addr
}

// solvers builds one of each solver from opts.
func solvers(t *testing.T, opts Options) map[string]checker {
	t.Helper()
	h, err := NewHTTP01(opts)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := NewTLSALPN01(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); tl.Close() })
	return map[string]checker{solve.HTTP01: h, solve.TLSALPN01: tl}
}

func TestNormalizeHost(t *testing.T) {
	tests := []struct{ in, want string }{
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com.", "example.com"},
		{"example.com:80", "example.com"},
		{"EXAMPLE.com.:8080", "example.com"},
		{"192.0.2.1", "192.0.2.1"},
		{"192.0.2.1:80", "192.0.2.1"},
		{"[2001:DB8::1]", "2001:db8::1"},
		{"[2001:db8:0:0::1]:80", "2001:db8::1"},
		{"2001:db8::1", "2001:db8::1"},
		{"[::ffff:192.0.2.1]:80", "192.0.2.1"},
		{"[fe80::1%eth0]:80", ""},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := normalizeHost(tt.in); got != tt.want {
				t.Errorf("normalizeHost(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseReverseName(t *testing.T) {
	tests := []struct {
		name string
		want string // "" for not a reverse name
	}{
		{"4.3.2.1.in-addr.arpa", "1.2.3.4"},
		{"1.2.0.192.in-addr.arpa", "192.0.2.1"},
		{"255.255.255.255.in-addr.arpa", "255.255.255.255"},
		{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "2001:db8::1"},
		{"3.2.1.in-addr.arpa", ""},
		{"5.4.3.2.1.in-addr.arpa", ""},
		{"256.3.2.1.in-addr.arpa", ""},
		{"04.3.2.1.in-addr.arpa", ""},
		{"x.3.2.1.in-addr.arpa", ""},
		{".3.2.1.in-addr.arpa", ""},
		{"0.0.ip6.arpa", ""},
		{"g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", ""},
		{"10.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", ""},
		{"example.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip, ok := parseReverseName(tt.name)
			got := ""
			if ok {
				got = ip.String()
			}
			if got != tt.want {
				t.Errorf("parseReverseName(%q) = %q, want %q", tt.name, got, tt.want)
			}
		})
	}
	for _, s := range []string{"192.0.2.1", "10.20.30.40", "2001:db8::1", "fe80::abcd:ef01:2345:6789", "::1"} {
		t.Run("roundtrip "+s, func(t *testing.T) {
			ip := netip.MustParseAddr(s)
			got, ok := parseReverseName(reverseName(ip))
			if !ok || got != ip {
				t.Errorf("parseReverseName(%q) = %v, %v; want %v", reverseName(ip), got, ok, ip)
			}
		})
	}
}

func TestOptionsInvalidAddr(t *testing.T) {
	for _, addr := range []string{"80", "localhost", "[::1", "host:"} {
		t.Run(addr, func(t *testing.T) {
			if _, err := NewHTTP01(Options{Addr: addr}); err == nil || !strings.Contains(err.Error(), "host:port") {
				t.Errorf("NewHTTP01(Addr %q) error = %v; want one asking for host:port", addr, err)
			}
			if _, err := NewTLSALPN01(Options{Addr: addr}); err == nil || !strings.Contains(err.Error(), "host:port") {
				t.Errorf("NewTLSALPN01(Addr %q) error = %v; want one asking for host:port", addr, err)
			}
		})
	}
}

func TestExplainBind(t *testing.T) {
	opErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", errno)}
	}
	tests := []struct {
		name  string
		addr  string
		errno syscall.Errno
		want  []string
		not   []string
	}{
		{"permission low port", ":80", syscall.EACCES,
			[]string{"below 1024", "CAP_NET_BIND_SERVICE", "setcap cap_net_bind_service=+ep $(which detour)", "AmbientCapabilities"}, nil},
		{"permission high port", ":8080", syscall.EACCES,
			[]string{"CAP_NET_BIND_SERVICE"}, []string{"below 1024"}},
		{"in use", ":80", syscall.EADDRINUSE,
			[]string{"already listens", "nginx", "side-port", "webroot", "stateless", "`detour snippet http`", "firewall window"}, nil},
		{"not available", "192.0.2.1:80", syscall.EADDRNOTAVAIL,
			[]string{"not on this host"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &lifecycle{typ: solve.HTTP01, addr: tt.addr, inUseHelp: inUseHelpHTTP}
			err := l.explainBind(opErr(tt.errno))
			if !errors.Is(err, tt.errno) {
				t.Errorf("error %v does not wrap %v", err, tt.errno)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error %q should not contain %q", err, w)
				}
			}
		})
	}
}

func TestCheckWildcardNotApplicable(t *testing.T) {
	for typ, s := range solvers(t, Options{Addr: "127.0.0.1:0"}) {
		t.Run(typ, func(t *testing.T) {
			err := s.Check(context.Background(), mustIdent(t, "*.example.com"))
			if !errors.Is(err, solve.ErrNotApplicable) {
				t.Errorf("Check(wildcard) = %v; want ErrNotApplicable", err)
			}
			ch := challenge(t, typ, "*.example.com", "tok")
			if err := s.Present(context.Background(), ch); !errors.Is(err, solve.ErrNotApplicable) {
				t.Errorf("Present(wildcard) = %v; want ErrNotApplicable", err)
			}
			for _, name := range []string{"example.com", "192.0.2.1", "2001:db8::1"} {
				if err := s.Check(context.Background(), mustIdent(t, name)); err != nil {
					t.Errorf("Check(%s) on a free address = %v; want nil", name, err)
				}
			}
		})
	}
}

func TestCheckAddressInUse(t *testing.T) {
	busy := listen(t)
	defer busy.Close()
	wantHelp := map[string][]string{
		solve.HTTP01:    {"side-port", "webroot", "stateless", "`detour snippet http`"},
		solve.TLSALPN01: {"front-door", "ALPN-forward", "`detour snippet http`"},
	}
	for typ, s := range solvers(t, Options{Addr: busy.Addr().String()}) {
		t.Run(typ, func(t *testing.T) {
			err := s.Check(context.Background(), mustIdent(t, "example.com"))
			if !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("Check on a busy address = %v; want EADDRINUSE", err)
			}
			for _, w := range append(wantHelp[typ], "already listens", busy.Addr().String(), typ) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if err := s.Present(context.Background(), challenge(t, typ, "example.com", "tok")); !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("Present on a busy address = %v; want EADDRINUSE", err)
			}
		})
	}
}

func TestCheckWhileServing(t *testing.T) {
	ctx := context.Background()
	for typ, s := range solvers(t, Options{Addr: "127.0.0.1:0"}) {
		t.Run(typ, func(t *testing.T) {
			ch := challenge(t, typ, "example.com", "tok")
			if err := s.Present(ctx, ch); err != nil {
				t.Fatal(err)
			}
			// The port is now held by the solver itself; Check must pass
			// rather than report it as taken.
			addr := s.Addr().String()
			s2 := solvers(t, Options{Addr: addr})[typ]
			if err := s2.Check(ctx, mustIdent(t, "example.com")); !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("a second solver's Check = %v; want EADDRINUSE", err)
			}
			if err := s.Check(ctx, mustIdent(t, "other.example.com")); err != nil {
				t.Errorf("Check while serving = %v; want nil", err)
			}
			if err := s.CleanUp(ctx, ch); err != nil {
				t.Fatal(err)
			}
			if err := s2.Check(ctx, mustIdent(t, "example.com")); err != nil {
				t.Errorf("Check after the last CleanUp released the port = %v; want nil", err)
			}
		})
	}
}

func TestCheckGivenListener(t *testing.T) {
	for _, typ := range []string{solve.HTTP01, solve.TLSALPN01} {
		t.Run(typ, func(t *testing.T) {
			ln := listen(t)
			s := solvers(t, Options{Listener: ln, Addr: "not an address"})[typ]
			if err := s.Check(context.Background(), mustIdent(t, "example.com")); err != nil {
				t.Errorf("Check with a given listener = %v; want nil", err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("given listener after Close: Accept = %v; want net.ErrClosed", err)
			}
			if err := s.Present(context.Background(), challenge(t, typ, "example.com", "tok")); !errors.Is(err, errClosed) {
				t.Errorf("Present after Close = %v; want errClosed", err)
			}
		})
	}
}
