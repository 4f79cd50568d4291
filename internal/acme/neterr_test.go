package acme_test

// Real local network failures, each explained with the URL and what to
// check: a closed port, a name that does not resolve (a local DNS server
// answering NXDOMAIN), a server that never answers, a TLS certificate of
// an unknown CA or for another name, and a proxy that is not there.

import (
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/testenv"
)

// closedURL returns http://127.0.0.1:PORT+path for a port that refuses
// connections (and that no other test is given meanwhile).
func closedURL(t *testing.T, path string) string {
	t.Helper()
	return "http://127.0.0.1:" + strconv.Itoa(testenv.RefusedPort(t)) + path
}

// wantNetworkError fails unless err is a *acme.NetworkError of kind for
// url whose message names url and contains each of subs.
func wantNetworkError(t *testing.T, err error, kind acme.NetworkKind, url string, subs ...string) *acme.NetworkError {
	t.Helper()
	var ne *acme.NetworkError
	if !errors.As(err, &ne) {
		t.Fatalf("error %v (%T) is not a *acme.NetworkError", err, err)
	}
	if ne.Kind != kind || ne.URL != url {
		t.Errorf("NetworkError{Kind: %q, URL: %q}, want %q, %q", ne.Kind, ne.URL, kind, url)
	}
	wantContains(t, err, append([]string{"cannot reach the CA at " + url}, subs...)...)
	return ne
}

func TestNetworkErrorRefused(t *testing.T) {
	t.Parallel()
	dir := closedURL(t, "/directory")
	c := newClient(t, nil, dir, acme.Options{})
	_, err := c.Directory(t.Context())
	wantNetworkError(t, err, acme.NetRefused, dir,
		"connection refused", "nothing accepts connections on 127.0.0.1 port", "typo", "letsencrypt-staging",
		"firewall", "HTTPS_PROXY")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("errors.Is(err, ECONNREFUSED) is false for %v", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" {
		t.Errorf("errors.As(err, *net.OpError) = %v, want the dial error", oe)
	}
}

// Any ACME URL, not only the directory: here the CA's newNonce, on a
// closed port, fails registration.
func TestNetworkErrorAnyACMEURL(t *testing.T) {
	t.Parallel()
	nonce := closedURL(t, "/nonce")
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		d := directoryJSON("http://"+r.Host, nil)
		d = []byte(strings.Replace(string(d), "http://"+r.Host+"/nonce", nonce, 1))
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(d)
	})
	c := newClient(t, srv, srv.URL+"/directory", acme.Options{})
	key, err := acme.ECDSAP256.Generate()
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Register(t.Context(), acme.RegisterRequest{Key: key, AgreeTOS: true})
	wantNetworkError(t, err, acme.NetRefused, nonce, "connection refused")
}

// nxdomainServer is a DNS server on 127.0.0.1 that answers every query
// with NXDOMAIN (RFC 1035 §4.1.1, RCODE 3) and returns its address.
func nxdomainServer(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			msg := append([]byte(nil), buf[:n]...)
			flags := binary.BigEndian.Uint16(msg[2:4])
			// QR=1, keep opcode and RD, RA=1, RCODE=3 (NXDOMAIN).
			binary.BigEndian.PutUint16(msg[2:4], 0x8000|flags&0x7900|0x0080|3)
			binary.BigEndian.PutUint16(msg[6:8], 0)   // ANCOUNT
			binary.BigEndian.PutUint16(msg[8:10], 0)  // NSCOUNT
			binary.BigEndian.PutUint16(msg[10:12], 0) // ARCOUNT: drop EDNS from the copy
			msg = msg[:12+questionLen(msg[12:])]
			_, _ = pc.WriteTo(msg, from)
		}
	}()
	return pc.LocalAddr().String()
}

// questionLen is the length of the one question at the start of b.
func questionLen(b []byte) int {
	i := 0
	for i < len(b) && b[i] != 0 {
		i += int(b[i]) + 1
	}
	return min(i+1+4, len(b)) // the root label, QTYPE and QCLASS
}

func TestNetworkErrorDNS(t *testing.T) {
	t.Parallel()
	dns := nxdomainServer(t)
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", dns)
	}}
	transport := &http.Transport{DialContext: (&net.Dialer{Resolver: resolver, Timeout: 5 * time.Second}).DialContext}
	const dir = "https://acme.detour-test.invalid/directory"
	c := newClient(t, nil, dir, acme.Options{HTTPClient: &http.Client{Transport: transport}})
	_, err := c.Directory(t.Context())
	wantNetworkError(t, err, acme.NetDNS, dir,
		"the host name acme.detour-test.invalid does not resolve", "typo", "letsencrypt",
		"getent hosts acme.detour-test.invalid", "/etc/resolv.conf", "HTTPS_PROXY")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("errors.As(err, *net.DNSError) = %+v, want a not-found lookup", de)
	}
}

// silentServer accepts connections and never writes a byte.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var conns []net.Conn
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func TestNetworkErrorTimeout(t *testing.T) {
	t.Parallel()
	addr := silentServer(t)
	_, port, _ := net.SplitHostPort(addr)
	advice := []string{"no answer in time from 127.0.0.1 port " + port, "typo", "firewall drops outbound connections to port " + port, "HTTPS_PROXY"}

	// The transport's own timeout (waiting for the response headers): a
	// *NetworkError that is a timeout.
	t.Run("response headers", func(t *testing.T) {
		t.Parallel()
		dir := "http://" + addr + "/directory"
		transport := &http.Transport{ResponseHeaderTimeout: 100 * time.Millisecond}
		c := newClient(t, nil, dir, acme.Options{HTTPClient: &http.Client{Transport: transport}})
		_, err := c.Directory(t.Context())
		ne := wantNetworkError(t, err, acme.NetTimeout, dir, advice...)
		var nerr net.Error
		if !ne.Timeout() || !errors.As(err, &nerr) || !nerr.Timeout() {
			t.Errorf("the error is not a timeout net.Error: %v", err)
		}
	})
	// The request timeout over a TLS handshake that never ends: net/http
	// keeps only the text of the transport's error, which says what to
	// check.
	t.Run("TLS handshake", func(t *testing.T) {
		t.Parallel()
		dir := "https://" + addr + "/directory"
		c := newClient(t, nil, dir, acme.Options{RequestTimeout: 200 * time.Millisecond})
		_, err := c.Directory(t.Context())
		wantContains(t, err, append([]string{dir, "cannot reach the CA at " + dir}, advice...)...)
		var ue *url.Error
		if !errors.As(err, &ue) || !ue.Timeout() {
			t.Errorf("the error is not a timeout *url.Error: %v", err)
		}
	})
}

// tlsServer serves a directory over TLS with httptest's certificate
// (127.0.0.1, ::1 and example.com, from a CA nobody trusts).
func tlsServer(t *testing.T) *httptest.Server {
	t.Helper()
	var srv *httptest.Server
	srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(directoryJSON(srv.URL, nil))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestNetworkErrorTLS(t *testing.T) {
	t.Parallel()
	srv := tlsServer(t)
	t.Run("unknown CA", func(t *testing.T) {
		t.Parallel()
		dir := srv.URL + "/directory"
		c := newClient(t, nil, dir, acme.Options{})
		_, err := c.Directory(t.Context())
		wantNetworkError(t, err, acme.NetTLS, dir,
			"the TLS certificate of 127.0.0.1 is not trusted", "root bundle", "root_bundle", "--ca-roots", "intercepts TLS")
		var ua x509.UnknownAuthorityError
		if !errors.As(err, &ua) {
			t.Errorf("errors.As(err, x509.UnknownAuthorityError) is false for %v", err)
		}
	})
	t.Run("other name", func(t *testing.T) {
		t.Parallel()
		// Trusted root, but localhost is not a name of the certificate.
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		dir := "https://localhost:" + port + "/directory"
		rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
		c := newClient(t, nil, dir, acme.Options{RootsPEM: rootPEM})
		_, err := c.Directory(t.Context())
		wantNetworkError(t, err, acme.NetTLS, dir,
			"the TLS certificate of localhost is not valid for that name", "its host name must be one the certificate names", "--ca-roots")
		var he x509.HostnameError
		if !errors.As(err, &he) {
			t.Errorf("errors.As(err, x509.HostnameError) is false for %v", err)
		}
	})
}

func TestNetworkErrorProxy(t *testing.T) {
	t.Parallel()
	proxy, err := url.Parse(closedURL(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	const dir = "https://acme.example/directory"
	transport := &http.Transport{Proxy: http.ProxyURL(proxy)}
	c := newClient(t, nil, dir, acme.Options{HTTPClient: &http.Client{Transport: transport}})
	_, err = c.Directory(t.Context())
	wantNetworkError(t, err, acme.NetProxy, dir, "the HTTP(S) proxy could not be reached", "HTTPS_PROXY", "NO_PROXY")
}

// The caller's own cancellation is not a network failure to explain.
func TestNetworkErrorNotOnCancel(t *testing.T) {
	t.Parallel()
	addr := silentServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	c := newClient(t, nil, "http://"+addr+"/directory", acme.Options{})
	_, err := c.Directory(ctx)
	var ne *acme.NetworkError
	if !errors.Is(err, context.Canceled) || errors.As(err, &ne) {
		t.Errorf("cancelled Directory: %v, want context.Canceled and no NetworkError", err)
	}
}
