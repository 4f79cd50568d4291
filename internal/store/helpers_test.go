package store

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"testing"
	"time"
)

// Environment variables that turn the test binary into a helper process.
const (
	helperEnv    = "DETOUR_STORE_TEST_HELPER"
	helperDirEnv = "DETOUR_STORE_TEST_DIR"
	helperLock   = "shared"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "lock":
		os.Exit(lockHelper())
	case "puts":
		os.Exit(putsHelper())
	}
	os.Exit(m.Run())
}

// lockHelper runs in a child process: it takes the lock helperLock, says
// "locked" on stdout and holds it until killed or until stdin closes.
func lockHelper() int {
	f, err := NewFS(os.Getenv(helperDirEnv), FSOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	unlock, err := f.TryLock(context.Background(), helperLock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	defer func() { _ = unlock() }()
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(w, "locked")
	if err := w.Flush(); err != nil {
		return 4
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// putsHelper runs in a child process: it stores new versions of
// helperLock's certificate in a loop, saying each version on stdout, until
// it is killed.
func putsHelper() int {
	f, err := NewFS(os.Getenv(helperDirEnv), FSOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for {
		b, err := makeBundle("example.com")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		v, err := f.PutCertificate(context.Background(), "example.com", b)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 4
		}
		if _, err := fmt.Println(v); err != nil {
			return 5
		}
	}
}

// makeBundle is newBundle without a testing.T, for helper processes.
func makeBundle(cn string) (Bundle, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Bundle{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(90 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return Bundle{}, err
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Bundle{}, err
	}
	return Bundle{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}),
	}, nil
}

// newFS returns an FS on a fresh temporary directory.
func newFS(t *testing.T) *FS {
	t.Helper()
	f, err := NewFS(t.TempDir(), FSOptions{})
	if err != nil {
		t.Fatalf("NewFS: %v", err)
	}
	return f
}

// testKey generates an ECDSA P-256 key.
func testKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generating key: %v", err)
	}
	return k
}

// selfSigned returns a PEM self-signed certificate for key.
func selfSigned(t *testing.T, cn string, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(90 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("creating certificate: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// pkcs8PEM encodes key as a PKCS#8 PEM block.
func pkcs8PEM(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("marshalling key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// newBundle returns a valid bundle for cn: a self-signed leaf, a
// self-signed "intermediate" as the chain and the leaf's key.
func newBundle(t *testing.T, cn string) Bundle {
	t.Helper()
	key := testKey(t)
	return Bundle{
		CertPEM:  selfSigned(t, cn, key),
		ChainPEM: selfSigned(t, "Test Intermediate", testKey(t)),
		KeyPEM:   pkcs8PEM(t, key),
	}
}
