package snippet

// End-to-end tests: each nginx, Apache and HAProxy snippet is put into a
// complete configuration, checked by the server itself and served by the
// real server on 127.0.0.1.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/sideport"
)

const testThumbprint = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"

// get sends GET http://addr+path with Host host and returns status and body,
// without following redirects.
func get(t *testing.T, addr, host, path string) (int, string) {
	t.Helper()
	client := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{DisableKeepAlives: true},
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", path, host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// runWith puts snip into a complete configuration for server, listening on
// listen, and starts the server. Each configuration also redirects
// everything else to HTTPS, the way the snippet's comment says to.
func runWith(t *testing.T, server, snip, listen string) *server {
	t.Helper()
	dir := t.TempDir()
	switch server {
	case Nginx:
		return runNginx(t, dir, nginxConf(dir, "", listen, indent(snip, 8)), listen)
	case Apache:
		return runApache(t, dir, apacheConf(dir, listen, indent(snip, 4)), listen)
	case HAProxy:
		front, back, _ := strings.Cut(snip, "\nbackend ")
		redirect := "    http-request redirect scheme https code 301"
		if back != "" {
			redirect += " unless is_detour_acme" // as the snippet's comment says
			back = "backend " + back
		}
		conf := haproxyConf("frontend web\n    bind " + listen + "\n" + front + "\n" + redirect + "\n\n" + back)
		return runHAProxy(t, dir, conf, listen)
	}
	t.Fatalf("no real test for %s", server)
	return nil
}

func TestStatelessRealServers(t *testing.T) {
	const token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	for _, server := range StatelessServers() {
		t.Run(server, func(t *testing.T) {
			snip, err := Stateless(server, testThumbprint)
			if err != nil {
				t.Fatal(err)
			}
			listen := hostPort(freePort(t))
			srv := runWith(t, server, snip, listen)

			status, body := get(t, listen, "example.com", "/.well-known/acme-challenge/"+token)
			if status != http.StatusOK || body != token+"."+testThumbprint {
				t.Errorf("challenge: got %d %q, want 200 %q\n%s", status, body, token+"."+testThumbprint, srv.logText())
			}
			// Another token gets its own answer.
			status, body = get(t, listen, "www.example.com", "/.well-known/acme-challenge/x_-9")
			if status != http.StatusOK || body != "x_-9."+testThumbprint {
				t.Errorf("second token: got %d %q", status, body)
			}
			// The redirect to HTTPS still applies to everything else,
			// including paths that are not tokens.
			for _, p := range []string{"/", "/index.html", "/.well-known/acme-challenge/not.a.token", "/.well-known/acme-challenge/"} {
				if status, body := get(t, listen, "example.com", p); status == http.StatusOK {
					t.Errorf("GET %s: got 200 %q, want the redirect or an error", p, body)
				}
			}
		})
	}
}

func TestHTTPForwardRealServers(t *testing.T) {
	tests := []struct {
		server string
		unix   bool
		live   bool // start the server; Apache's workers cannot reach a socket in the test's private directory
	}{
		{Nginx, false, true},
		{Nginx, true, true},
		{Apache, false, true},
		{Apache, true, false},
		{HAProxy, false, true},
		{HAProxy, true, true},
	}
	for _, tt := range tests {
		name := tt.server
		if tt.unix {
			name += "_unix"
		}
		t.Run(name, func(t *testing.T) {
			spAddr := hostPort(freePort(t))
			if tt.unix {
				spAddr = "unix:" + filepath.Join(t.TempDir(), "http.sock")
			}
			snip, err := HTTPForward(tt.server, spAddr)
			if err != nil {
				t.Fatal(err)
			}
			listen := hostPort(freePort(t))
			if !tt.live {
				dir := t.TempDir()
				runApache(t, dir, apacheConf(dir, listen, indent(snip, 4)), "")
				return
			}
			sp, err := sideport.New(sideport.Options{Addr: spAddr})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sp.Close() })
			srv := runWith(t, tt.server, snip, listen)

			ctx := context.Background()
			ch := solve.Challenge{
				Type:             solve.HTTP01,
				Identifier:       ident.Identifier{Type: ident.TypeDNS, Value: "example.com"},
				Token:            "tok_Forward-1",
				KeyAuthorization: "tok_Forward-1." + testThumbprint,
			}
			path := ch.HTTP01Path()

			// Side port closed: the server answers with an error, not a
			// redirect.
			if status, body := get(t, listen, "example.com", path); status < 500 {
				t.Fatalf("before Present: got %d %q, want a 5xx from the proxy", status, body)
			}
			if err := sp.Present(ctx, ch); err != nil {
				t.Fatal(err)
			}
			// Right after the side port opens, the forward works (no
			// proxy keeps the earlier failure in mind).
			status, body := get(t, listen, "Example.COM", path)
			if status != http.StatusOK || body != ch.KeyAuthorization {
				t.Fatalf("after Present: got %d %q, want 200 %q\n%s", status, body, ch.KeyAuthorization, srv.logText())
			}
			// The Host header reaches Detour: another name gets the
			// diagnostic 404.
			status, body = get(t, listen, "other.example.com", path)
			if status != http.StatusNotFound || !strings.Contains(body, "on host other.example.com") {
				t.Errorf("other host: got %d %q, want 404 naming other.example.com", status, body)
			}
			// Everything else is still redirected.
			if status, _ := get(t, listen, "example.com", "/"); status != http.StatusMovedPermanently {
				t.Errorf("GET /: got %d, want 301", status)
			}
			if err := sp.CleanUp(ctx, ch); err != nil {
				t.Fatal(err)
			}
			if status, body := get(t, listen, "example.com", path); status < 500 {
				t.Errorf("after CleanUp: got %d %q, want a 5xx from the proxy", status, body)
			}
		})
	}
}

// tlsServer accepts TLS connections offering protos on ln and writes name
// to each, so a client sees which backend it reached.
func tlsServer(t *testing.T, ln net.Listener, name string, protos []string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "example.com"},
		DNSNames:     []string{"example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   protos,
	}
	tln := tls.NewListener(ln, cfg)
	t.Cleanup(func() { tln.Close() })
	go func() {
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.WriteString(c, name)
			}()
		}
	}()
}

// dialALPN connects through addr offering proto and returns what the
// backend wrote and the negotiated protocol.
func dialALPN(t *testing.T, addr, proto string) (string, string) {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{
		ServerName:         "example.com",
		NextProtos:         []string{proto},
		InsecureSkipVerify: true, // the test backends are self-signed; which one answers is what matters
	})
	if err != nil {
		t.Fatalf("TLS to %s offering %s: %v", addr, proto, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading from %s: %v", addr, err)
	}
	return string(b), c.ConnectionState().NegotiatedProtocol
}

func TestTLSALPNForwardRealServers(t *testing.T) {
	tests := []struct {
		server string
		unix   bool
	}{
		{Nginx, false},
		{Nginx, true},
		{HAProxy, false},
	}
	for _, tt := range tests {
		name := tt.server
		if tt.unix {
			name += "_unix"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			network, address := "tcp", "127.0.0.1:0"
			if tt.unix {
				network, address = "unix", filepath.Join(dir, "alpn.sock")
			}
			dln, err := net.Listen(network, address)
			if err != nil {
				t.Fatal(err)
			}
			detourAddr := dln.Addr().String()
			if tt.unix {
				detourAddr = "unix:" + address
			}
			tlsServer(t, dln, "detour", []string{"acme-tls/1"})
			hln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			tlsServer(t, hln, "https", []string{"h2", "http/1.1"})

			snip, err := TLSALPNForward(tt.server, detourAddr)
			if err != nil {
				t.Fatal(err)
			}
			listen := hostPort(freePort(t))
			// The user's edits: the real HTTPS address, and a test port
			// instead of 443.
			snip = strings.ReplaceAll(snip, HTTPSPlaceholder, hln.Addr().String())
			var srv *server
			switch tt.server {
			case Nginx:
				requireFile(t, nginxStreamModSO, "libnginx-mod-stream")
				snip = strings.Replace(snip, "listen 443;", "listen "+listen+";", 1)
				snip = strings.Replace(snip, "listen [::]:443;", "", 1)
				srv = runNginx(t, dir, nginxConf(dir, "load_module "+nginxStreamModSO+";\n"+snip, "", ""), listen)
			case HAProxy:
				snip = strings.Replace(snip, "bind :443", "bind "+listen, 1)
				srv = runHAProxy(t, dir, haproxyConf(snip), listen)
			}
			for _, c := range []struct{ proto, want string }{
				{"acme-tls/1", "detour"},
				{"http/1.1", "https"},
				{"h2", "https"},
			} {
				got, negotiated := dialALPN(t, listen, c.proto)
				if got != c.want || negotiated != c.proto {
					t.Errorf("offering %s: reached %q (negotiated %q), want %q\n%s", c.proto, got, negotiated, c.want, srv.logText())
				}
			}
		})
	}
}

// debianHAProxyDefaults is the defaults section of Debian's stock
// /etc/haproxy/haproxy.cfg (bookworm), where HAProxy is usually installed
// from: `option httplog` there applies to every frontend.
const debianHAProxyDefaults = `defaults
	log	global
	mode	http
	option	httplog
	option	dontlognull
        timeout connect 5000
        timeout client  50000
        timeout server  50000
	errorfile 400 /etc/haproxy/errors/400.http
	errorfile 403 /etc/haproxy/errors/403.http
	errorfile 408 /etc/haproxy/errors/408.http
	errorfile 500 /etc/haproxy/errors/500.http
	errorfile 502 /etc/haproxy/errors/502.http
	errorfile 503 /etc/haproxy/errors/503.http
	errorfile 504 /etc/haproxy/errors/504.http
`

// The tls-alpn snippet pasted below Debian's stock defaults passes
// `haproxy -c` without a warning (-dW turns any warning into a failure).
func TestTLSALPNForwardHAProxyDebianDefaults(t *testing.T) {
	bin := binary(t, "haproxy", "haproxy")
	requireFile(t, "/etc/haproxy/errors/400.http", "haproxy")
	for _, addr := range []string{"127.0.0.1:8403", "unix:/run/detour/alpn.sock"} {
		t.Run(addr, func(t *testing.T) {
			snip, err := TLSALPNForward(HAProxy, addr)
			if err != nil {
				t.Fatal(err)
			}
			snip = strings.Replace(snip, "bind :443", "bind "+hostPort(freePort(t)), 1)
			conf := "global\n\tlog stderr format raw local0\n" + debianHAProxyDefaults + "\n" + snip
			p := writeConf(t, t.TempDir(), "haproxy.cfg", conf)
			out, err := exec.Command(bin, "-dW", "-c", "-f", p).CombinedOutput()
			if err != nil || strings.Contains(string(out), "[WARNING]") {
				t.Errorf("haproxy -c with Debian's defaults: %v\n%s\nconfiguration:\n%s", err, out, conf)
			}
		})
	}
}
