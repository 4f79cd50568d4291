package standalone

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/solve"
)

// get sends GET path to s's current address (TCP or Unix) with Host host
// and header pairs hdr, and returns status and body.
func get(t *testing.T, s *HTTP01, host, path string, hdr ...string) (int, string) {
	t.Helper()
	a := s.Addr()
	tr := &http.Transport{DisableKeepAlives: true}
	base := "http://" + a.String()
	if a.Network() == "unix" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", a.String())
		}
		base = "http://unix"
	}
	req, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestHTTP01ForwardedAndExplain(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		opts       Options
		hdr        []string
		wantStatus int
		wantBody   string // substring
		notBody    string
	}{
		{"forwarded off by default", Options{}, []string{"X-Forwarded-Host", "example.com"}, 404, "", "detour:"},
		{"forwarded off, Forwarded", Options{}, []string{"Forwarded", "host=example.com"}, 404, "", "detour:"},
		{"x-forwarded-host trusted", Options{TrustForwarded: true}, []string{"X-Forwarded-Host", "example.com"}, 200, "tok.", ""},
		{"forwarded trusted", Options{TrustForwarded: true}, []string{"Forwarded", `for=192.0.2.1;host="example.com:80"`}, 200, "tok.", ""},
		{"explained 404", Options{ExplainNotFound: true}, []string{"X-Forwarded-Host", "example.com"}, 404,
			"detour: no challenge for token tok on host proxy.internal (it was presented for example.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Addr = "127.0.0.1:0"
			s := newHTTP01(t, tt.opts)
			ch := challenge(t, solve.HTTP01, "example.com", "tok")
			if err := s.Present(ctx, ch); err != nil {
				t.Fatal(err)
			}
			status, body := get(t, s, "proxy.internal", ch.HTTP01Path(), tt.hdr...)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Errorf("status %d body %q, want %d containing %q", status, body, tt.wantStatus, tt.wantBody)
			}
			if tt.notBody != "" && strings.Contains(body, tt.notBody) {
				t.Errorf("body %q contains %q without ExplainNotFound", body, tt.notBody)
			}
		})
	}
}

func TestHTTP01UnixSocket(t *testing.T) {
	ctx := context.Background()
	sock := filepath.Join(t.TempDir(), "http.sock")
	// A stale socket left by a process that died is replaced.
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()

	s := newHTTP01(t, Options{Addr: "unix:" + sock})
	ch := challenge(t, solve.HTTP01, "example.com", "tok")
	if err := s.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != socketMode {
		t.Errorf("socket mode %v, want a socket with %o", fi.Mode(), socketMode)
	}
	if status, body := get(t, s, "example.com", ch.HTTP01Path()); status != 200 || body != ch.KeyAuthorization {
		t.Errorf("GET over the socket: %d %q", status, body)
	}
	if err := s.CleanUp(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket not removed after the last CleanUp: %v", err)
	}
}

func TestOptionsNameAndBindError(t *testing.T) {
	ctx := context.Background()
	busy := listen(t)
	defer busy.Close()
	custom := errors.New("custom advice")
	tests := []struct {
		name    string
		opts    Options
		wantErr []string
		notErr  string
	}{
		{"unix dir missing", Options{Addr: "unix:" + filepath.Join(t.TempDir(), "no/dir/s.sock")},
			[]string{"does not exist; create it", "for http-01"}, ""},
		{"bind error hook", Options{Addr: busy.Addr().String(), BindError: func(err error) error { return errors.Join(custom, err) }},
			[]string{"custom advice"}, "side-port, webroot"},
		{"name", Options{Addr: busy.Addr().String(), Name: "test-path"},
			[]string{"already listens", "side-port, webroot"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newHTTP01(t, tt.opts)
			err := s.Present(ctx, challenge(t, solve.HTTP01, "example.com", "tok"))
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Present: %v, want %q", err, w)
				}
			}
			if tt.notErr != "" && err != nil && strings.Contains(err.Error(), tt.notErr) {
				t.Errorf("Present: %v, should not contain %q", err, tt.notErr)
			}
			if tt.opts.Name == "" {
				return
			}
			wrong := challenge(t, solve.DNS01, "example.com", "tok")
			if err := s.Present(ctx, wrong); err == nil || !strings.Contains(err.Error(), "http-01 "+tt.opts.Name+" solver") {
				t.Errorf("Present(dns-01): %v, want the solver named %q", err, tt.opts.Name)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Check(ctx, wrong.Identifier); !errors.Is(err, errClosed) || !strings.Contains(err.Error(), tt.opts.Name+" solver is closed") {
				t.Errorf("Check after Close: %v, want %q", err, tt.opts.Name+" solver is closed")
			}
		})
	}
	if err := (&lifecycle{network: "unix", addr: "unix:/x/s.sock", address: "/x/s.sock", typ: solve.HTTP01}).explainBind(syscall.EACCES); !strings.Contains(err.Error(), "may not create files in /x") {
		t.Errorf("unix EACCES: %v", err)
	}
}

func TestSplitAddr(t *testing.T) {
	tests := []struct {
		in, network, address string
		ok                   bool
	}{
		{"127.0.0.1:8402", "tcp", "127.0.0.1:8402", true},
		{":80", "tcp", ":80", true},
		{"unix:/run/detour/../detour/http.sock", "unix", "/run/detour/http.sock", true},
		{"unix:relative.sock", "", "", false},
		{"localhost", "", "", false},
		{"host:", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			n, a, ok := SplitAddr(tt.in)
			if n != tt.network || a != tt.address || ok != tt.ok {
				t.Errorf("SplitAddr(%q) = %q, %q, %v; want %q, %q, %v", tt.in, n, a, ok, tt.network, tt.address, tt.ok)
			}
		})
	}
	if _, err := NewHTTP01(Options{Addr: "unix:rel.sock"}); err == nil || !strings.Contains(err.Error(), "absolute path") {
		t.Errorf("NewHTTP01(unix:rel.sock): %v, want one asking for an absolute path", err)
	}
}
