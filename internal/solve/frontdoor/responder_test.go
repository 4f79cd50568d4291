package frontdoor_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/frontdoor"
)

func selfSignedFor(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestResponder(t *testing.T) {
	ctx := context.Background()
	fs := newFS(t)
	s, _ := frontdoor.New(frontdoor.Options{Store: fs})
	for _, name := range []string{"www.example.com", "192.0.2.1"} {
		ch := solve.Challenge{Type: solve.TLSALPN01, Identifier: mustID(t, name), Token: "t", KeyAuthorization: "t.k"}
		if err := s.Present(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	// An expired record, as left by an issuer that crashed.
	expired, _ := json.Marshal(frontdoor.Record{Identifier: "old.example.com", Type: "dns", KeyAuthorization: "t.k", Expires: time.Now().Add(-time.Second)})
	if err := fs.Store(ctx, frontdoor.Key(mustID(t, "old.example.com")), expired); err != nil {
		t.Fatal(err)
	}
	// A record whose content names another identifier.
	if err := fs.Store(ctx, frontdoor.Key(mustID(t, "evil.example.com")), []byte(`{"identifier":"www.example.com","type":"dns","key_authorization":"x","expires":"2999-01-01T00:00:00Z"}`)); err != nil {
		t.Fatal(err)
	}

	r := frontdoor.NewResponder(fs, nil)
	acme := []string{"acme-tls/1"}
	tests := []struct {
		name    string
		sni     string
		protos  []string
		dnsName string // expected in the certificate
		ip      string
		errLike string
	}{
		{name: "dns", sni: "www.example.com", protos: acme, dnsName: "www.example.com"},
		{name: "dns upper case, trailing dot", sni: "WWW.Example.com.", protos: acme, dnsName: "www.example.com"},
		{name: "ip", sni: "1.2.0.192.in-addr.arpa", protos: acme, ip: "192.0.2.1"},
		{name: "probe", sni: frontdoor.ProbeName, protos: acme, dnsName: frontdoor.ProbeName},
		{name: "probe of another store", sni: "abc." + frontdoor.ProbeName, protos: acme, dnsName: frontdoor.ProbeName},
		{name: "no acme-tls/1", sni: "www.example.com", protos: []string{"h2"}, errLike: "not offered"},
		{name: "not presented", sni: "none.example.com", protos: acme, errLike: "no tls-alpn-01 challenge"},
		{name: "expired", sni: "old.example.com", protos: acme, errLike: "expired"},
		{name: "mismatched record", sni: "evil.example.com", protos: acme, errLike: "names dns"},
		{name: "no sni", sni: "", protos: acme, errLike: "without a host name"},
		{name: "literal ip sni", sni: "192.0.2.1", protos: acme, errLike: "without a host name"},
		{name: "wildcard sni", sni: "*.example.com", protos: acme, errLike: "not a valid identifier"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := r.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni, SupportedProtos: tt.protos})
			if tt.errLike != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errLike) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.errLike)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(cert.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			if tt.dnsName != "" && (len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != tt.dnsName) {
				t.Errorf("DNS names = %v, want [%s]", leaf.DNSNames, tt.dnsName)
			}
			if tt.ip != "" && (len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != tt.ip) {
				t.Errorf("IP addresses = %v, want [%s]", leaf.IPAddresses, tt.ip)
			}
		})
	}

	// Certificates are built once per key authorization.
	hello := &tls.ClientHelloInfo{ServerName: "www.example.com", SupportedProtos: acme}
	c1, err1 := r.GetCertificate(hello)
	c2, err2 := r.GetCertificate(hello)
	if err1 != nil || err2 != nil || c1 != c2 {
		t.Errorf("second call built a new certificate (%v, %v)", err1, err2)
	}
}
