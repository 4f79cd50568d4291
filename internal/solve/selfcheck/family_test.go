package selfcheck

// IPv6 and IPv4 as Let's Encrypt's validation authority treats them: the
// AAAA address first, IPv4 only after a failed dial (http-01) or a handshake
// that did not complete (tls-alpn-01), never after an answer. Servers listen
// on the same port of [::1] and 127.0.0.1, as one host's IPv6 and IPv4
// addresses do, and v6.test resolves to both.

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mholt/acmez/v3"

	"github.com/detour-acme/detour/internal/solve"
)

// needIPv6 skips the test on a machine without ::1 (the only reason an
// IPv6 test may skip).
func needIPv6(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("this machine has no ::1: %v", err)
	}
	ln.Close()
}

// dualListen binds the same free port on 127.0.0.1 and [::1].
func dualListen(t *testing.T) (ln4, ln6 net.Listener, port int) {
	t.Helper()
	needIPv6(t)
	for range 50 {
		ln4, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln4.Addr().(*net.TCPAddr).Port
		ln6, err := net.Listen("tcp", net.JoinHostPort("::1", strconv.Itoa(port)))
		if err != nil {
			ln4.Close() // taken on ::1: try another port
			continue
		}
		t.Cleanup(func() { ln4.Close(); ln6.Close() })
		return ln4, ln6, port
	}
	t.Fatal("no port free on both 127.0.0.1 and ::1")
	return nil, nil, 0
}

// serveHTTP serves h on ln until the test ends.
func serveHTTP(t *testing.T, ln net.Listener, h http.Handler) {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.Listener.Close()
	s.Listener = ln
	s.Start()
	t.Cleanup(s.Close)
}

// serveReset accepts connections on ln, reads what the client sends first
// (a request, a ClientHello) and resets the connection (RST, SO_LINGER 0).
func serveReset(t *testing.T, ln net.Listener) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = c.Read(make([]byte, 4096))
				_ = c.(*net.TCPConn).SetLinger(0)
				_ = c.Close()
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// counting counts the requests h serves.
func counting(n *atomic.Int32, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	})
}

func TestHTTP01AddressFamilies(t *testing.T) {
	resolver := startDNS(t, testZone)
	good := answer(200, testKA, "")
	tests := []struct {
		name   string
		six    func(t *testing.T, ln net.Listener) // serves [::1]
		four   http.Handler                        // on 127.0.0.1
		opts   Options
		reason Reason // "" means the check passes
		want   []string
		not    []string
	}{
		{
			name: "IPv6 answers 404 where IPv4 serves the token (webroot)",
			six:  func(t *testing.T, ln net.Listener) { serveHTTP(t, ln, answer(404, "not found", "nginx/1.22.1")) },
			four: good, opts: Options{PathKind: "webroot", Root: "/srv/www"},
			reason: ReasonFamily,
			want: []string{
				"v6.test answers differently over IPv6 and IPv4: over IPv6 (AAAA record ::1), nginx/1.22.1 at [::1]:@ answered 404 for http://v6.test/.well-known/acme-challenge/evaGxfAD…",
				"over IPv4 (A record 127.0.0.1), 127.0.0.1:@ serves the key authorization",
				"the CA tries the IPv6 address first and falls back to IPv4 only when no connection can be made, never after an answer",
				"so it will get this answer and the validation will fail",
				"make the server listening on [::1]:@ serve v6.test as the one on 127.0.0.1:@ does",
				"`listen [::]:@;`",
				"or correct the AAAA record of v6.test, or remove it if this host does not serve v6.test over IPv6",
			},
			not: []string{"set root to the document root"},
		},
		{
			name: "IPv6 answers another body where IPv4 serves the token",
			six:  func(t *testing.T, ln net.Listener) { serveHTTP(t, ln, answer(200, "otherToken.otherThumbprint", "")) },
			four: good, reason: ReasonFamily,
			want: []string{"over IPv6 (AAAA record ::1), the server at [::1]:@ (no Server header) answered 200",
				`with the body "otherToken.otherThumbprint" instead of the key authorization`,
				"127.0.0.1:@ serves the key authorization", "never after an answer"},
		},
		{
			name: "IPv6 accepts and never answers",
			six:  serveSilent, four: good, reason: ReasonFamily,
			want: []string{"over IPv6 (AAAA record ::1), [::1]:@ accepted the connection",
				"falls back to IPv4 only when no connection can be made, and [::1]:@ accepted the connection, so it will get this failure",
				"127.0.0.1:@ serves the key authorization"},
		},
		{
			name: "IPv6 resets the connection after the request",
			six:  serveReset, four: good, reason: ReasonFamily,
			want: []string{"connection reset", "[::1]:@ accepted the connection, so it will get this failure", "127.0.0.1:@ serves the key authorization"},
		},
		{
			name: "IPv6 serves the token, IPv4 answers 404",
			six:  func(t *testing.T, ln net.Listener) { serveHTTP(t, ln, good) },
			four: answer(404, "", "nginx"),
		},
		{
			name: "both answer the same 404",
			six:  func(t *testing.T, ln net.Listener) { serveHTTP(t, ln, answer(404, "nope", "nginx")) },
			four: answer(404, "nope", "nginx"), reason: ReasonStatus,
			want: []string{"nginx at [::1]:@ answered 404", "the forward to Detour is missing"},
			not:  []string{"IPv4", "answers differently"},
		},
		{
			name: "both fail, differently",
			six:  func(t *testing.T, ln net.Listener) { serveHTTP(t, ln, answer(404, "", "nginx")) },
			four: answer(200, "<html>welcome</html>", "Apache"), reason: ReasonStatus,
			want: []string{"nginx at [::1]:@ answered 404", "; over IPv4 (A record 127.0.0.1) the answer differs: Apache at 127.0.0.1:@ answered 200",
				"IPv6 and IPv4 answer differently and the CA uses the IPv6 answer", "fix the server on [::1]:@ first"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln4, ln6, port := dualListen(t)
			var hits4 atomic.Int32
			serveHTTP(t, ln4, counting(&hits4, tt.four))
			tt.six(t, ln6)
			opts := tt.opts
			opts.Resolver, opts.HTTPPort, opts.TLSPort, opts.Timeout = resolver, port, closedPort(t), 500*time.Millisecond
			err := HTTP01(t.Context(), challenge(t, solve.HTTP01, "v6.test"), opts)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("HTTP01 = %v, want nil", err)
				}
				if n := hits4.Load(); n != 0 {
					t.Errorf("IPv4 was fetched %d times after IPv6 passed; the CA does not fetch it", n)
				}
				return
			}
			p := strconv.Itoa(port)
			for i := range tt.want {
				tt.want[i] = strings.ReplaceAll(tt.want[i], "@", p)
			}
			me := wantMismatch(t, err, tt.reason, tt.want...)
			for _, n := range tt.not {
				if strings.Contains(err.Error(), n) {
					t.Errorf("error contains %q:\n%v", n, err)
				}
			}
			if want := netip.AddrPortFrom(v6, uint16(port)); me.Addr != want {
				t.Errorf("Addr = %v, want %v (the address the CA will use)", me.Addr, want)
			}
		})
	}
}

// TestHTTP01RedirectTargetNoFallback: Boulder falls back to IPv4 for the
// challenge URL only; a redirect's target is connected to at its IPv6
// address alone.
func TestHTTP01RedirectTargetNoFallback(t *testing.T) {
	needIPv6(t)
	resolver := startDNS(t, testZone)
	opts := Options{
		Resolver: resolver, Timeout: 2 * time.Second,
		HTTPPort: startHTTP(t, redirects(map[string]string{challengePath: "https://v6.test/final"}, "")),
		// 127.0.0.1 serves the answer over https; nothing listens on [::1]
		// at that port.
		TLSPort: startHTTPS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, testKA) })),
	}
	err := HTTP01(t.Context(), challenge(t, solve.HTTP01, "site.test"), opts)
	p := strconv.Itoa(opts.TLSPort)
	wantMismatch(t, err, ReasonFamily,
		"over IPv6 (AAAA record ::1), connection to [::1]:"+p+" refused for https://v6.test/final",
		"over IPv4 (A record 127.0.0.1), 127.0.0.1:"+p+" serves the key authorization",
		"(redirected from http://site.test/.well-known/acme-challenge/evaGxfAD…)",
		"when following a redirect the CA connects to the IPv6 address only (it falls back to IPv4 only for the challenge URL itself)",
		"make a server listen on [::1]:"+p+" and answer for v6.test", "`listen [::]:"+p+" ssl;`")
}

func TestTLSALPN01AddressFamilies(t *testing.T) {
	resolver := startDNS(t, testZone)
	alpn := []string{acmez.ACMETLS1Protocol}
	good := &tls.Config{Certificates: []tls.Certificate{challengeCert(t, "dns", "v6.test", testKA)}, NextProtos: alpn}
	tests := []struct {
		name   string
		six    func(t *testing.T, ln net.Listener)
		reason Reason // "" means the check passes (and IPv6 failing is logged)
		want   []string
	}{
		{
			name: "IPv6 completes the handshake with a web certificate",
			six: func(t *testing.T, ln net.Listener) {
				serveTLS(t, ln, &tls.Config{Certificates: []tls.Certificate{webCert(t)}})
			},
			reason: ReasonFamily,
			want: []string{
				"v6.test answers differently over IPv6 and IPv4: over IPv6 (AAAA record ::1), the server on v6.test:@ ([::1]:@) did not negotiate acme-tls/1",
				"over IPv4 (A record 127.0.0.1), 127.0.0.1:@ answers with the right acme-tls/1 certificate",
				"falls back to IPv4 only when the TLS handshake does not complete, never after a completed one, so it will get this certificate",
				"make the server listening on [::1]:@ answer acme-tls/1 for v6.test as the one on 127.0.0.1:@ does",
				"`listen [::]:@;`", "or correct the AAAA record of v6.test, or remove it",
			},
		},
		{
			name: "IPv6 proves another key authorization",
			six: func(t *testing.T, ln net.Listener) {
				serveTLS(t, ln, &tls.Config{Certificates: []tls.Certificate{challengeCert(t, "dns", "v6.test", "old."+testThumb)}, NextProtos: alpn})
			},
			reason: ReasonFamily,
			want:   []string{"proves another key authorization", "127.0.0.1:@ answers with the right acme-tls/1 certificate"},
		},
		{
			name: "IPv6 refuses acme-tls/1 with an alert: the CA falls back",
			six: func(t *testing.T, ln net.Listener) {
				serveTLS(t, ln, &tls.Config{Certificates: []tls.Certificate{webCert(t)}, NextProtos: []string{"h2"}})
			},
		},
		{name: "IPv6 resets during the handshake: the CA falls back", six: serveReset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln4, ln6, port := dualListen(t)
			serveTLS(t, ln4, good)
			tt.six(t, ln6)
			var logs bytes.Buffer
			opts := Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Resolver: resolver, TLSPort: port, Timeout: 2 * time.Second}
			err := TLSALPN01(t.Context(), challenge(t, solve.TLSALPN01, "v6.test"), opts)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("TLSALPN01 = %v, want nil (the CA falls back to IPv4 when the handshake does not complete)", err)
				}
				if !strings.Contains(logs.String(), "IPv6 address failed") {
					t.Errorf("log does not report the IPv6 failure:\n%s", logs.String())
				}
				return
			}
			p := strconv.Itoa(port)
			for i := range tt.want {
				tt.want[i] = strings.ReplaceAll(tt.want[i], "@", p)
			}
			wantMismatch(t, err, tt.reason, tt.want...)
		})
	}
}

// TestNotConnected pins the http-01 fallback rule: only an error from
// before the connection was made lets the CA try IPv4.
func TestNotConnected(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	read := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{dial, true},
		{&connectedError{read}, false},
		{&connectedError{errors.New("timeout awaiting response headers")}, false},
	} {
		if got := notConnected(tt.err); got != tt.want {
			t.Errorf("notConnected(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
