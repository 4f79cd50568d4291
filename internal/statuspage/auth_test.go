package statuspage

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestRequireBasicAuth: only the user with the right password gets the
// page; the others get 401 and a challenge.
func TestRequireBasicAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("right password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("page")) })
	h, err := RequireBasicAuth(ok, BasicAuth{User: "ops", Hash: hash})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		user, pass string
		set        bool
		code       int
	}{
		{"none", "", "", false, 401},
		{"wrong password", "ops", "wrong", true, 401},
		{"wrong user", "root", "right password", true, 401},
		{"empty password", "ops", "", true, 401},
		{"right", "ops", "right password", true, 200},
		{"right again (remembered)", "ops", "right password", true, 200},
		{"wrong after right", "ops", "right passwordX", true, 401},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", "/", nil)
		if tt.set {
			req.SetBasicAuth(tt.user, tt.pass)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.code {
			t.Errorf("%s: %d, want %d", tt.name, rec.Code, tt.code)
		}
		if tt.code == 401 && rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without a challenge", tt.name)
		}
		if tt.code == 401 && rec.Body.String() == "page" {
			t.Errorf("%s: the page was served", tt.name)
		}
	}
	if _, err := RequireBasicAuth(ok, BasicAuth{User: "ops", Hash: []byte("right password")}); err == nil {
		t.Error("a password given as the hash was accepted")
	}
}

// TestTLSClientCertificate: with a client CA, the listener serves only a
// client that presents a certificate that CA issued.
func TestTLSClientCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "clients CA", true)
	writePEM(t, filepath.Join(dir, "clients.pem"), "CERTIFICATE", ca.Raw)
	server, serverKey := newCert(t, ca, caKey, "127.0.0.1", false)
	writePEM(t, filepath.Join(dir, "server.pem"), "CERTIFICATE", server.Raw)
	writeKey(t, filepath.Join(dir, "server.key"), serverKey)
	client, clientKey := newCert(t, ca, caKey, "ops", false)
	stranger, strangerKey := newCert(t, nil, nil, "stranger", false)

	cfg, err := TLSConfig(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), filepath.Join(dir, "clients.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("page")) }),
		ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.Serve(tls.NewListener(ln, cfg)) }()
	defer srv.Close()

	roots := x509.NewCertPool()
	roots.AddCert(ca)
	get := func(certs ...tls.Certificate) error {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}}
		resp, err := c.Get("https://" + ln.Addr().String() + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := get(); err == nil {
		t.Error("a client without a certificate was served")
	}
	if err := get(tls.Certificate{Certificate: [][]byte{stranger.Raw}, PrivateKey: strangerKey}); err == nil {
		t.Error("a client with a certificate of another CA was served")
	}
	if err := get(tls.Certificate{Certificate: [][]byte{client.Raw}, PrivateKey: clientKey}); err != nil {
		t.Errorf("the client with a certificate of the clients' CA: %v", err)
	}
	if _, err := TLSConfig(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), filepath.Join(dir, "server.key")); err == nil {
		t.Error("a client CA file without a certificate was accepted")
	}
}

// newCert issues a certificate for name, signed by parent (self-signed
// when parent is nil).
func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: isCA, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t *testing.T, file string, k *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, file, "PRIVATE KEY", der)
}
