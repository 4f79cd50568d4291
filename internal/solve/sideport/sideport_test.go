package sideport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

func newSolver(t *testing.T, opts Options) *Solver {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func chal(name, token string) solve.Challenge {
	id, err := ident.Parse(name)
	if err != nil {
		panic(err)
	}
	return solve.Challenge{Type: solve.HTTP01, Identifier: id, Token: token, KeyAuthorization: token + ".thumb"}
}

// client talks HTTP to the solver's current address, TCP or Unix.
func client(s *Solver) (*http.Client, string) {
	a := s.Addr()
	tr := &http.Transport{DisableKeepAlives: true}
	base := "http://" + a.String()
	if a.Network() == "unix" {
		path := a.String()
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		base = "http://unix"
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}, base
}

// do sends method path to the solver with Host host and extra headers.
func do(t *testing.T, s *Solver, method, host, path string, hdr ...string) (int, string) {
	t.Helper()
	c, base := client(s)
	req, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestServeTCP(t *testing.T) {
	ctx := context.Background()
	s := newSolver(t, Options{Addr: "127.0.0.1:0"})
	if s.Addr() != nil {
		t.Fatal("serving before Present")
	}
	a := chal("www.example.com", "tokA")
	b := chal("192.0.2.1", "tokB")
	for _, ch := range []solve.Challenge{a, b} {
		if err := s.Present(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	addr := s.Addr().String()
	port := addr[strings.LastIndex(addr, ":"):]
	tests := []struct {
		name, method, host, path string
		hdr                      []string
		wantStatus               int
		wantBody                 string // exact for 200, substring otherwise
	}{
		{"dns", "GET", "www.example.com", a.HTTP01Path(), nil, 200, a.KeyAuthorization},
		{"host case and port", "GET", "WWW.Example.com.:80", a.HTTP01Path(), nil, 200, a.KeyAuthorization},
		{"ip", "GET", "192.0.2.1", b.HTTP01Path(), nil, 200, b.KeyAuthorization},
		{"head", "HEAD", "www.example.com", a.HTTP01Path(), nil, 200, ""},
		{"post", "POST", "www.example.com", a.HTTP01Path(), nil, 405, ""},
		{"unknown token", "GET", "www.example.com", "/.well-known/acme-challenge/nope", nil, 404, "detour: no challenge for token nope on host www.example.com"},
		{"other host", "GET", "other.example.com", a.HTTP01Path(), nil, 404, "detour: no challenge for token tokA on host other.example.com (it was presented for www.example.com"},
		{"not a token", "GET", "www.example.com", "/.well-known/acme-challenge/a.b", nil, 404, `"a.b" is not an ACME token`},
		{"other path", "GET", "www.example.com", "/", nil, 404, "only /.well-known/acme-challenge/<token>"},
		// Loopback: forwarded hosts are honoured.
		{"x-forwarded-host", "GET", "127.0.0.1" + port, a.HTTP01Path(), []string{"X-Forwarded-Host", "www.example.com"}, 200, a.KeyAuthorization},
		{"x-forwarded-host list", "GET", "127.0.0.1" + port, a.HTTP01Path(), []string{"X-Forwarded-Host", "www.example.com:80, 127.0.0.1"}, 200, a.KeyAuthorization},
		{"forwarded", "GET", "127.0.0.1" + port, a.HTTP01Path(), []string{"Forwarded", `for=192.0.2.60;proto=http;host="www.example.com:80"`}, 200, a.KeyAuthorization},
		{"forwarded second element", "GET", "backend", a.HTTP01Path(), []string{"Forwarded", `for=1.2.3.4, for=5.6.7.8;Host=www.example.com`}, 200, a.KeyAuthorization},
		{"forwarded names the effective host", "GET", "backend", "/.well-known/acme-challenge/zzz", []string{"Forwarded", `host=www.example.com`}, 404, "on host www.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := do(t, s, tt.method, tt.host, tt.path, tt.hdr...)
			if status != tt.wantStatus {
				t.Fatalf("status %d (%q), want %d", status, body, tt.wantStatus)
			}
			if status == 200 && body != tt.wantBody || status != 200 && !strings.Contains(body, tt.wantBody) {
				t.Errorf("body %q, want %q", body, tt.wantBody)
			}
		})
	}

	// The port stays bound until the last CleanUp.
	if err := s.CleanUp(ctx, a); err != nil {
		t.Fatal(err)
	}
	if s.Addr() == nil {
		t.Fatal("stopped serving while a challenge is still presented")
	}
	if err := s.CleanUp(ctx, b); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != nil {
		t.Fatal("still serving after the last CleanUp")
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after the last CleanUp", addr)
	}
	// Cleaning up twice, or what was never presented, does nothing.
	if err := s.CleanUp(ctx, a); err != nil {
		t.Error(err)
	}
}

func TestIgnoreForwarded(t *testing.T) {
	ctx := context.Background()
	s := newSolver(t, Options{Addr: "127.0.0.1:0", IgnoreForwarded: true})
	a := chal("example.com", "tok")
	if err := s.Present(ctx, a); err != nil {
		t.Fatal(err)
	}
	if status, _ := do(t, s, "GET", "127.0.0.1", a.HTTP01Path(), "X-Forwarded-Host", "example.com", "Forwarded", "host=example.com"); status != 404 {
		t.Errorf("forwarded headers honoured with IgnoreForwarded: %d", status)
	}
}

// remoteListener makes every connection appear to come from remote, to
// test a proxy that is not on this host.
type remoteListener struct {
	net.Listener
	remote net.Addr
}

func (l remoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return remoteConn{c, l.remote}, nil
}

type remoteConn struct {
	net.Conn
	remote net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.remote }

func TestForwardedOnlyFromLoopback(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	remote := &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 40000}
	s := newSolver(t, Options{Listener: remoteListener{ln, remote}})
	a := chal("example.com", "tok")
	if err := s.Present(ctx, a); err != nil {
		t.Fatal(err)
	}
	for _, hdr := range [][]string{{"X-Forwarded-Host", "example.com"}, {"Forwarded", "host=example.com"}} {
		status, body := do(t, s, "GET", "proxy.internal", a.HTTP01Path(), hdr...)
		if status != 404 || !strings.Contains(body, "on host proxy.internal") {
			t.Errorf("%s from %s: %d %q, want 404 on host proxy.internal", hdr[0], remote, status, body)
		}
	}
	// The Host header itself is always used.
	if status, _ := do(t, s, "GET", "example.com", a.HTTP01Path()); status != 200 {
		t.Errorf("Host from a remote peer: %d, want 200", status)
	}

	// Mounted in another server, RemoteAddr decides.
	for _, tt := range []struct {
		remote string
		want   int
	}{{"192.0.2.7:1234", 404}, {"127.0.0.1:1234", 200}, {"[::1]:1234", 200}, {"@", 404}} {
		req := httptest.NewRequest("GET", "http://proxy.internal"+a.HTTP01Path(), nil)
		req.RemoteAddr = tt.remote
		req.Header.Set("X-Forwarded-Host", "example.com")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("mounted, RemoteAddr %s: %d, want %d", tt.remote, rec.Code, tt.want)
		}
	}
}

func TestTrustedAddr(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, true},
		{&net.TCPAddr{IP: net.ParseIP("127.8.9.10")}, true},
		{&net.TCPAddr{IP: net.ParseIP("::1")}, true},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.1")}, true},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.1")}, false},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::1")}, false},
		{&net.UnixAddr{Name: "", Net: "unix"}, true},
		{nil, false},
	}
	for _, tt := range tests {
		if got := trustedAddr(tt.addr); got != tt.want {
			t.Errorf("trustedAddr(%v) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

func TestForwardedHosts(t *testing.T) {
	tests := []struct {
		in   []string
		want []string
	}{
		{[]string{`host=example.com`}, []string{"example.com"}},
		{[]string{`for=192.0.2.60;proto=http;by=203.0.113.43;host="example.com:8080"`}, []string{"example.com:8080"}},
		{[]string{`for="[2001:db8::1]:4711";HOST="a.example"`, `host=b.example`}, []string{"a.example", "b.example"}},
		{[]string{`for="x,y;z";host=c.example`}, []string{"c.example"}},
		{[]string{`host="esc\"aped"`}, []string{`esc"aped`}},
		{[]string{`host="unterminated`, `for=1.2.3.4`}, nil},
		{[]string{`hostile=x`}, nil},
	}
	for _, tt := range tests {
		if got := forwardedHosts(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("forwardedHosts(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUnixSocket(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sock := filepath.Join(dir, "http.sock")

	// A stale socket left by a process that died is replaced.
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()

	s := newSolver(t, Options{Addr: "unix:" + sock})
	if err := s.Check(ctx, ident.Identifier{Type: ident.TypeDNS, Value: "example.com"}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	a := chal("example.com", "tok")
	if err := s.Present(ctx, a); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want a socket with 0660", fi.Mode())
	}
	if status, body := do(t, s, "GET", "example.com", a.HTTP01Path()); status != 200 || body != a.KeyAuthorization {
		t.Errorf("GET over the socket: %d %q", status, body)
	}
	// The socket peer is the local proxy: forwarded hosts count.
	if status, _ := do(t, s, "GET", "localhost", a.HTTP01Path(), "X-Forwarded-Host", "example.com"); status != 200 {
		t.Errorf("X-Forwarded-Host over the socket: %d, want 200", status)
	}
	if err := s.CleanUp(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket not removed after the last CleanUp: %v", err)
	}
}

func TestGivenListener(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	a := chal("example.com", "tok")
	if err := s.Present(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.CleanUp(ctx, a); err != nil {
		t.Fatal(err)
	}
	// Still served after the last CleanUp: a permanent side port.
	if s.Addr() == nil {
		t.Fatal("a given listener stopped being served after CleanUp")
	}
	if status, body := do(t, s, "GET", "example.com", a.HTTP01Path()); status != 404 || !strings.Contains(body, "no challenge for token tok") {
		t.Errorf("after CleanUp: %d %q, want the diagnostic 404", status, body)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("given listener still open after Close")
	}
	if err := s.Present(ctx, a); err == nil {
		t.Error("Present after Close succeeded")
	}
}

func TestCheckAndErrors(t *testing.T) {
	ctx := context.Background()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	id := ident.Identifier{Type: ident.TypeDNS, Value: "example.com"}
	tests := []struct {
		name    string
		addr    string
		id      ident.Identifier
		wantErr string
	}{
		{"free", "127.0.0.1:0", id, ""},
		{"wildcard", "127.0.0.1:0", ident.Identifier{Type: ident.TypeDNS, Value: "*.example.com"}, "wildcard names need a dns-01 path"},
		{"in use", busy.Addr().String(), id, "something else already listens there"},
		{"not local", "192.0.2.1:8402", id, "not on this host"},
		{"socket dir missing", "unix:" + filepath.Join(t.TempDir(), "no/such/dir/s.sock"), id, "does not exist; create it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSolver(t, Options{Addr: tt.addr})
			err := s.Check(ctx, tt.id)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Check: %v, want %q", err, tt.wantErr)
			}
			if tt.id.IsWildcard() {
				if !errors.Is(err, solve.ErrNotApplicable) {
					t.Errorf("not ErrNotApplicable: %v", err)
				}
				return
			}
			if err := s.Present(ctx, chal("example.com", "tok")); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Present: %v, want %q", err, tt.wantErr)
			}
		})
	}
	for _, bad := range []string{"8402", "unix:relative.sock", "localhost"} {
		if _, err := New(Options{Addr: bad}); err == nil || !strings.Contains(err.Error(), "invalid side-port address") {
			t.Errorf("New(Addr %q): %v", bad, err)
		}
	}
	s := newSolver(t, Options{})
	if s.addrText() != DefaultAddr {
		t.Errorf("default address %q, want %q", s.addrText(), DefaultAddr)
	}
	if err := s.Present(ctx, solve.Challenge{Type: solve.HTTP01, Identifier: id, Token: "../x", KeyAuthorization: "k"}); err == nil {
		t.Error("Present accepted a token that is not base64url")
	}
}

func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	s := newSolver(t, Options{Addr: "127.0.0.1:0"})
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			ch := chal(fmt.Sprintf("n%d.example.com", i), fmt.Sprintf("tok%d", i))
			if err := s.Present(ctx, ch); err != nil {
				t.Error(err)
				return
			}
			if err := s.CleanUp(ctx, ch); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if s.Addr() != nil {
		t.Error("still serving after every challenge was cleaned up")
	}
}
