// Package storetest is the contract suite of Detour's storage backends:
// what store.Storage, store.Locker and store.Certs promise (and the record
// scanning the renewal code relies on), checked the same way against every
// backend — the filesystem (store.FS) and etcd (etcdstore.Store).
package storetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/store"
)

// Backend is what both backends implement and the suite checks.
type Backend interface {
	store.Storage
	store.Locker
	store.Certs
	// ScanRecords reads every record; a bad one is reported, never
	// stops the others.
	ScanRecords(ctx context.Context) (store.RecordScan, error)
	// ArchiveVersions lists the stored versions of a certificate,
	// ascending.
	ArchiveVersions(ctx context.Context, name string) ([]int, error)
	// SetAsideRecord moves a record out of the way, keeping it.
	SetAsideRecord(ctx context.Context, name string) (string, error)
}

// Harness opens backends for the suite.
type Harness struct {
	// New returns a backend on fresh, empty state.
	New func(t *testing.T) Backend
	// Peer returns another handle on b's state, as another process (FS)
	// or another node (etcd) opens it: its own locks, its own connection.
	Peer func(t *testing.T, b Backend) Backend
	// PutRawRecord writes raw, bypassing every check, where b keeps the
	// record file named file ("<name>.json" for a record; any other name
	// for junk beside them), and returns where it went as ScanRecords
	// reports it (BrokenRecord.File, RecordScan.Ignored).
	PutRawRecord func(t *testing.T, b Backend, file string, raw []byte) (where string)
}

// NewBundle returns a valid bundle for cn: a self-signed ECDSA P-256 leaf,
// a self-signed "intermediate" as the chain and the leaf's key (PKCS#8).
func NewBundle(t testing.TB, cn string) store.Bundle {
	t.Helper()
	key := newKey(t)
	return store.Bundle{
		CertPEM:  selfSigned(t, cn, key),
		ChainPEM: selfSigned(t, "Test Intermediate", newKey(t)),
		KeyPEM:   pkcs8PEM(t, key),
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generating key: %v", err)
	}
	return k
}

func selfSigned(t testing.TB, cn string, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
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

func pkcs8PEM(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("marshalling key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// SampleRecord returns a record for name with every field group set.
func SampleRecord(name string) store.Record {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return store.Record{
		Name:        name,
		Identifiers: []string{name, "www." + name},
		CA:          "https://acme.example/directory",
		Account:     "https://acme.example/acct/1",
		KeyType:     "ecdsa-p256",
		Paths:       []store.PathRef{{Name: "web", Kind: "webroot", Settings: map[string]string{"root": "/srv/www"}}},
		Version:     1,
		NotBefore:   at,
		NotAfter:    at.Add(90 * 24 * time.Hour),
		Issued:      at,
		ARI:         &store.ARIWindow{Start: at.Add(60 * 24 * time.Hour), End: at.Add(62 * 24 * time.Hour), Fetched: at},
		Last:        &store.Attempt{Time: at, OK: true, Path: "web"},
	}
}

// Run runs the whole suite against the backends h opens.
func Run(t *testing.T, h Harness) {
	t.Run("Storage", func(t *testing.T) { runStorage(t, h) })
	t.Run("Locker", func(t *testing.T) { runLocker(t, h) })
	t.Run("Certs", func(t *testing.T) { runCerts(t, h) })
	t.Run("Records", func(t *testing.T) { runRecords(t, h) })
}
