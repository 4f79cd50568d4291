package router

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// captureHello returns the ClientHello a real tls.Client sends with cfg.
func captureHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	rec := &recordConn{}
	err := tls.Client(rec, cfg).Handshake()
	if !errors.Is(err, errCaptured) {
		t.Fatalf("capturing client hello: %v", err)
	}
	return rec.buf.Bytes()
}

var errCaptured = errors.New("captured")

// recordConn keeps what is written to it and fails the first read.
type recordConn struct {
	fakeConn
	buf bytes.Buffer
}

func (c *recordConn) Write(p []byte) (int, error) { return c.buf.Write(p) }
func (c *recordConn) Read([]byte) (int, error)    { return 0, errCaptured }

// fakeConn is a net.Conn that does nothing.
type fakeConn struct{}

func (fakeConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (fakeConn) Write(p []byte) (int, error)      { return len(p), nil }
func (fakeConn) Close() error                     { return nil }
func (fakeConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (fakeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (fakeConn) SetDeadline(time.Time) error      { return nil }
func (fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (fakeConn) SetWriteDeadline(time.Time) error { return nil }
func helloCfg(sni string, alpn ...string) *tls.Config {
	return &tls.Config{ServerName: sni, NextProtos: alpn, InsecureSkipVerify: true}
}

// fragment re-frames the handshake bytes of a single-record hello into
// records of at most size payload bytes.
func fragment(hello []byte, size int) []byte {
	payload := hello[recordHeaderLen:]
	var out []byte
	for len(payload) > 0 {
		n := min(size, len(payload))
		out = append(out, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, payload[:n]...)
		payload = payload[n:]
	}
	return out
}

// selfSigned returns a certificate for name.
func selfSigned(t testing.TB, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// backend is a TCP server on 127.0.0.1:0 running handle on each connection.
type backend struct {
	addr     string
	accepted atomic.Int64
}

func startBackend(t testing.TB, handle func(net.Conn)) *backend {
	t.Helper()
	return startBackendOn(t, "tcp", "127.0.0.1:0", handle)
}

// startBackendOn is startBackend on any listening address; addr is the
// address to route to ("unix:" and the path for a Unix socket).
func startBackendOn(t testing.TB, network, address string, handle func(net.Conn)) *backend {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: ln.Addr().String()}
	if network == "unix" {
		b.addr = "unix:" + address
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return b
}

// exchange opens a connection to the router at addr with hello, sends size
// random bytes after it and closes its side, and returns the bytes sent
// (hello and body) and everything read back until the router closes.
func exchange(t testing.TB, addr string, hello []byte, size int) (sent, got []byte) {
	t.Helper()
	body := make([]byte, size)
	_, _ = rand.Read(body)
	c := dial(t, addr, hello)
	go func() {
		_, _ = c.Write(body)
		_ = c.CloseWrite()
	}()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return append(append([]byte(nil), hello...), body...), got
}

// unusedAddr returns a loopback address nothing listens on.
func unusedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// tagEcho writes tag, then echoes everything it reads.
func tagEcho(tag string) func(net.Conn) {
	return func(c net.Conn) {
		if _, err := c.Write([]byte(tag)); err != nil {
			return
		}
		_, _ = io.Copy(c, c)
	}
}

// startRouter serves a router on 127.0.0.1:0 until the test ends, and
// checks that Serve returns nil.
func startRouter(t testing.TB, opts Options, routes ...Route) (*Router, string) {
	t.Helper()
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 100 * time.Millisecond
	}
	r, addr, stop, done := serveRouter(t, opts, routes...)
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return r, addr
}

// serveRouter serves a router on 127.0.0.1:0 until stop is called; done
// receives what Serve returned.
func serveRouter(t testing.TB, opts Options, routes ...Route) (r *Router, addr string, stop context.CancelFunc, done <-chan error) {
	t.Helper()
	tab, err := NewTable(routes)
	if err != nil {
		t.Fatal(err)
	}
	if r, err = New(opts, tab); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Serve(ctx, ln) }()
	return r, ln.Addr().String(), cancel, errc
}

// dial connects to the router and sends data.
func dial(t testing.TB, addr string, data []byte) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

// readN reads exactly n bytes with a deadline.
func readN(t testing.TB, c net.Conn, n int) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return buf
}

// waitClosed reads until the connection ends and returns how long that took.
func waitClosed(t testing.TB, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	n, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %s", limit)
	}
	if n != 0 {
		t.Errorf("got %d bytes before the close, want none", n)
	}
	return time.Since(start)
}
