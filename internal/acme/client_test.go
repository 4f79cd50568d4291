package acme_test

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/acme"
)

// newClient returns a client for dir that reaches srv through srv's own
// HTTP client (which trusts srv's certificate when it is a TLS server).
func newClient(t *testing.T, srv *httptest.Server, dir string, opts acme.Options) *acme.Client {
	t.Helper()
	opts.Directory = dir
	if srv != nil && opts.HTTPClient == nil {
		opts.HTTPClient = srv.Client()
	}
	c, err := acme.New(opts)
	if err != nil {
		t.Fatalf("acme.New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// directoryJSON is a minimal valid ACME directory rooted at base, with meta
// when given.
func directoryJSON(base string, meta map[string]any) []byte {
	d := map[string]any{
		"newNonce":   base + "/nonce",
		"newAccount": base + "/account",
		"newOrder":   base + "/order",
		"revokeCert": base + "/revoke",
		"keyChange":  base + "/key-change",
	}
	if meta != nil {
		d["meta"] = meta
	}
	b, err := json.Marshal(d)
	if err != nil {
		panic(err)
	}
	return b
}

// counter serves h and counts requests.
type counter struct {
	n atomic.Int32
	h http.HandlerFunc
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.n.Add(1)
	c.h(w, r)
}

func serve(t *testing.T, h http.HandlerFunc) (*httptest.Server, *counter) {
	t.Helper()
	c := &counter{h: h}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return srv, c
}

func wantContains(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", subs)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}

func TestNewRejectsBadDirectory(t *testing.T) {
	tests := []struct {
		dir  string
		want string
	}{
		{"", "no ACME directory URL given"},
		{"letsencrypt-staging", "is not an http(s) URL"},
		{"acme-v02.api.letsencrypt.org/directory", "is not an http(s) URL"},
		{"ftp://ca.example/directory", "is not an http(s) URL"},
		{"https://", "is not an http(s) URL"},
		{"https://ca.example/dir ectory\x7f", "is not an http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			c, err := acme.New(acme.Options{Directory: tt.dir})
			if c != nil {
				t.Errorf("New returned a client alongside the error")
			}
			wantContains(t, err, tt.want)
			if tt.dir != "" && !strings.Contains(err.Error(), "https://acme-v02.api.letsencrypt.org/directory") {
				t.Errorf("error %q gives no example URL", err)
			}
		})
	}
	_, err := acme.New(acme.Options{Directory: "https://ca.example/dir", RootsPEM: []byte("not PEM")})
	wantContains(t, err, "root bundle holds no PEM certificate")
}

func TestDirectoryBadAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		ctype    string
		status   int
		body     string
		want     []string
		requests int32 // expected requests to the server
	}{
		{
			name: "malformed JSON", ctype: "application/json", status: 200,
			body: `{"newNonce": "https://ca.example/nonce",`,
			want: []string{"not valid ACME directory JSON", "check the URL"}, requests: 1,
		},
		{
			name: "JSON of the wrong shape", ctype: "application/json", status: 200,
			body: `["newNonce"]`,
			want: []string{"not valid ACME directory JSON"}, requests: 1,
		},
		{
			name: "HTML page", ctype: "text/html; charset=utf-8", status: 200,
			body: "<!DOCTYPE html>\n<html><head><TITLE> Welcome to nginx! </TITLE></head><body>hello</body></html>",
			want: []string{"text/html", `"Welcome to nginx!"`, "check the URL", "/directory"}, requests: 1,
		},
		{
			name: "plain text", ctype: "text/plain", status: 200,
			body: "It works!",
			want: []string{"text/plain", `"It works!"`, "check the URL"}, requests: 1,
		},
		{
			name: "404", ctype: "text/plain", status: 404,
			body: "404 page not found",
			want: []string{"HTTP 404", "404 page not found", "check the URL"}, requests: 1,
		},
		{
			name: "404 HTML", ctype: "text/html", status: 404,
			body: "<html><head><title>404 Not Found</title></head></html>",
			want: []string{"HTTP 404", `titled "404 Not Found"`, "check the URL"}, requests: 1,
		},
		{
			name: "401", ctype: "", status: 401,
			want: []string{"HTTP 401", "check the URL"}, requests: 1,
		},
		{
			name: "lacks newNonce and newOrder", ctype: "application/json", status: 200,
			body: `{"newAccount": "https://ca.example/acct", "meta": {}}`,
			want: []string{"lacks newNonce, newAccount or newOrder", "not an ACME directory", "check the URL"}, requests: 1,
		},
		{
			name: "empty JSON object", ctype: "application/json", status: 200,
			body: `{}`,
			want: []string{"lacks newNonce"}, requests: 1,
		},
		{
			name: "persistent 500", ctype: "text/plain", status: 500,
			body: "internal error",
			want: []string{"HTTP 500", "the CA may be down", "try again later"}, requests: 3,
		},
		{
			name: "persistent 429 without Retry-After", ctype: "text/plain", status: 429,
			body: "too many requests",
			want: []string{"HTTP 429", "limiting requests", "try again later"}, requests: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, n := serve(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.ctype != "" {
					w.Header().Set("Content-Type", tt.ctype)
				}
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			})
			dir := srv.URL + "/directory"
			c := newClient(t, srv, dir, acme.Options{})
			_, err := c.Directory(t.Context())
			wantContains(t, err, append([]string{dir}, tt.want...)...)
			if got := n.n.Load(); got != tt.requests {
				t.Errorf("server saw %d requests, want %d", got, tt.requests)
			}
		})
	}
}

func TestDirectoryLongBodyIsCut(t *testing.T) {
	t.Parallel()
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(strings.Repeat("x", 5000)))
	})
	_, err := newClient(t, srv, srv.URL, acme.Options{}).Directory(t.Context())
	wantContains(t, err, "…")
	if len(err.Error()) > 600 {
		t.Errorf("error quotes %d characters of body; want a short snippet", len(err.Error()))
	}
}

func TestDirectoryRecoversFromOne500(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	var srv *httptest.Server
	srv, n := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, "busy", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(directoryJSON(srv.URL, nil))
	})
	c := newClient(t, srv, srv.URL+"/directory", acme.Options{})
	d, err := c.Directory(t.Context())
	if err != nil {
		t.Fatalf("Directory after one 500: %v", err)
	}
	if d.NewOrder != srv.URL+"/order" {
		t.Errorf("NewOrder = %q", d.NewOrder)
	}
	// The directory is cached: a second call does not ask again.
	if _, err := c.Directory(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := n.n.Load(); got != 2 {
		t.Errorf("server saw %d requests, want 2 (one 500, one answer, then cached)", got)
	}
}

func TestDirectoryUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := "http://" + ln.Addr().String() + "/directory"
	ln.Close()
	c := newClient(t, nil, dir, acme.Options{})
	start := time.Now()
	_, err = c.Directory(t.Context())
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("an unreachable directory took %v to fail; want well under 2s", elapsed)
	}
	wantContains(t, err, dir, "connection refused")
}

func TestDirectoryNoAnswer(t *testing.T) {
	t.Parallel()
	// A server that accepts connections and never says anything.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	dir := "http://" + ln.Addr().String() + "/directory"
	c := newClient(t, nil, dir, acme.Options{RequestTimeout: 200 * time.Millisecond})
	start := time.Now()
	_, err = c.Directory(t.Context())
	elapsed := time.Since(start)
	wantContains(t, err, dir, "no answer in time", "check the URL")
	if elapsed > time.Second {
		t.Errorf("a silent server took %v to fail with a 200ms request timeout; want under a second", elapsed)
	}
	// A timeout is not retried: with the default 30s timeout, three
	// attempts would keep the user waiting for a minute and a half.
	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 1 {
		t.Errorf("the client connected %d times, want 1", len(conns))
	}
}

func TestDirectoryUntrustedTLS(t *testing.T) {
	t.Parallel()
	var srv *httptest.Server
	srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(directoryJSON(srv.URL, nil))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)
	dir := srv.URL + "/directory"

	// System roots only: the test server's certificate is unknown.
	c := newClient(t, nil, dir, acme.Options{})
	_, err := c.Directory(t.Context())
	wantContains(t, err, dir, "root bundle", "--ca-roots")

	// With its root given as RootsPEM, the same server is trusted.
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c = newClient(t, nil, dir, acme.Options{RootsPEM: rootPEM})
	if _, err := c.Directory(t.Context()); err != nil {
		t.Fatalf("Directory with the server's root: %v", err)
	}
}

// TestDirectoryLongRetryAfter checks that the directory's retry meets a
// Retry-After longer than MaxRetryWait and gives up at once; the wait itself
// is timed in TestGateWaitsForRetryAfter.
func TestDirectoryLongRetryAfter(t *testing.T) {
	t.Parallel()
	srv, n := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3600")
		http.Error(w, "rate limited", http.StatusTooManyRequests)
	})
	c := newClient(t, srv, srv.URL+"/directory", acme.Options{MaxRetryWait: time.Second})
	start := time.Now()
	_, err := c.Directory(t.Context())
	var ra *acme.RetryAfterError
	if !errors.As(err, &ra) {
		t.Fatalf("Directory: %v; want a *RetryAfterError", err)
	}
	wantContains(t, err, srv.URL+"/directory", "asked to wait until")
	// One request, then the retry is refused by the gate without waiting
	// beyond the directory's own short back-off.
	if got := n.n.Load(); got != 1 {
		t.Errorf("server saw %d requests, want 1", got)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Directory took %v; want it to give up at once", elapsed)
	}
	if until := c.RetryAfter(); time.Until(until) < 59*time.Minute || !until.Equal(ra.Until) {
		t.Errorf("RetryAfter() = %v, error says %v; want both about an hour from now", until, ra.Until)
	}
}

func TestCheckProfile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		meta    map[string]any
		profile string
		want    []string // nil: accepted
	}{
		{name: "empty name, profiles offered", meta: map[string]any{"profiles": map[string]string{"classic": "x"}}, profile: ""},
		{name: "known", meta: map[string]any{"profiles": map[string]string{"classic": "The usual", "shortlived": "Six days"}}, profile: "shortlived"},
		{
			name: "unknown lists profiles", profile: "tlsserver",
			meta: map[string]any{"profiles": map[string]string{"shortlived": "Six days", "classic": "The usual", "bare": ""}},
			want: []string{`profile "tlsserver" is not offered`, "it offers: bare, classic (The usual), shortlived (Six days)"},
		},
		{name: "case matters", profile: "Classic", meta: map[string]any{"profiles": map[string]string{"classic": ""}}, want: []string{"it offers: classic"}},
		{name: "no meta", profile: "classic", want: []string{"offers no profiles", "remove the profile setting"}},
		{name: "meta without profiles", profile: "classic", meta: map[string]any{"termsOfService": "https://ca.example/tos"}, want: []string{"offers no profiles", "remove the profile setting"}},
		{name: "empty profiles", profile: "classic", meta: map[string]any{"profiles": map[string]string{}}, want: []string{"offers no profiles"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var srv *httptest.Server
			srv, n := serve(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(directoryJSON(srv.URL, tt.meta))
			})
			dir := srv.URL + "/directory"
			c := newClient(t, srv, dir, acme.Options{})
			err := c.CheckProfile(t.Context(), tt.profile)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("CheckProfile(%q): %v", tt.profile, err)
				}
				if tt.profile == "" && n.n.Load() != 0 {
					t.Errorf("CheckProfile(\"\") contacted the CA")
				}
				return
			}
			wantContains(t, err, append([]string{dir}, tt.want...)...)
		})
	}
	t.Run("directory error is passed on", func(t *testing.T) {
		t.Parallel()
		srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
		err := newClient(t, srv, srv.URL+"/dir", acme.Options{}).CheckProfile(t.Context(), "classic")
		wantContains(t, err, "HTTP 404")
	})
}

func TestDirectoryMeta(t *testing.T) {
	t.Parallel()
	var srv *httptest.Server
	srv, _ = serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(directoryJSON(srv.URL, map[string]any{
			"termsOfService":          "https://ca.example/tos",
			"externalAccountRequired": true,
			"profiles":                map[string]string{"classic": "The usual"},
		}))
	})
	c := newClient(t, srv, srv.URL+"/directory", acme.Options{})
	if tos, err := c.TermsOfService(t.Context()); err != nil || tos != "https://ca.example/tos" {
		t.Errorf("TermsOfService = %q, %v", tos, err)
	}
	if eab, err := c.RequiresEAB(t.Context()); err != nil || !eab {
		t.Errorf("RequiresEAB = %v, %v; want true", eab, err)
	}
	if p, err := c.Profiles(t.Context()); err != nil || p["classic"] != "The usual" || len(p) != 1 {
		t.Errorf("Profiles = %v, %v", p, err)
	}
	if got := c.Host(); got != srv.Listener.Addr().String() {
		t.Errorf("Host() = %q, want %q", got, srv.Listener.Addr())
	}
	if got := c.DirectoryURL(); got != srv.URL+"/directory" {
		t.Errorf("DirectoryURL() = %q", got)
	}
}
