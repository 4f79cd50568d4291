package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// randomSecret returns a base64 TSIG secret of 32 random bytes.
func randomSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// update adds the records rrs (zone file lines; relative names are in
// doctor.test) on the primary with an RFC 2136 update signed with the key,
// sent from the ca namespace.
func (w *world) update(t testing.TB, rrs ...string) {
	t.Helper()
	m := new(mdns.Msg)
	m.SetUpdate(zone + ".")
	for _, s := range rrs {
		rr, err := mdns.NewRR("$ORIGIN " + zone + ".\n$TTL 1\n" + s)
		if err != nil || rr == nil {
			t.Fatalf("record %q: %v", s, err)
		}
		m.Insert([]mdns.RR{rr})
	}
	m.SetTsig(keyName+".", mdns.HmacSHA256, 300, time.Now().Unix())
	c := &mdns.Client{Net: "tcp", Timeout: 5 * time.Second, TsigSecret: map[string]string{keyName + ".": w.keySecret}}
	var r *mdns.Msg
	var err error
	w.ca.In(t, func() { r, _, err = c.Exchange(m, net.JoinHostPort(caBIND, "53")) })
	if err != nil {
		t.Fatalf("updating %s: %v", zone, err)
	}
	if r.Rcode != mdns.RcodeSuccess {
		t.Fatalf("updating %s: %s", zone, mdns.RcodeToString[r.Rcode])
	}
}

// waitResolves waits until the resolver answers name's qtype RRset with
// an answer containing want.
func (w *world) waitResolves(t testing.TB, name string, qtype uint16, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	c := &mdns.Client{Net: "udp", Timeout: 2 * time.Second}
	var last string
	for {
		m := new(mdns.Msg)
		m.SetQuestion(mdns.Fqdn(name), qtype)
		var r *mdns.Msg
		var err error
		w.ca.In(t, func() { r, _, err = c.Exchange(m, net.JoinHostPort(caResolver, "53")) })
		if err == nil {
			last = r.String()
			for _, a := range r.Answer {
				if strings.Contains(a.String(), want) {
					return
				}
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the resolver does not answer %s %s with %q:\n%s", name, mdns.TypeToString[qtype], want, last)
		}
		time.Sleep(50 * time.Millisecond) // polling the resolver: no notification exists
	}
}

// selfSigned writes a self-signed certificate for host and its key into
// dir and returns the files.
func selfSigned(t testing.TB, dir, host string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, host+".crt"), filepath.Join(dir, host+".key")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})), 0o600)
	return certFile, keyFile
}
