package standalone

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/asn1"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/solve"
)

var oidACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// handshake connects to addr offering protos with SNI sni, as a CA would,
// and returns the connection state.
func handshake(addr, sni string, protos []string) (tls.ConnectionState, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{
		ServerName:         sni,
		NextProtos:         protos,
		InsecureSkipVerify: true, // the challenge certificate is self-signed; the test checks it by hand
		MinVersion:         tls.VersionTLS12,
	})
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}

// verifyChallengeCert checks the leaf as RFC 8737 §3 requires.
func verifyChallengeCert(t *testing.T, st tls.ConnectionState, ch solve.Challenge) {
	t.Helper()
	if st.NegotiatedProtocol != "acme-tls/1" {
		t.Errorf("negotiated protocol %q, want acme-tls/1", st.NegotiatedProtocol)
	}
	if len(st.PeerCertificates) != 1 {
		t.Fatalf("got %d certificates, want exactly the challenge certificate", len(st.PeerCertificates))
	}
	leaf := st.PeerCertificates[0]
	sum := sha256.Sum256([]byte(ch.KeyAuthorization))
	want := append([]byte{0x04, 0x20}, sum[:]...) // OCTET STRING, 32 bytes
	var found bool
	for _, ext := range leaf.Extensions {
		if !ext.Id.Equal(oidACMEIdentifier) {
			continue
		}
		found = true
		if !ext.Critical {
			t.Error("id-pe-acmeIdentifier is not critical")
		}
		if !bytes.Equal(ext.Value, want) {
			t.Errorf("id-pe-acmeIdentifier = %x, want %x", ext.Value, want)
		}
	}
	if !found {
		t.Fatal("leaf lacks the id-pe-acmeIdentifier extension")
	}
	if ip, err := netip.ParseAddr(ch.Identifier.Value); err == nil {
		if len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 1 {
			t.Fatalf("SANs DNS %v IP %v, want only IP %s", leaf.DNSNames, leaf.IPAddresses, ip)
		}
		if got, _ := netip.AddrFromSlice(leaf.IPAddresses[0]); got.Unmap() != ip {
			t.Errorf("IP SAN %s, want %s", got, ip)
		}
		return
	}
	if !slices.Equal(leaf.DNSNames, []string{ch.Identifier.Value}) || len(leaf.IPAddresses) != 0 {
		t.Errorf("SANs DNS %v IP %v, want only DNS %s", leaf.DNSNames, leaf.IPAddresses, ch.Identifier.Value)
	}
}

func newTLSALPN01(t *testing.T, opts Options) *TLSALPN01 {
	t.Helper()
	s, err := NewTLSALPN01(opts)
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

func TestTLSALPN01Handshake(t *testing.T) {
	ctx := context.Background()
	s := newTLSALPN01(t, Options{Addr: "127.0.0.1:0"})
	dns := challenge(t, solve.TLSALPN01, "www.example.com", "tokDNS")
	v4 := challenge(t, solve.TLSALPN01, "192.0.2.1", "tokV4")
	v6 := challenge(t, solve.TLSALPN01, "2001:db8::1", "tokV6")
	for _, ch := range []solve.Challenge{dns, v4, v6} {
		if err := s.Present(ctx, ch); err != nil {
			t.Fatalf("Present(%s): %v", ch.Identifier, err)
		}
	}
	addr := s.Addr().String()
	acmeOnly := []string{"acme-tls/1"}

	tests := []struct {
		name   string
		sni    string
		protos []string
		want   *solve.Challenge // nil: handshake must fail
	}{
		{"dns name", "www.example.com", acmeOnly, &dns},
		{"dns name upper case", "WWW.EXAMPLE.COM", acmeOnly, &dns},
		{"acme-tls/1 among others", "www.example.com", []string{"h2", "acme-tls/1"}, &dns},
		{"ipv4 reverse name", reverseName(netip.MustParseAddr("192.0.2.1")), acmeOnly, &v4},
		{"ipv6 reverse name", reverseName(netip.MustParseAddr("2001:db8::1")), acmeOnly, &v6},
		{"no alpn", "www.example.com", nil, nil},
		{"other alpn", "www.example.com", []string{"h2", "http/1.1"}, nil},
		{"unknown sni", "other.example.com", acmeOnly, nil},
		{"no sni", "", acmeOnly, nil},
		{"reverse name not presented", reverseName(netip.MustParseAddr("192.0.2.2")), acmeOnly, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := handshake(addr, tt.sni, tt.protos)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("handshake succeeded (protocol %q, %d certs); want it refused", st.NegotiatedProtocol, len(st.PeerCertificates))
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			verifyChallengeCert(t, st, *tt.want)
		})
	}
}

func TestTLSALPN01ClosesAfterHandshake(t *testing.T) {
	ctx := context.Background()
	s := newTLSALPN01(t, Options{Addr: "127.0.0.1:0"})
	ch := challenge(t, solve.TLSALPN01, "example.com", "tok")
	if err := s.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", s.Addr().String(), &tls.Config{ServerName: "example.com", NextProtos: []string{"acme-tls/1"}, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(make([]byte, 1))
	if n != 0 || err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("Read after handshake = %d, %v; want the server to close the connection", n, err)
	}
}

func TestTLSALPN01PresentRejects(t *testing.T) {
	s := newTLSALPN01(t, Options{Addr: "127.0.0.1:0"})
	good := challenge(t, solve.TLSALPN01, "example.com", "tok")
	tests := []struct {
		name   string
		modify func(*solve.Challenge)
	}{
		{"wrong type", func(c *solve.Challenge) { c.Type = solve.HTTP01 }},
		{"empty key authorization", func(c *solve.Challenge) { c.KeyAuthorization = "" }},
		{"type mismatch", func(c *solve.Challenge) { c.Identifier.Type = "ip" }},
		{"wildcard", func(c *solve.Challenge) { c.Identifier.Value = "*.example.com" }},
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

func TestTLSALPN01Lifecycle(t *testing.T) {
	ctx := context.Background()
	s := newTLSALPN01(t, Options{Addr: "127.0.0.1:0"})
	a := challenge(t, solve.TLSALPN01, "a.example.com", "tokA")
	a2 := challenge(t, solve.TLSALPN01, "a.example.com", "tokA2") // a second order for the same name
	b := challenge(t, solve.TLSALPN01, "b.example.com", "tokB")
	for _, ch := range []solve.Challenge{a, b, a2} {
		if err := s.Present(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	addr := s.Addr().String()
	acme := []string{"acme-tls/1"}

	st, err := handshake(addr, "a.example.com", acme)
	if err != nil {
		t.Fatal(err)
	}
	verifyChallengeCert(t, st, a2) // newest wins
	if err := s.CleanUp(ctx, a2); err != nil {
		t.Fatal(err)
	}
	st, err = handshake(addr, "a.example.com", acme)
	if err != nil {
		t.Fatal(err)
	}
	verifyChallengeCert(t, st, a)
	if err := s.CleanUp(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, "a.example.com", acme); err == nil {
		t.Error("handshake for a cleaned-up name succeeded")
	}
	if err := s.CleanUp(ctx, a); err != nil { // not presented any more: no effect
		t.Fatal(err)
	}
	if _, err := handshake(addr, "b.example.com", acme); err != nil {
		t.Fatalf("b after a's CleanUp: %v", err)
	}
	if err := s.CleanUp(ctx, b); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != nil {
		t.Errorf("Addr() = %s after the last CleanUp; want nil", s.Addr())
	}
	assertRefused(t, addr)
}

func TestTLSALPN01GivenListener(t *testing.T) {
	ctx := context.Background()
	ln := listen(t)
	addr := ln.Addr().String()
	s, err := NewTLSALPN01(Options{Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	ch := challenge(t, solve.TLSALPN01, "example.com", "tok")
	acme := []string{"acme-tls/1"}
	for i := range 2 {
		if err := s.Present(ctx, ch); err != nil {
			t.Fatal(err)
		}
		st, err := handshake(addr, "example.com", acme)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		verifyChallengeCert(t, st, ch)
		if err := s.CleanUp(ctx, ch); err != nil {
			t.Fatal(err)
		}
		// Still served, but every handshake is refused.
		if _, err := handshake(addr, "example.com", acme); err == nil {
			t.Fatalf("round %d: handshake without a challenge succeeded", i)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	assertRefused(t, addr)
}

// TestTLSALPN01StalledClient checks that a client that never sends a
// ClientHello does not keep the port bound past Close.
func TestTLSALPN01StalledClient(t *testing.T) {
	s := newTLSALPN01(t, Options{Addr: "127.0.0.1:0"})
	const grace = 100 * time.Millisecond
	s.lc.grace = grace
	ch := challenge(t, solve.TLSALPN01, "example.com", "tok")
	if err := s.Present(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A completed handshake proves the stalled connection was accepted
	// first and is being handled concurrently.
	if _, err := handshake(addr, "example.com", []string{"acme-tls/1"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.CleanUp(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < grace || d > grace+time.Second {
		t.Errorf("CleanUp took %v with a stalled client; want about the %v grace period", d, grace)
	}
	assertRefused(t, addr)
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("stalled connection still open after CleanUp: %v", err)
	}
}

func TestTLSALPN01Concurrent(t *testing.T) {
	ctx := context.Background()
	s := newTLSALPN01(t, Options{Addr: "127.0.0.1:0"})
	anchor := challenge(t, solve.TLSALPN01, "anchor.example.com", "anchor")
	if err := s.Present(ctx, anchor); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	const workers = 8
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			ch := challenge(t, solve.TLSALPN01, fmt.Sprintf("n%d.example.com", i), fmt.Sprintf("tok%d", i))
			for range 3 {
				if err := s.Present(ctx, ch); err != nil {
					t.Error(err)
					return
				}
				st, err := handshake(addr, ch.Identifier.Value, []string{"acme-tls/1"})
				if err != nil {
					t.Errorf("%s: %v", ch.Identifier, err)
					return
				}
				leaf := st.PeerCertificates[0]
				if !slices.Equal(leaf.DNSNames, []string{ch.Identifier.Value}) {
					t.Errorf("%s: got certificate for %v", ch.Identifier, leaf.DNSNames)
				}
				if err := s.CleanUp(ctx, ch); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := s.CleanUp(ctx, anchor); err != nil {
		t.Fatal(err)
	}
	assertRefused(t, addr)
}
