package selfcheck

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/testenv"
)

const (
	testToken = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	testThumb = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
	testKA    = testToken + "." + testThumb
)

var (
	v4 = netip.MustParseAddr("127.0.0.1")
	v6 = netip.MustParseAddr("::1")
)

// testZone is what the in-test DNS server answers.
var testZone = map[string][]netip.Addr{
	"site.test":  {v4},
	"other.test": {v4},
	"v6.test":    {v6, v4}, // IPv6 first, IPv4 fallback
	"only6.test": {v6},
}

// challenge returns a challenge for id with the test key authorization.
func challenge(t *testing.T, typ, id string) solve.Challenge {
	t.Helper()
	i, err := ident.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	return solve.Challenge{Type: typ, Identifier: i, Token: testToken, KeyAuthorization: testKA}
}

// startDNS serves zone over UDP on 127.0.0.1:0 and returns a resolver that
// queries it.
func startDNS(t *testing.T, zone map[string][]netip.Addr) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{
		PacketConn:        pc,
		NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			m.Authoritative = true
			q := r.Question[0]
			addrs, ok := zone[strings.TrimSuffix(strings.ToLower(q.Name), ".")]
			if !ok {
				m.Rcode = dns.RcodeNameError
			}
			for _, a := range addrs {
				hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 60}
				switch {
				case a.Is4() && q.Qtype == dns.TypeA:
					hdr.Rrtype = dns.TypeA
					m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
				case a.Is6() && q.Qtype == dns.TypeAAAA:
					hdr.Rrtype = dns.TypeAAAA
					m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
				}
			}
			_ = w.WriteMsg(m)
		}),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-errc:
		t.Fatalf("starting DNS server: %v", err)
	}
	t.Cleanup(func() { _ = srv.Shutdown() })
	addr := pc.LocalAddr().String()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", addr)
		},
	}
}

// serverPort returns the port of an httptest server.
func serverPort(t *testing.T, s *httptest.Server) int {
	t.Helper()
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startHTTP serves h on 127.0.0.1:0 and returns the port.
func startHTTP(t *testing.T, h http.Handler) int {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return serverPort(t, s)
}

// startHTTPS serves h over TLS (a certificate for example.com, which no
// test name matches) on 127.0.0.1:0 and returns the port.
func startHTTPS(t *testing.T, h http.Handler) int {
	t.Helper()
	s := httptest.NewTLSServer(h)
	t.Cleanup(s.Close)
	return serverPort(t, s)
}

// closedPort returns a port on 127.0.0.1 that refuses connections (and
// that no other test is given meanwhile).
func closedPort(t *testing.T) int {
	t.Helper()
	return testenv.RefusedPort(t)
}

// startSilent accepts connections on 127.0.0.1:0 and never answers; they
// are closed when the test ends.
func startSilent(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveSilent(t, ln)
	return ln.Addr().(*net.TCPAddr).Port
}

// serveSilent accepts connections on ln and never answers; they are closed
// when the test ends.
func serveSilent(t *testing.T, ln net.Listener) {
	t.Helper()
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
}

// wantMismatch checks that err is a *MismatchError with reason r whose
// message contains every string in want, and returns it.
func wantMismatch(t *testing.T, err error, r Reason, want ...string) *MismatchError {
	t.Helper()
	var me *MismatchError
	if !errors.As(err, &me) {
		t.Fatalf("error = %v (%T), want a *MismatchError", err, err)
	}
	if me.Reason != r {
		t.Errorf("Reason = %q, want %q; error: %v", me.Reason, r, err)
	}
	msg := err.Error()
	t.Log(msg)
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error does not contain %q:\n%s", w, msg)
		}
	}
	return me
}
