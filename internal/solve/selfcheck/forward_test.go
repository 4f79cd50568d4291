package selfcheck

// A tls-alpn-01 forward that exists but sends acme-tls/1 to the wrong
// place: a TCP proxy on the TLS port reads the ClientHello and connects to
// its target, as nginx stream (ssl_preread) and HAProxy in tcp mode do,
// while Detour's responder listens somewhere else.

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mholt/acmez/v3"

	"github.com/detour-acme/detour/internal/snippet"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/standalone"
	"github.com/detour-acme/detour/internal/testenv"
)

// startForward is a TCP forward on 127.0.0.1:0 that sends every connection
// to target after reading the client's first bytes (the ClientHello), and
// closes the client's connection when target does not answer, as nginx
// stream does; reset makes it reset the connection instead. It returns the
// port.
func startForward(t *testing.T, network, target string, reset bool) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				hello := make([]byte, 16<<10)
				n, err := c.Read(hello)
				if err != nil {
					return
				}
				up, err := net.DialTimeout(network, target, 2*time.Second)
				if err != nil {
					if reset {
						_ = c.(*net.TCPConn).SetLinger(0)
					}
					return
				}
				defer up.Close()
				_ = up.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := up.Write(hello[:n]); err != nil {
					return
				}
				done := make(chan struct{})
				go func() { _, _ = io.Copy(up, c); close(done) }()
				_, _ = io.Copy(c, up)
				_ = c.Close()
				<-done
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).Port
}

// startDetour runs Detour's own tls-alpn-01 responder (package standalone,
// as the alpn-forward path does) on ln with ch presented.
func startDetour(t *testing.T, ln net.Listener, ch solve.Challenge) {
	t.Helper()
	s, err := standalone.NewTLSALPN01(standalone.Options{Listener: ln, Name: "alpn-forward"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Present(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
}

// listen binds 127.0.0.1:0.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestTLSALPN01Forward(t *testing.T) {
	resolver := startDNS(t, testZone)
	ch := challenge(t, solve.TLSALPN01, "site.test")
	// Detour answers at detour (its alpn-forward path's listen address);
	// nothing listens at wrong, where the forwards below point.
	detourLn := listen(t)
	startDetour(t, detourLn, ch)
	detour := detourLn.Addr().String()
	wrong := "127.0.0.1:" + strconv.Itoa(closedPort(t))
	sock := filepath.Join(t.TempDir(), "alpn.sock")
	unixLn, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	startDetour(t, unixLn, ch)
	web := "127.0.0.1:" + strconv.Itoa(startTLS(t, &tls.Config{Certificates: []tls.Certificate{webCert(t)}}))
	otherResponder := "127.0.0.1:" + strconv.Itoa(startTLS(t, &tls.Config{NextProtos: []string{acmez.ACMETLS1Protocol},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, errors.New("no challenge") }}))
	tests := []struct {
		name    string
		target  string // where the forward sends acme-tls/1
		reset   bool
		kind    string
		listen  string
		reason  Reason
		want    []string
		notWant []string
	}{
		{
			name: "forward to the wrong port", target: wrong, kind: "alpn-forward", listen: detour, reason: ReasonProtocol,
			want: []string{
				"127.0.0.1:@ accepted the connection for site.test:@ and closed it after the ClientHello offering acme-tls/1, without any TLS answer",
				"that is what a forward on port @ (nginx stream with ssl_preread, HAProxy in tcp mode) does when nothing answers at its acme-tls/1 target",
				"the forward is there, but it sends acme-tls/1 where nothing answers",
				"Detour answers this challenge at " + detour + ", this path's listen address, when connected to directly",
				"make the forward's acme-tls/1 target " + detour,
			},
		},
		{
			name: "forward resets when its target is down", target: wrong, reset: true, kind: "alpn-forward", listen: detour,
			reason: ReasonProtocol, want: []string{"closed it after the ClientHello", "make the forward's acme-tls/1 target " + detour},
		},
		{
			name: "Detour's listen address does not answer either", target: wrong, kind: "alpn-forward", listen: wrong,
			reason: ReasonProtocol,
			want: []string{"closed it after the ClientHello", "and nothing answers at " + wrong + ", this path's listen address, either (connection refused)",
				"check that this Detour runs with this path"},
		},
		{
			name: "Detour on a Unix socket", target: wrong, kind: "alpn-forward", listen: "unix:" + sock,
			reason: ReasonProtocol, want: []string{"Detour answers this challenge at unix:" + sock},
		},
		{
			name: "listen address unknown", target: wrong, reason: ReasonProtocol,
			want: []string{"closed it after the ClientHello",
				"its acme-tls/1 target must be the listen address of Detour's alpn-forward path (its `listen` setting, 127.0.0.1:8403 by default"},
		},
		{
			name: "forward sends acme-tls/1 to the HTTPS server", target: web, kind: "alpn-forward", listen: detour,
			reason: ReasonProtocol,
			want: []string{"did not negotiate acme-tls/1: it answered with a certificate for www.site.test",
				"the acme-tls/1 connection reached a TLS server that is not Detour",
				"Detour answers this challenge at " + detour},
		},
		{
			name: "forward sends acme-tls/1 to a responder without this challenge", target: otherResponder, kind: "alpn-forward", listen: detour,
			reason: ReasonProtocol,
			want: []string{`rejected the acme-tls/1 handshake for SNI "site.test"`,
				"reached a responder that does not hold this challenge", "Detour answers this challenge at " + detour},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := startForward(t, "tcp", tt.target, tt.reset)
			opts := Options{Resolver: resolver, TLSPort: port, Timeout: 2 * time.Second, PathKind: tt.kind, Listen: tt.listen}
			err := TLSALPN01(t.Context(), ch, opts)
			for i := range tt.want {
				tt.want[i] = strings.ReplaceAll(tt.want[i], "@", strconv.Itoa(port))
			}
			wantMismatch(t, err, tt.reason, tt.want...)
			if strings.Contains(err.Error(), "a web server owns port 443") {
				t.Errorf("the forward is there, but the error says a web server owns the port:\n%v", err)
			}
		})
	}
	t.Run("forward to Detour passes", func(t *testing.T) {
		opts := Options{Resolver: resolver, TLSPort: startForward(t, "tcp", detour, false), Timeout: 2 * time.Second}
		if err := TLSALPN01(t.Context(), ch, opts); err != nil {
			t.Fatalf("TLSALPN01 = %v, want nil", err)
		}
	})
}

func TestDialable(t *testing.T) {
	for in, want := range map[string]string{
		":8403":          "127.0.0.1:8403",
		"0.0.0.0:8403":   "127.0.0.1:8403",
		"[::]:8403":      "[::1]:8403",
		"127.0.0.1:8404": "127.0.0.1:8404",
		"[::1]:8404":     "[::1]:8404",
		"alpn.test:8403": "alpn.test:8403",
	} {
		if got := dialable(in); got != want {
			t.Errorf("dialable(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestTLSALPN01ForwardRealServers puts the rule `detour snippet tls-alpn`
// prints into real nginx (stream, ssl_preread) and HAProxy, pointed at the
// wrong port, with Detour listening on another.
func TestTLSALPN01ForwardRealServers(t *testing.T) {
	resolver := startDNS(t, testZone)
	ch := challenge(t, solve.TLSALPN01, "site.test")
	for _, server := range []string{snippet.Nginx, snippet.HAProxy} {
		t.Run(server, func(t *testing.T) {
			detourLn := listen(t)
			startDetour(t, detourLn, ch)
			detour := detourLn.Addr().String()
			wrong := "127.0.0.1:" + strconv.Itoa(testenv.StaticPort(t)) // the forward's target: nothing there
			https := "127.0.0.1:" + strconv.Itoa(startTLS(t, &tls.Config{Certificates: []tls.Certificate{webCert(t)}}))
			rule, err := snippet.TLSALPNForward(server, wrong)
			if err != nil {
				t.Fatal(err)
			}
			port := testenv.StaticPort(t)
			front := "127.0.0.1:" + strconv.Itoa(port)
			rule = strings.ReplaceAll(rule, snippet.HTTPSPlaceholder, https)
			// The test's edits of the printed rule: a test port for 443.
			edit := func(old, new string) {
				if !strings.Contains(rule, old) {
					t.Fatalf("the %s rule no longer contains %q; update this test's edits:\n%s", server, old, rule)
				}
				rule = strings.Replace(rule, old, new, 1)
			}
			dir := testenv.WorldReadableDir(t)
			var srv *testenv.Server
			switch server {
			case snippet.Nginx:
				const module = "/usr/lib/nginx/modules/ngx_stream_module.so"
				testenv.RequireFile(t, module, "libnginx-mod-stream")
				edit("listen 443;", "listen "+front+";")
				edit("listen [::]:443;", "")
				srv = testenv.StartNginx(t, dir, "load_module "+module+";\nworker_processes 1;\nevents { worker_connections 64; }\n"+rule,
					map[string]any{}, front)
			case snippet.HAProxy:
				edit("bind :443", "bind "+front)
				conf := "global\n    log stderr format raw local0 warning\ndefaults\n    log global\n    retries 0\n" +
					"    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n" + rule
				srv = testenv.StartHAProxy(t, dir, conf, map[string]any{}, front)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			opts := Options{Resolver: resolver, TLSPort: port, Timeout: 5 * time.Second, PathKind: "alpn-forward", Listen: detour}
			err = TLSALPN01(ctx, ch, opts)
			var me *MismatchError
			if !errors.As(err, &me) {
				t.Fatalf("TLSALPN01 = %v, want a MismatchError\n%s", err, srv.Output())
			}
			wantMismatch(t, err, ReasonProtocol,
				"accepted the connection for site.test:"+strconv.Itoa(port)+" and closed it after the ClientHello offering acme-tls/1",
				"the forward is there, but it sends acme-tls/1 where nothing answers",
				"Detour answers this challenge at "+detour+", this path's listen address, when connected to directly",
				"make the forward's acme-tls/1 target "+detour)
			if t.Failed() {
				t.Log(srv.Output())
			}
		})
	}
}

// TestFuncPassesListen: the listen address a Hint gives reaches the
// hints, here the side port's 502.
func TestFuncPassesListen(t *testing.T) {
	resolver := startDNS(t, testZone)
	check := Func(Options{Resolver: resolver, HTTPPort: startHTTP(t, answer(502, "", "nginx")), Timeout: 2 * time.Second},
		func(name string) (Hint, bool) {
			return Hint{Kind: "side-port", Listen: "127.0.0.1:8402"}, name == "side"
		})
	err := check(t.Context(), solve.Path{Name: "side"}, challenge(t, solve.HTTP01, "site.test"))
	wantMismatch(t, err, ReasonStatus, "answered 502",
		"check that Detour's side port (this path listens on 127.0.0.1:8402) is listening and that the forward's target matches it")
}
