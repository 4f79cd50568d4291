package importer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/acme"
)

// testServer is the CA directory the fixtures' certificates come from.
const testServer = "https://127.0.0.1:14000/dir"

// issuer signs the fixtures' certificates.
type issuer struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pem  []byte
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &issuer{key: key, cert: cert, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf for names (the first as common name), its key, both PEM.
func (is *issuer) issue(t *testing.T, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		AuthorityKeyId: is.cert.SubjectKeyId}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.cert, &key.PublicKey, is.key)
	if err != nil {
		t.Fatal(err)
	}
	k, err := acme.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), k
}

// certbotDir builds certbot's configuration directory by hand, as certbot
// 2 lays it out.
type certbotDir struct {
	t      *testing.T
	dir    string
	is     *issuer
	acctID string
	acct   string // the account URL
	key    crypto.Signer
}

func newCertbotDir(t *testing.T) *certbotDir {
	t.Helper()
	d := &certbotDir{t: t, dir: t.TempDir(), is: newIssuer(t), acctID: "0123456789abcdef0123456789abcdef", acct: "https://127.0.0.1:14000/my-account/1"}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	d.key = key
	dir := filepath.Join(d.dir, "accounts", "127.0.0.1:14000", "dir", d.acctID)
	d.write(filepath.Join(dir, "private_key.json"), rsaJWK(key))
	d.write(filepath.Join(dir, "regr.json"), fmt.Sprintf(`{"body": {}, "uri": %q}`, d.acct))
	d.write(filepath.Join(dir, "meta.json"), `{"creation_dt": "2026-01-01T00:00:00Z", "creation_host": "test"}`)
	return d
}

func (d *certbotDir) write(file, content string) {
	d.t.Helper()
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		d.t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		d.t.Fatal(err)
	}
}

// lineage adds lineage name with versions versions of a certificate for
// names, and params as its [renewalparams] lines (after account and
// server). It returns the live leaf's PEM.
func (d *certbotDir) lineage(name string, versions int, names []string, params ...string) []byte {
	d.t.Helper()
	var leaf []byte
	for n := 1; n <= versions; n++ {
		cert, key := d.is.issue(d.t, names...)
		f := func(kind string) string {
			return filepath.Join(d.dir, "archive", name, fmt.Sprintf("%s%d.pem", kind, n))
		}
		d.write(f("cert"), string(cert))
		d.write(f("chain"), string(d.is.pem))
		d.write(f("fullchain"), string(cert)+string(d.is.pem))
		d.write(f("privkey"), string(key))
		leaf = cert
	}
	live := filepath.Join(d.dir, "live", name)
	if err := os.MkdirAll(live, 0o755); err != nil {
		d.t.Fatal(err)
	}
	for _, kind := range []string{"cert", "chain", "fullchain", "privkey"} {
		if err := os.Symlink(fmt.Sprintf("../../archive/%s/%s%d.pem", name, kind, versions), filepath.Join(live, kind+".pem")); err != nil {
			d.t.Fatal(err)
		}
	}
	conf := fmt.Sprintf("version = 2.1.0\narchive_dir = %s\ncert = %s/cert.pem\n\n[renewalparams]\naccount = %s\nserver = %s\n%s\n",
		filepath.Join(d.dir, "archive", name), live, d.acctID, testServer, strings.Join(params, "\n"))
	d.write(filepath.Join(d.dir, "renewal", name+".conf"), conf)
	return leaf
}

// rsaJWK encodes key as a private JWK, as certbot's private_key.json.
func rsaJWK(key *rsa.PrivateKey) string {
	b := func(i *big.Int) string { return base64.RawURLEncoding.EncodeToString(i.Bytes()) }
	m := map[string]string{"kty": "RSA", "n": b(key.N), "e": b(big.NewInt(int64(key.E))), "d": b(key.D),
		"p": b(key.Primes[0]), "q": b(key.Primes[1]), "dp": b(key.Precomputed.Dp), "dq": b(key.Precomputed.Dq), "qi": b(key.Precomputed.Qinv)}
	raw, _ := json.Marshal(m)
	return string(raw)
}

// ecJWK encodes key as a private JWK.
func ecJWK(key *ecdsa.PrivateKey) string {
	size := (key.Curve.Params().BitSize + 7) / 8
	pub, _ := key.PublicKey.Bytes()
	priv, _ := key.Bytes()
	e := base64.RawURLEncoding.EncodeToString
	raw, _ := json.Marshal(map[string]string{"kty": "EC", "crv": key.Curve.Params().Name, "x": e(pub[1 : 1+size]), "y": e(pub[1+size:]), "d": e(priv)})
	return string(raw)
}

// certPlan returns the plan of the certificate called name.
func certPlan(t *testing.T, p ImportPlan, name string) *CertPlan {
	t.Helper()
	for _, cp := range p.Certificates {
		if cp.Name == name {
			return cp
		}
	}
	t.Fatalf("the plan has no certificate %q", name)
	return nil
}

// wantIn fails unless s contains every one of subs.
func wantIn(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not mention %q:\n%s", what, sub, s)
		}
	}
}
