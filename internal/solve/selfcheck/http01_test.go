package selfcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ident"

	"github.com/detour-acme/detour/internal/solve"
)

const challengePath = "/.well-known/acme-challenge/" + testToken

// answer returns a handler that answers the challenge path with status,
// body and Server header, and 404 elsewhere.
func answer(status int, body, server string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if server != "" {
			w.Header().Set("Server", server)
		}
		if r.URL.Path != challengePath {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	})
}

// redirects returns a handler that redirects each path in m to its value
// and answers the key authorization on final.
func redirects(m map[string]string, final string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if loc, ok := m[r.URL.Path]; ok {
			w.Header().Set("Location", loc)
			w.WriteHeader(http.StatusFound)
			return
		}
		if r.URL.Path == final {
			fmt.Fprint(w, testKA)
			return
		}
		http.NotFound(w, r)
	})
}

// redirectChain redirects the challenge path to /r/1, /r/n to /r/n+1 while
// n < total, and answers on /r/total: total redirects in all.
func redirectChain(total int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next := 1
		if r.URL.Path != challengePath {
			n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/r/"))
			if err != nil {
				http.NotFound(w, r)
				return
			}
			if n >= total {
				fmt.Fprint(w, testKA)
				return
			}
			next = n + 1
		}
		http.Redirect(w, r, "/r/"+strconv.Itoa(next), http.StatusMovedPermanently)
	})
}

func TestHTTP01(t *testing.T) {
	resolver := startDNS(t, testZone)
	tests := []struct {
		name    string
		id      string       // default site.test
		handler http.Handler // on HTTPPort
		https   http.Handler // on TLSPort, optional
		reason  Reason       // "" means the check passes
		want    []string
	}{
		{name: "correct body", handler: answer(200, testKA, "")},
		{name: "trailing newline ignored", handler: answer(200, testKA+"\r\n", "")},
		{name: "IP identifier", id: "127.0.0.1", handler: answer(200, testKA, "")},
		{
			name: "leading space is not ignored", handler: answer(200, " "+testKA, ""),
			reason: ReasonBody, want: []string{"preceded by whitespace"},
		},
		{
			name: "nginx 404", handler: answer(404, "not found", "nginx/1.22.1"), reason: ReasonStatus,
			want: []string{"nginx/1.22.1 at 127.0.0.1:", "answered 404 for http://site.test/.well-known/acme-challenge/evaGxfAD…",
				"the forward to Detour is missing", "`detour snippet http --server nginx`", "webroot"},
		},
		{
			name: "404 without Server header", handler: answer(404, "", ""), reason: ReasonStatus,
			want: []string{"(no Server header) answered 404", "`detour snippet http`"},
		},
		{
			name: "apache 403", handler: answer(403, "", "Apache/2.4.57 (Debian)"), reason: ReasonStatus,
			want: []string{"Apache/2.4.57 (Debian) at", "refuses", "--server apache"},
		},
		{
			name: "502 from the forward", handler: answer(502, "", "nginx"), reason: ReasonStatus,
			want: []string{"side port"},
		},
		{
			name: "500", handler: answer(500, "", "nginx"), reason: ReasonStatus, want: []string{"error log"},
		},
		{
			name: "300 without Location", handler: answer(300, "", ""), reason: ReasonStatus,
			want: []string{"301, 302, 303, 307 and 308 with a Location header"},
		},
		{
			name: "empty body", handler: answer(200, "", ""), reason: ReasonBody,
			want: []string{"with an empty body instead", "answers nothing"},
		},
		{
			name: "long body", handler: answer(200, testKA+strings.Repeat(" x", 1000), ""), reason: ReasonBody,
			want: []string{"(over 1024 bytes)", "another ACME client or a stale stateless block"},
		},
		{
			name: "stale stateless thumbprint", handler: answer(200, testToken+".OLDthumbprintOLDthumbprintOLDthumbprintOLD1", "nginx"),
			reason: ReasonBody,
			want: []string{"answered 200", "instead of the key authorization", "thumbprint OLDthumbprint",
				"this account's is " + testThumb, "`detour snippet stateless`"},
		},
		{
			name: "another ACME client", handler: answer(200, "someOtherToken.someOtherThumbprint", ""),
			reason: ReasonBody, want: []string{"another ACME client", "`detour snippet stateless`"},
		},
		{
			name: "cached older token", handler: answer(200, "olderToken."+testThumb, ""),
			reason: ReasonBody, want: []string{"older challenge", "caching"},
		},
		{
			name: "catch-all page", handler: answer(200, "<!doctype html><html>welcome</html>", "caddy"),
			reason: ReasonBody, want: []string{`"<!doctype html>`, "catch-all", "--server caddy"},
		},
		{
			name: "redirect chain through https", handler: redirects(map[string]string{
				challengePath: "http://other.test/step",
				"/step":       "https://site.test/final",
			}, ""),
			https: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/final" || r.Host != "site.test" || r.TLS == nil {
					http.Error(w, "unexpected "+r.Host+r.URL.Path, http.StatusBadRequest)
					return
				}
				fmt.Fprint(w, testKA)
			}),
		},
		{name: "relative redirect", handler: redirects(map[string]string{challengePath: "/elsewhere"}, "/elsewhere")},
		{name: "explicit port 80 redirect", handler: redirects(map[string]string{challengePath: "http://other.test:80/x"}, "/x")},
		{name: "ten redirects", handler: redirectChain(10)},
		{
			name: "eleven redirects", handler: redirectChain(11), reason: ReasonRedirect,
			want: []string{"redirect number 11", "Location: /r/11", "at most 10 redirects", "(redirected from http://site.test/.well-known/acme-challenge/evaGxfAD… -> http://site.test/r/1 ->"},
		},
		{
			name: "redirect to port 8080", handler: redirects(map[string]string{challengePath: "http://site.test:8080/x"}, ""),
			reason: ReasonRedirect,
			want:   []string{"a redirect to port 8080", "Location: http://site.test:8080/x", "public CAs only follow redirects to ports 80 and 443"},
		},
		{
			name: "redirect loop", handler: redirects(map[string]string{challengePath: "/a", "/a": "/b", "/b": "/a"}, ""),
			reason: ReasonRedirect, want: []string{"redirect loop back to http://site.test/a", "Location: /a"},
		},
		{
			name: "redirect to ftp", handler: redirects(map[string]string{challengePath: "ftp://site.test/x"}, ""),
			reason: ReasonRedirect, want: []string{`a redirect to a URL with scheme "ftp"`, "Location: ftp://site.test/x", "http:// and https://"},
		},
		{
			name: "redirect to an IP address", handler: redirects(map[string]string{challengePath: "http://127.0.0.1/x"}, "/x"),
			reason: ReasonRedirect, want: []string{"the IP address 127.0.0.1", "not IP addresses"},
		},
		{
			name: "redirect to a name that does not resolve", handler: redirects(map[string]string{challengePath: "http://nowhere.test/x"}, ""),
			reason: ReasonDNS, want: []string{"nowhere.test does not resolve", "(redirected from http://site.test/"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{Resolver: resolver, HTTPPort: startHTTP(t, tt.handler), TLSPort: closedPort(t), Timeout: 2 * time.Second}
			if tt.https != nil {
				opts.TLSPort = startHTTPS(t, tt.https)
			}
			id := tt.id
			if id == "" {
				id = "site.test"
			}
			err := HTTP01(t.Context(), challenge(t, solve.HTTP01, id), opts)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("HTTP01 = %v, want nil", err)
				}
				return
			}
			wantMismatch(t, err, tt.reason, tt.want...)
		})
	}
}

func TestHTTP01Connection(t *testing.T) {
	resolver := startDNS(t, testZone)
	t.Run("IPv6 fails, IPv4 answers", func(t *testing.T) {
		var logs bytes.Buffer
		opts := Options{
			Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
			Resolver: resolver, HTTPPort: startHTTP(t, answer(200, testKA, "")), Timeout: 2 * time.Second,
		}
		if err := HTTP01(t.Context(), challenge(t, solve.HTTP01, "v6.test"), opts); err != nil {
			t.Fatalf("HTTP01 = %v, want nil", err)
		}
		if !strings.Contains(logs.String(), "IPv6 address failed") || !strings.Contains(logs.String(), "[::1]:") {
			t.Errorf("log does not report the IPv6 failure:\n%s", logs.String())
		}
	})
	t.Run("both fail", func(t *testing.T) {
		opts := Options{Resolver: resolver, HTTPPort: closedPort(t), Timeout: 2 * time.Second}
		err := HTTP01(t.Context(), challenge(t, solve.HTTP01, "v6.test"), opts)
		me := wantMismatch(t, err, ReasonRefused, "connection to 127.0.0.1:", "tried first: [::1]:")
		if len(me.Attempts) != 2 || !me.Attempts[0].Addr.Addr().Is6() || !me.Attempts[1].Addr.Addr().Is4() {
			t.Errorf("Attempts = %v, want IPv6 then IPv4", me.Attempts)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		opts := Options{Resolver: resolver, HTTPPort: closedPort(t), Timeout: 2 * time.Second}
		err := HTTP01(t.Context(), challenge(t, solve.HTTP01, "site.test"), opts)
		wantMismatch(t, err, ReasonRefused, "refused for http://site.test/", "nothing listens on port 80",
			"firewall window", "self_check = false")
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("errors.Is(%v, ECONNREFUSED) = false, want the cause unwrapped", err)
		}
	})
	t.Run("accepts and never answers", func(t *testing.T) {
		opts := Options{Resolver: resolver, HTTPPort: startSilent(t), Timeout: 200 * time.Millisecond}
		start := time.Now()
		err := HTTP01(t.Context(), challenge(t, solve.HTTP01, "site.test"), opts)
		wantMismatch(t, err, ReasonTimeout, "sent no answer within 200ms", "firewall", "self_check = false")
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v, want about the 200ms timeout", d)
		}
	})
	t.Run("name does not resolve", func(t *testing.T) {
		opts := Options{Resolver: resolver, HTTPPort: closedPort(t), Timeout: 2 * time.Second}
		err := HTTP01(t.Context(), challenge(t, solve.HTTP01, "nowhere.test"), opts)
		wantMismatch(t, err, ReasonDNS, "nowhere.test does not resolve", "create an A or AAAA record")
	})
	t.Run("HTTP_PROXY ignored", func(t *testing.T) {
		t.Setenv("HTTP_PROXY", fmt.Sprintf("http://127.0.0.1:%d", closedPort(t)))
		t.Setenv("http_proxy", fmt.Sprintf("http://127.0.0.1:%d", closedPort(t)))
		opts := Options{Resolver: resolver, HTTPPort: startHTTP(t, answer(200, testKA, "")), Timeout: 2 * time.Second}
		if err := HTTP01(t.Context(), challenge(t, solve.HTTP01, "site.test"), opts); err != nil {
			t.Fatalf("HTTP01 = %v, want nil", err)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		opts := Options{Resolver: resolver, HTTPPort: startHTTP(t, answer(200, testKA, "")), Timeout: 2 * time.Second}
		err := HTTP01(ctx, challenge(t, solve.HTTP01, "site.test"), opts)
		var me *MismatchError
		if !errors.Is(err, context.Canceled) || errors.As(err, &me) {
			t.Fatalf("HTTP01 = %v, want context.Canceled and no MismatchError", err)
		}
	})
}

func TestInvalidInput(t *testing.T) {
	good := challenge(t, solve.HTTP01, "site.test")
	wild := challenge(t, solve.HTTP01, "*.site.test")
	badToken := good
	badToken.Token = "../etc/passwd"
	wrongType := good
	wrongType.Type = solve.DNS01
	noKA := challenge(t, solve.TLSALPN01, "site.test")
	noKA.KeyAuthorization = ""
	wildTLS := challenge(t, solve.TLSALPN01, "*.site.test")
	tests := []struct {
		name  string
		check func(context.Context, solve.Challenge, Options) error
		ch    solve.Challenge
		opts  Options
		want  string
	}{
		{"wildcard http-01", HTTP01, wild, Options{}, "wildcard"},
		{"wildcard tls-alpn-01", TLSALPN01, wildTLS, Options{}, "wildcard"},
		{"bad token", HTTP01, badToken, Options{}, "invalid token"},
		{"wrong challenge type", HTTP01, wrongType, Options{}, "selfcheck.For"},
		{"no key authorization", TLSALPN01, noKA, Options{}, "no key authorization"},
		{"bad port", HTTP01, good, Options{HTTPPort: 70000}, "invalid self-check port 70000"},
		{"negative timeout", HTTP01, good, Options{Timeout: -time.Second}, "invalid self-check timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.check(t.Context(), tt.ch, tt.opts)
			var me *MismatchError
			if err == nil || errors.As(err, &me) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want a plain error containing %q", err, tt.want)
			}
		})
	}
	if err := HTTP01(t.Context(), wild, Options{}); !errors.Is(err, solve.ErrNotApplicable) {
		t.Errorf("wildcard error = %v, want solve.ErrNotApplicable", err)
	}
}

func TestFor(t *testing.T) {
	ptr := func(f func(context.Context, solve.Challenge, Options) error) uintptr {
		return reflect.ValueOf(f).Pointer()
	}
	if f := For(solve.HTTP01); f == nil || ptr(f) != ptr(HTTP01) {
		t.Error("For(http-01) is not HTTP01")
	}
	if f := For(solve.TLSALPN01); f == nil || ptr(f) != ptr(TLSALPN01) {
		t.Error("For(tls-alpn-01) is not TLSALPN01")
	}
	for _, typ := range []string{solve.DNS01, "dns-persist-01", ""} {
		if For(typ) != nil {
			t.Errorf("For(%q) != nil", typ)
		}
	}
}

func TestMismatchErrorLogValue(t *testing.T) {
	resolver := startDNS(t, testZone)
	opts := Options{Resolver: resolver, HTTPPort: startHTTP(t, answer(404, "gone", "nginx/1.22.1")), Timeout: 2 * time.Second}
	err := HTTP01(t.Context(), challenge(t, solve.HTTP01, "site.test"), opts)
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("self-check failed", "error", err)
	for _, w := range []string{"error.reason=status", "error.status=404", `error.server=nginx/1.22.1`, "error.body=gone", "error.identifier=site.test"} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("log line lacks %q:\n%s", w, logs.String())
		}
	}
}

func TestReverseName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.1", "1.0.0.127.in-addr.arpa"},
		{"192.0.2.10", "10.2.0.192.in-addr.arpa"},
		{"::ffff:192.0.2.10", "10.2.0.192.in-addr.arpa"},
		{"2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ip, err := netip.ParseAddr(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := reverseName(ip); got != tt.want {
				t.Errorf("reverseName(%s) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestHintFollowsPathKind(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "nginx/1.22.1")
		http.NotFound(w, r)
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	ch := solve.Challenge{Type: solve.HTTP01, Identifier: ident.Identifier{Type: ident.TypeIP, Value: "127.0.0.1"},
		Token: "tok_abc", KeyAuthorization: "tok_abc.thumb"}
	for kind, want := range map[string]string{
		"webroot":   "set root to the document root",
		"stateless": "`detour snippet stateless --server nginx`",
		"side-port": "the forward to Detour is missing",
		"exec":      "the auth hook ran, but 127.0.0.1 does not serve what it published",
		"":          "the forward to Detour is missing",
	} {
		err := HTTP01(context.Background(), ch, Options{HTTPPort: port, PathKind: kind, Root: "/srv/www"})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("kind %q: %v, want %q", kind, err, want)
		}
	}
}
