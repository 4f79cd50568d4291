package selfcheck

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/detour-acme/detour/internal/solve"
)

// startTLS accepts TLS handshakes with cfg on 127.0.0.1:0 and returns the
// port. Each connection is closed after its handshake.
func startTLS(t *testing.T, cfg *tls.Config) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveTLS(t, ln, cfg)
	return ln.Addr().(*net.TCPAddr).Port
}

// serveTLS accepts TLS handshakes with cfg on ln until the test ends. Each
// connection is closed after its handshake.
func serveTLS(t *testing.T, ln net.Listener, cfg *tls.Config) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				tc := tls.Server(c, cfg)
				_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
				_ = tc.Handshake()
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
}

// challengeCert makes the RFC 8737 certificate for id with acmez, as a
// correct responder would.
func challengeCert(t *testing.T, typ, id, keyAuth string) tls.Certificate {
	t.Helper()
	c, err := acmez.TLSALPN01ChallengeCert(acme.Challenge{
		Identifier:       acme.Identifier{Type: typ, Value: id},
		KeyAuthorization: keyAuth,
	})
	if err != nil {
		t.Fatal(err)
	}
	return *c
}

// makeCert signs tmpl with issuer, or self-signs it when issuer is nil.
func makeCert(t *testing.T, tmpl *x509.Certificate, issuer *tls.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	parent, signer := tmpl, any(key)
	if issuer != nil {
		parent, signer = issuer.Leaf, issuer.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// webCert is an ordinary web server certificate for www.site.test issued
// by a CA named R11.
func webCert(t *testing.T) tls.Certificate {
	t.Helper()
	ca := makeCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "R11"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	}, nil)
	return makeCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "www.site.test"}, DNSNames: []string{"www.site.test", "site2.test"},
	}, &ca)
}

// nonCriticalCert is a challenge certificate whose acmeIdentifier extension
// is not marked critical.
func nonCriticalCert(t *testing.T) tls.Certificate {
	t.Helper()
	sum := sha256.Sum256([]byte(testKA))
	val, err := asn1.Marshal(sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return makeCert(t, &x509.Certificate{
		DNSNames:        []string{"site.test"},
		ExtraExtensions: []pkix.Extension{{Id: oidACMEIdentifier, Value: val}},
	}, nil)
}

func TestTLSALPN01(t *testing.T) {
	resolver := startDNS(t, testZone)
	alpn := []string{acmez.ACMETLS1Protocol}
	good := challengeCert(t, "dns", "site.test", testKA)
	tests := []struct {
		name   string
		id     string // default site.test
		cfg    *tls.Config
		reason Reason // "" means the check passes
		want   []string
	}{
		{name: "correct certificate", cfg: &tls.Config{Certificates: []tls.Certificate{good}, NextProtos: alpn}},
		{name: "IPv6 fails, IPv4 answers", id: "v6.test", cfg: &tls.Config{
			Certificates: []tls.Certificate{challengeCert(t, "dns", "v6.test", testKA)}, NextProtos: alpn}},
		{
			name: "IP identifier through reverse-name SNI", id: "127.0.0.1",
			cfg: &tls.Config{
				NextProtos: alpn,
				GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
					if hello.ServerName != "1.0.0.127.in-addr.arpa" {
						return nil, errors.New("unexpected SNI " + hello.ServerName)
					}
					c := challengeCert(t, "ip", "127.0.0.1", testKA)
					return &c, nil
				},
			},
		},
		{
			name: "web server without acme-tls/1", cfg: &tls.Config{Certificates: []tls.Certificate{webCert(t)}},
			reason: ReasonProtocol,
			want: []string{"the server on site.test:", "did not negotiate acme-tls/1", "a certificate for www.site.test, site2.test issued by R11",
				"a web server owns port 443", "`detour router`", "`detour snippet tls-alpn`"},
		},
		{
			name: "self-signed certificate without acme-tls/1", cfg: &tls.Config{Certificates: []tls.Certificate{makeCert(t,
				&x509.Certificate{DNSNames: []string{"a.test", "b.test", "c.test", "d.test", "e.test"}}, nil)}},
			reason: ReasonProtocol, want: []string{"a certificate for a.test, b.test, c.test and 2 more (self-signed)"},
		},
		{
			name: "server refusing acme-tls/1", cfg: &tls.Config{Certificates: []tls.Certificate{webCert(t)}, NextProtos: []string{"h2", "http/1.1"}},
			reason: ReasonProtocol, want: []string{"refused acme-tls/1", "no application protocol", "`detour router`"},
		},
		{
			name: "responder without the challenge", cfg: &tls.Config{NextProtos: alpn,
				GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, errors.New("no challenge") }},
			reason: ReasonProtocol, want: []string{`rejected the acme-tls/1 handshake for SNI "site.test"`, "not presented"},
		},
		{
			name: "wrong key authorization", cfg: &tls.Config{
				Certificates: []tls.Certificate{challengeCert(t, "dns", "site.test", "otherToken."+testThumb)}, NextProtos: alpn},
			reason: ReasonCertificate, want: []string{"proves another key authorization", "another ACME client"},
		},
		{
			name: "certificate for another name", cfg: &tls.Config{
				Certificates: []tls.Certificate{challengeCert(t, "dns", "other.test", testKA)}, NextProtos: alpn},
			reason: ReasonCertificate, want: []string{"a certificate for other.test, not site.test", "SNI"},
		},
		{
			name: "acme-tls/1 with an ordinary certificate", cfg: &tls.Config{
				Certificates: []tls.Certificate{makeCert(t, &x509.Certificate{DNSNames: []string{"site.test"}}, nil)}, NextProtos: alpn},
			reason: ReasonCertificate, want: []string{"no acmeIdentifier extension"},
		},
		{
			name: "extension not critical", cfg: &tls.Config{Certificates: []tls.Certificate{nonCriticalCert(t)}, NextProtos: alpn},
			reason: ReasonCertificate, want: []string{"not marked critical", "RFC 8737"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := tt.id
			if id == "" {
				id = "site.test"
			}
			opts := Options{Resolver: resolver, TLSPort: startTLS(t, tt.cfg), Timeout: 2 * time.Second}
			err := TLSALPN01(t.Context(), challenge(t, solve.TLSALPN01, id), opts)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("TLSALPN01 = %v, want nil", err)
				}
				return
			}
			me := wantMismatch(t, err, tt.reason, tt.want...)
			if tt.reason == ReasonCertificate && me.Protocol != acmez.ACMETLS1Protocol {
				t.Errorf("Protocol = %q, want %q", me.Protocol, acmez.ACMETLS1Protocol)
			}
		})
	}
}

func TestTLSALPN01Connection(t *testing.T) {
	resolver := startDNS(t, testZone)
	tests := []struct {
		name   string
		id     string
		port   func(t *testing.T) int
		reason Reason
		want   []string
	}{
		{"refused", "site.test", closedPort, ReasonRefused,
			[]string{"refused for site.test:", "nothing listens on port", "standalone", "self_check = false"}},
		{"both addresses refused", "v6.test", closedPort, ReasonRefused, []string{"tried first: [::1]:"}},
		{"plain HTTP on the TLS port", "site.test", func(t *testing.T) int { return startHTTP(t, answer(404, "", "nginx")) },
			ReasonProtocol, []string{"did not answer TLS", "does not speak TLS"}},
		{"accepts and never answers", "site.test", startSilent, ReasonTimeout,
			[]string{"did not complete a TLS handshake within 200ms"}},
		{"name does not resolve", "nowhere.test", closedPort, ReasonDNS, []string{"nowhere.test does not resolve"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{Resolver: resolver, TLSPort: tt.port(t), Timeout: 200 * time.Millisecond}
			err := TLSALPN01(t.Context(), challenge(t, solve.TLSALPN01, tt.id), opts)
			wantMismatch(t, err, tt.reason, tt.want...)
		})
	}
}
