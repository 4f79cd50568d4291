package router

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

func TestRoutingBySNI(t *testing.T) {
	exact := startBackend(t, tagEcho("EXACT"))
	wild := startBackend(t, tagEcho("WILD1"))
	deep := startBackend(t, tagEcho("WILD2"))
	def := startBackend(t, tagEcho("DEFLT"))
	_, addr := startRouter(t, Options{},
		Route{SNI: "app.example.com", Backend: exact.addr},
		Route{SNI: "*.example.com", Backend: wild.addr},
		Route{SNI: "*.deep.example.com", Backend: deep.addr},
		Route{SNI: "", Backend: def.addr},
	)
	tests := []struct{ sni, want string }{
		{"app.example.com", "EXACT"},
		{"APP.Example.COM", "EXACT"},
		{"x.example.com", "WILD1"},
		{"a.b.example.com", "WILD1"},
		{"a.deep.example.com", "WILD2"},
		{"example.com", "DEFLT"},
		{"other.org", "DEFLT"},
		{"", "DEFLT"},
	}
	for _, tt := range tests {
		t.Run(tt.sni, func(t *testing.T) {
			hello := captureHello(t, helloCfg(tt.sni, "h2"))
			c := dial(t, addr, hello)
			if got := string(readN(t, c, 5)); got != tt.want {
				t.Fatalf("routed to %s, want %s", got, tt.want)
			}
			if echo := readN(t, c, len(hello)); !bytes.Equal(echo, hello) {
				t.Fatal("backend did not receive the client hello byte for byte")
			}
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			if got := string(readN(t, c, 4)); got != "ping" {
				t.Fatalf("echo = %q", got)
			}
		})
	}
}

func TestNoRouteCloses(t *testing.T) {
	b := startBackend(t, tagEcho("B"))
	r, addr := startRouter(t, Options{}, Route{SNI: "app.example.com", Backend: b.addr})
	c := dial(t, addr, captureHello(t, helloCfg("other.example.com")))
	waitClosed(t, c, 5*time.Second)
	c = dial(t, addr, captureHello(t, helloCfg("")))
	waitClosed(t, c, 5*time.Second)
	if st := r.Stats(); st.NoRoute != 2 || st.Routed != 0 {
		t.Errorf("stats = %+v, want 2 without route", st)
	}
	if b.accepted.Load() != 0 {
		t.Error("backend got a connection")
	}
}

// An acme-tls/1 hello is passed through when no responder is configured.
func TestACMEPassedThroughWithoutResponder(t *testing.T) {
	b := startBackend(t, tagEcho("B"))
	_, addr := startRouter(t, Options{}, Route{Backend: b.addr})
	hello := captureHello(t, helloCfg("app.example.com", "acme-tls/1"))
	c := dial(t, addr, hello)
	if got := readN(t, c, 1+len(hello)); !bytes.Equal(got[1:], hello) {
		t.Fatal("acme-tls/1 hello not passed through")
	}
}

// The client's TLS handshake completes against the backend's certificate:
// the router is invisible.
func TestPassThroughTLS(t *testing.T) {
	cert := selfSigned(t, "app.example.com")
	b := startBackend(t, func(c net.Conn) {
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
		_, _ = io.Copy(tc, tc)
	})
	_, addr := startRouter(t, Options{ACME: refuseAll{}}, Route{Backend: b.addr})
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "app.example.com", RootCAs: pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("handshake through the router: %v", err)
	}
	defer c.Close()
	if st := c.ConnectionState(); st.NegotiatedProtocol != "h2" || !st.PeerCertificates[0].Equal(cert.Leaf) {
		t.Fatalf("negotiated %q with %s", st.NegotiatedProtocol, st.PeerCertificates[0].Subject)
	}
	if _, err := c.Write([]byte("hello over tls")); err != nil {
		t.Fatal(err)
	}
	if got := string(readN(t, c, 14)); got != "hello over tls" {
		t.Fatalf("echo = %q", got)
	}
}

// refuseAll is an ACMEResponder that answers nothing.
type refuseAll struct{}

func (refuseAll) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return nil, errors.New("no challenge")
}

func TestProxyProtocolV2(t *testing.T) {
	type got struct {
		hdr  *proxyproto.Header
		rest []byte
		err  error
	}
	ch := make(chan got, 1)
	hello := captureHello(t, helloCfg("app.example.com", "h2"))
	b := startBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		hdr, err := proxyproto.Read(br)
		rest := make([]byte, len(hello))
		if err == nil {
			_, err = io.ReadFull(br, rest)
		}
		ch <- got{hdr, rest, err}
	})
	_, addr := startRouter(t, Options{}, Route{SNI: "app.example.com", Backend: b.addr, ProxyProtocol: true})
	c := dial(t, addr, hello)
	g := <-ch
	if g.err != nil {
		t.Fatal(g.err)
	}
	if g.hdr.Version != 2 || g.hdr.Command != proxyproto.PROXY || g.hdr.TransportProtocol != proxyproto.TCPv4 {
		t.Fatalf("header = %+v", g.hdr)
	}
	if src := g.hdr.SourceAddr.String(); src != c.LocalAddr().String() {
		t.Errorf("source = %s, want the client's %s", src, c.LocalAddr())
	}
	if dst := g.hdr.DestinationAddr.String(); dst != addr {
		t.Errorf("destination = %s, want the router's %s", dst, addr)
	}
	if !bytes.Equal(g.rest, hello) {
		t.Error("client hello after the header differs")
	}
}

func TestAppendProxyV2(t *testing.T) {
	v6 := &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 50000}
	v4 := &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 443}
	tests := []struct {
		name     string
		src, dst net.Addr
		proto    proxyproto.AddressFamilyAndProtocol
		src2     string
	}{
		{"v4", v4, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443}, proxyproto.TCPv4, "192.0.2.7:443"},
		{"v6", v6, &net.TCPAddr{IP: net.ParseIP("2001:db8::2"), Port: 443}, proxyproto.TCPv6, "[2001:db8::1]:50000"},
		{"mixed", v4, &net.TCPAddr{IP: net.ParseIP("2001:db8::2"), Port: 443}, proxyproto.TCPv6, "192.0.2.7:443"},
		{"unix", &net.UnixAddr{Name: "@", Net: "unix"}, v4, proxyproto.UNSPEC, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := appendProxyV2(nil, tt.src, tt.dst)
			if len(b) > maxProxyHeader {
				t.Fatalf("header of %d bytes exceeds maxProxyHeader", len(b))
			}
			h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(b)))
			if err != nil {
				t.Fatal(err)
			}
			if tt.proto == proxyproto.UNSPEC && h.Command != proxyproto.LOCAL {
				t.Errorf("command = %v, want LOCAL for non-TCP addresses", h.Command)
			}
			if h.TransportProtocol != tt.proto {
				t.Fatalf("protocol = %v, want %v", h.TransportProtocol, tt.proto)
			}
			if tt.src2 != "" && h.SourceAddr.String() != tt.src2 {
				t.Errorf("source = %s, want %s", h.SourceAddr, tt.src2)
			}
		})
	}
}

func TestReload(t *testing.T) {
	one := startBackend(t, tagEcho("1"))
	two := startBackend(t, tagEcho("2"))
	r, addr := startRouter(t, Options{}, Route{Backend: one.addr})
	hello := captureHello(t, helloCfg("app.example.com"))

	old := dial(t, addr, hello)
	if got := string(readN(t, old, 1+len(hello))[:1]); got != "1" {
		t.Fatalf("first connection routed to %s", got)
	}
	tab, err := NewTable([]Route{{Backend: two.addr}})
	if err != nil {
		t.Fatal(err)
	}
	r.Reload(tab)
	if r.Table() != tab {
		t.Fatal("Table() does not return the reloaded table")
	}
	c := dial(t, addr, hello)
	if got := string(readN(t, c, 1+len(hello))[:1]); got != "2" {
		t.Fatalf("connection after reload routed to %s", got)
	}
	if _, err := old.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	if got := string(readN(t, old, 10)); got != "still here" {
		t.Fatalf("old connection echo = %q", got)
	}
}

func TestBackendDown(t *testing.T) {
	down := unusedAddr(t)
	up := startBackend(t, tagEcho("U"))
	r, addr := startRouter(t, Options{},
		Route{SNI: "down.example.com", Backend: down},
		Route{Backend: up.addr},
	)
	hello := captureHello(t, helloCfg("up.example.com"))
	live := dial(t, addr, hello)
	readN(t, live, 1+len(hello))

	for range 3 {
		c := dial(t, addr, captureHello(t, helloCfg("down.example.com")))
		waitClosed(t, c, 5*time.Second)
	}
	c := dial(t, addr, hello)
	if got := string(readN(t, c, 1+len(hello))[:1]); got != "U" {
		t.Fatalf("routed to %q", got)
	}
	if _, err := live.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if got := string(readN(t, live, 1)); got != "x" {
		t.Fatalf("live connection echo = %q", got)
	}
	if st := r.Stats(); st.Failed != 3 || st.Routed != 2 {
		t.Errorf("stats = %+v, want 3 failed and 2 routed", st)
	}
}

// Whatever is not a timely, bounded TLS ClientHello is closed within the
// peek timeout and never reaches a backend.
func TestBadClientsClosed(t *testing.T) {
	b := startBackend(t, tagEcho("B"))
	const peek = time.Second
	r, addr := startRouter(t, Options{PeekTimeout: peek, MaxHello: 4096}, Route{Backend: b.addr})
	hello := captureHello(t, helloCfg("app.example.com", "h2"))
	padded := synthHello(sniExt("app.example.com"), ext(21, make([]byte, 5000))) // padding extension

	tests := []struct {
		name     string
		send     []byte
		trickle  bool
		halfOpen bool // close our write side after sending
		slow     bool // closed by the peek timeout rather than at once
	}{
		{name: "garbage", send: []byte("GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")},
		{name: "proxy v1 header", send: append([]byte("PROXY TCP4 192.0.2.1 192.0.2.2 1234 443\r\n"), hello...)},
		{name: "proxy v2 header", send: append(appendProxyV2(nil, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 443}), hello...)},
		{name: "oversized", send: padded},
		{name: "oversized fragments", send: fragment(padded, 1000)},
		{name: "truncated then EOF", send: hello[:len(hello)/2], halfOpen: true},
		{name: "truncated then silence", send: hello[:len(hello)/2], slow: true},
		{name: "trickle", send: hello, trickle: true, slow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tt.trickle {
				go func() {
					for _, by := range tt.send {
						if _, err := c.Write([]byte{by}); err != nil {
							return
						}
						time.Sleep(50 * time.Millisecond)
					}
				}()
			} else if _, err := c.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			if tt.halfOpen {
				_ = c.(*net.TCPConn).CloseWrite()
			}
			took := waitClosed(t, c, 3*peek)
			switch {
			case tt.slow && (took < peek/2 || took > 2*peek):
				t.Errorf("closed after %s, want about %s", took, peek)
			case !tt.slow && took > peek/2:
				t.Errorf("closed after %s, want at once", took)
			}
		})
	}
	t.Cleanup(func() {
		if n := b.accepted.Load(); n != 0 {
			t.Errorf("backend got %d connections from bad clients", n)
		}
		if st := r.Stats(); st.Rejected != uint64(len(tests)) {
			t.Errorf("rejected = %d, want %d", st.Rejected, len(tests))
		}
	})
}

// sumBackend reads until EOF, then answers with the SHA-256 of what it read
// and closes.
func sumBackend(c net.Conn) {
	h := sha256.New()
	if _, err := io.Copy(h, c); err != nil {
		return
	}
	_, _ = io.WriteString(c, hex.EncodeToString(h.Sum(nil)))
}

// A client's FIN reaches the backend while the backend can still answer,
// and the payload passes intact.
func TestHalfCloseAndBody(t *testing.T) {
	b := startBackend(t, sumBackend)
	_, addr := startRouter(t, Options{}, Route{Backend: b.addr})
	hello := captureHello(t, helloCfg("app.example.com"))
	for _, size := range []int{0, 5, 1 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			sent, got := exchange(t, addr, hello, size)
			sum := sha256.Sum256(sent)
			if string(got) != hex.EncodeToString(sum[:]) {
				t.Fatalf("backend read %q, want the hash of the %d bytes sent", got, len(hello)+size)
			}
		})
	}
}

// A backend's FIN reaches the client, which can still send.
func TestHalfCloseFromBackend(t *testing.T) {
	hello := captureHello(t, helloCfg("app.example.com"))
	rest := make(chan []byte, 1)
	b := startBackend(t, func(c net.Conn) {
		_, _ = io.WriteString(c, "greeting")
		_ = c.(*net.TCPConn).CloseWrite()
		all, _ := io.ReadAll(c)
		rest <- all
	})
	_, addr := startRouter(t, Options{}, Route{Backend: b.addr})
	c := dial(t, addr, hello)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "greeting" {
		t.Fatalf("read %q, %v; want greeting then EOF", got, err)
	}
	if _, err := c.Write([]byte("after fin")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	if all := <-rest; string(all) != string(hello)+"after fin" {
		t.Fatalf("backend read %q after its FIN", all[len(hello):])
	}
}

func TestShutdownDrains(t *testing.T) {
	b := startBackend(t, tagEcho("B"))
	r, addr, cancel, done := serveRouter(t, Options{DrainTimeout: 300 * time.Millisecond}, Route{Backend: b.addr})

	hello := captureHello(t, helloCfg("app.example.com"))
	c := dial(t, addr, hello)
	readN(t, c, 1+len(hello))
	start := time.Now()
	cancel()
	// The live connection keeps working during the grace period.
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if got := string(readN(t, c, 1)); got != "x" {
		t.Fatalf("echo during drain = %q", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	if took := time.Since(start); took < 250*time.Millisecond || took > 3*time.Second {
		t.Errorf("Serve returned after %s, want the 300ms drain", took)
	}
	waitClosed(t, c, 2*time.Second)
	if nc, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		nc.Close()
		t.Error("listener still accepts after Serve returned")
	}
	if st := r.Stats(); st.Active != 0 {
		t.Errorf("active = %d after shutdown", st.Active)
	}
}

func TestNewValidation(t *testing.T) {
	tab, _ := NewTable(nil)
	for _, o := range []Options{{MaxHello: 10}, {PeekTimeout: -1}} {
		if _, err := New(o, tab); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	if _, err := New(Options{}, nil); err == nil {
		t.Error("New without a table accepted")
	}
}
