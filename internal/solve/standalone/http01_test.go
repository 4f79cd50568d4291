package standalone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/detour-acme/detour/internal/solve"
)

// fetch sends method to http://addr+path with the given Host header and
// returns status, body and Content-Type.
func fetch(t *testing.T, client *http.Client, method, addr, host, path string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s (Host %s): %v", method, path, host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header.Get("Content-Type")
}

func newHTTP01(t *testing.T, opts Options) *HTTP01 {
	t.Helper()
	s, err := NewHTTP01(opts)
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

func TestHTTP01Serve(t *testing.T) {
	ctx := context.Background()
	logs := &syncBuffer{}
	s := newHTTP01(t, Options{
		Addr:   "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	dns := challenge(t, solve.HTTP01, "www.example.com", "tokDNS_-1")
	v4 := challenge(t, solve.HTTP01, "192.0.2.1", "tokV4")
	v6 := challenge(t, solve.HTTP01, "2001:db8::1", "tokV6")
	for _, ch := range []solve.Challenge{dns, v4, v6} {
		if err := s.Present(ctx, ch); err != nil {
			t.Fatalf("Present(%s): %v", ch.Identifier, err)
		}
	}
	addr := s.Addr().String()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer client.CloseIdleConnections()

	tests := []struct {
		name       string
		method     string
		host       string
		path       string
		wantStatus int
		wantBody   string // checked for 200 only
	}{
		{"dns name", "GET", "www.example.com", dns.HTTP01Path(), 200, dns.KeyAuthorization},
		{"dns name with port", "GET", "www.example.com:80", dns.HTTP01Path(), 200, dns.KeyAuthorization},
		{"mixed case and trailing dot", "GET", "WWW.Example.COM.", dns.HTTP01Path(), 200, dns.KeyAuthorization},
		{"ipv4 host", "GET", "192.0.2.1", v4.HTTP01Path(), 200, v4.KeyAuthorization},
		{"ipv4 host with port", "GET", "192.0.2.1:80", v4.HTTP01Path(), 200, v4.KeyAuthorization},
		{"ipv6 host in brackets", "GET", "[2001:db8::1]", v6.HTTP01Path(), 200, v6.KeyAuthorization},
		{"ipv6 host with port", "GET", "[2001:DB8:0::1]:80", v6.HTTP01Path(), 200, v6.KeyAuthorization},
		{"head", "HEAD", "www.example.com", dns.HTTP01Path(), 200, ""},
		{"wrong host", "GET", "other.example.com", dns.HTTP01Path(), 404, ""},
		{"token of another identifier", "GET", "www.example.com", v4.HTTP01Path(), 404, ""},
		{"unknown token", "GET", "www.example.com", "/.well-known/acme-challenge/nope", 404, ""},
		{"token with extra path", "GET", "www.example.com", dns.HTTP01Path() + "/x", 404, ""},
		{"empty token", "GET", "www.example.com", "/.well-known/acme-challenge/", 404, ""},
		{"other path", "GET", "www.example.com", "/", 404, ""},
		{"prefix without slash", "GET", "www.example.com", "/.well-known/acme-challengetokDNS_-1", 404, ""},
		{"post", "POST", "www.example.com", dns.HTTP01Path(), 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, ctype := fetch(t, client, tt.method, addr, tt.host, tt.path)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %q)", status, tt.wantStatus, body)
			}
			if status != 200 {
				if strings.Contains(body, "thumbprint") || strings.Contains(body, "dGh1bWJwcmludA") {
					t.Errorf("non-200 body leaks a key authorization: %q", body)
				}
				return
			}
			if body != tt.wantBody {
				t.Errorf("body = %q, want %q", body, tt.wantBody)
			}
			if ctype != "text/plain" {
				t.Errorf("Content-Type = %q, want text/plain", ctype)
			}
		})
	}

	if got := logs.String(); !strings.Contains(got, "token=tokDNS_-1") || !strings.Contains(got, "host=www.example.com") || !strings.Contains(got, "remote_addr=127.0.0.1:") {
		t.Errorf("debug log lacks the CA request's remote addr, host and token:\n%s", got)
	}
}

func TestHTTP01PresentRejects(t *testing.T) {
	s := newHTTP01(t, Options{Addr: "127.0.0.1:0"})
	good := challenge(t, solve.HTTP01, "example.com", "tok")
	tests := []struct {
		name   string
		modify func(*solve.Challenge)
	}{
		{"empty token", func(c *solve.Challenge) { c.Token = "" }},
		{"path traversal", func(c *solve.Challenge) { c.Token = "../../etc/passwd" }},
		{"slash", func(c *solve.Challenge) { c.Token = "a/b" }},
		{"padding", func(c *solve.Challenge) { c.Token = "abc=" }},
		{"space", func(c *solve.Challenge) { c.Token = "a b" }},
		{"too long", func(c *solve.Challenge) { c.Token = strings.Repeat("a", 257) }},
		{"wrong type", func(c *solve.Challenge) { c.Type = solve.DNS01 }},
		{"empty key authorization", func(c *solve.Challenge) { c.KeyAuthorization = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := good
			tt.modify(&ch)
			if err := s.Present(context.Background(), ch); err == nil {
				t.Fatalf("Present(%+v) succeeded; want an error", ch)
			}
			if s.Addr() != nil {
				t.Errorf("a refused Present left the listener bound on %s", s.Addr())
			}
			if err := s.CleanUp(context.Background(), ch); err != nil {
				t.Errorf("CleanUp after a refused Present = %v; want nil", err)
			}
		})
	}
}

func TestHTTP01Lifecycle(t *testing.T) {
	ctx := context.Background()
	s := newHTTP01(t, Options{Addr: "127.0.0.1:0"})
	if s.Addr() != nil {
		t.Fatalf("bound before any Present: %s", s.Addr())
	}
	a := challenge(t, solve.HTTP01, "a.example.com", "tokA")
	b := challenge(t, solve.HTTP01, "b.example.com", "tokB")
	for _, ch := range []solve.Challenge{a, b, a} { // a twice: counted twice
		if err := s.Present(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	addr := s.Addr().String()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	steps := []struct {
		cleanUp    solve.Challenge
		wantServed bool // a still answered after this CleanUp
		wantBound  bool
	}{
		{a, true, true},
		{a, false, true},
		{a, false, true}, // not presented any more: no effect on the count
		{b, false, false},
	}
	for i, st := range steps {
		t.Run(fmt.Sprintf("cleanup %d %s", i, st.cleanUp.Token), func(t *testing.T) {
			if err := s.CleanUp(ctx, st.cleanUp); err != nil {
				t.Fatal(err)
			}
			if !st.wantBound {
				if s.Addr() != nil {
					t.Errorf("Addr() = %s after the last CleanUp; want nil", s.Addr())
				}
				assertRefused(t, addr)
				return
			}
			status, _, _ := fetch(t, client, "GET", addr, "a.example.com", a.HTTP01Path())
			if got := status == 200; got != st.wantServed {
				t.Errorf("token a served = %v, want %v (status %d)", got, st.wantServed, status)
			}
		})
	}

	// A new Present binds again.
	if err := s.Present(ctx, b); err != nil {
		t.Fatal(err)
	}
	if status, body, _ := fetch(t, client, "GET", s.Addr().String(), "b.example.com", b.HTTP01Path()); status != 200 || body != b.KeyAuthorization {
		t.Errorf("after rebinding: status %d body %q", status, body)
	}
	addr = s.Addr().String()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	assertRefused(t, addr)
	if err := s.Present(ctx, b); !errors.Is(err, errClosed) {
		t.Errorf("Present after Close = %v; want errClosed", err)
	}
}

func TestHTTP01GivenListener(t *testing.T) {
	ctx := context.Background()
	ln := listen(t)
	addr := ln.Addr().String()
	s, err := NewHTTP01(Options{Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	ch := challenge(t, solve.HTTP01, "example.com", "tok")
	for i := range 2 { // served across a whole Present/CleanUp cycle and a second one
		if err := s.Present(ctx, ch); err != nil {
			t.Fatal(err)
		}
		if got := s.Addr().String(); got != addr {
			t.Errorf("Addr() = %s, want the given listener's %s", got, addr)
		}
		if status, body, _ := fetch(t, client, "GET", addr, "example.com", ch.HTTP01Path()); status != 200 || body != ch.KeyAuthorization {
			t.Fatalf("round %d: status %d body %q", i, status, body)
		}
		if err := s.CleanUp(ctx, ch); err != nil {
			t.Fatal(err)
		}
		// The given listener stays open and answers 404 without a challenge.
		if status, _, _ := fetch(t, client, "GET", addr, "example.com", ch.HTTP01Path()); status != 404 {
			t.Fatalf("round %d after CleanUp: status %d, want 404", i, status)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	assertRefused(t, addr)
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v; want nil", err)
	}
}

func TestHTTP01Concurrent(t *testing.T) {
	ctx := context.Background()
	s := newHTTP01(t, Options{Addr: "127.0.0.1:0"})
	// One challenge held throughout keeps the address stable.
	anchor := challenge(t, solve.HTTP01, "anchor.example.com", "anchor")
	if err := s.Present(ctx, anchor); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	client := &http.Client{}
	defer client.CloseIdleConnections()

	const workers = 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		wg.Go(func() {
			ch := challenge(t, solve.HTTP01, fmt.Sprintf("n%d.example.com", i), fmt.Sprintf("tok%d", i))
			for range 5 {
				if err := s.Present(ctx, ch); err != nil {
					errs <- err
					return
				}
				req, _ := http.NewRequest("GET", "http://"+addr+ch.HTTP01Path(), nil)
				req.Host = ch.Identifier.Value
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != ch.KeyAuthorization {
					errs <- fmt.Errorf("%s: status %d body %q", ch.Identifier, resp.StatusCode, body)
					return
				}
				if err := s.CleanUp(ctx, ch); err != nil {
					errs <- err
					return
				}
				if err := s.Check(ctx, ch.Identifier); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := s.CleanUp(ctx, anchor); err != nil {
		t.Fatal(err)
	}
	client.CloseIdleConnections()
	assertRefused(t, addr)

	// Concurrent first Presents and last CleanUps: the count must end at 0.
	var wg2 sync.WaitGroup
	for i := range workers {
		wg2.Go(func() {
			ch := challenge(t, solve.HTTP01, fmt.Sprintf("m%d.example.com", i), fmt.Sprintf("m%d", i))
			for range 5 {
				if err := s.Present(ctx, ch); err != nil {
					t.Error(err)
					return
				}
				if err := s.CleanUp(ctx, ch); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg2.Wait()
	if s.Addr() != nil {
		t.Errorf("still bound on %s after every CleanUp", s.Addr())
	}
}
