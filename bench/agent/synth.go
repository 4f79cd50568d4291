package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/detour-acme/detour/internal/store"
)

// synthesize writes n certificates that are not due into a fresh state
// directory, in the layout store.FS reads (archive/<name>/ with its .v1
// directory, live/<name> pointing at it, renewal/<name>.json), and returns
// their names. One self-signed certificate is shared by all: the decision
// reads the records and checks each live pair (the serial is the
// record's), and the agent loads a certificate only to poll ARI,
// which none needs for hours.
func synthesize(dir string, n int, now time.Time) ([]string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench.example"},
		DNSNames: []string{"bench.example"}, NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(89 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	files := map[string][]byte{
		"cert": certPEM, "chain": certPEM, "fullchain": append(append([]byte{}, certPEM...), certPEM...),
		"privkey": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	for _, d := range []string{"archive", "live", "renewal", "accounts", "locks"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	sum := store.Bundle{CertPEM: files["cert"], KeyPEM: files["privkey"]}.LiveSum()
	r := mrand.New(mrand.NewPCG(1, 2))
	names := make([]string, n)
	for i := range n {
		name := fmt.Sprintf("site%05d.bench.example", i)
		names[i] = name
		arch := filepath.Join(dir, "archive", name)
		vdir := filepath.Join(arch, ".v1")
		if err := os.MkdirAll(vdir, 0o700); err != nil {
			return nil, err
		}
		for kind, data := range files {
			if err := os.WriteFile(filepath.Join(arch, kind+"1.pem"), data, 0o600); err != nil {
				return nil, err
			}
			if err := os.Symlink("../"+kind+"1.pem", filepath.Join(vdir, kind+".pem")); err != nil {
				return nil, err
			}
		}
		if err := os.Symlink("../archive/"+name+"/.v1", filepath.Join(dir, "live", name)); err != nil {
			return nil, err
		}
		// Issued between 1 and 29 days ago, 90-day certificates: none is
		// due (a third of 90 days is left after day 60). The CA's window
		// was fetched an hour ago and may be asked again in 6 hours.
		issued := now.Add(-time.Duration(1+r.IntN(28)) * 24 * time.Hour)
		mid := issued.Add(60 * 24 * time.Hour)
		rec := store.Record{
			Name: name, Identifiers: []string{name}, CA: "https://acme.invalid/directory", CAName: "bench",
			Account: "https://acme.invalid/acct/1", KeyType: "ecdsa-p256",
			Paths:   []store.PathRef{{Name: "standalone-http", Kind: "standalone", Settings: map[string]string{"challenge": "http-01", "listen": "127.0.0.1:1"}}},
			Version: 1, Serial: "1", LiveSum: sum, NotBefore: issued, NotAfter: issued.Add(90 * 24 * time.Hour), Issued: issued,
			ARI: &store.ARIWindow{Start: mid.Add(-24 * time.Hour), End: mid.Add(24 * time.Hour),
				Fetched: now.Add(-time.Hour), RetryAfter: now.Add(6 * time.Hour)},
			Last: &store.Attempt{Time: issued, OK: true, Path: "standalone-http"},
		}
		data, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "renewal", name+".json"), append(data, '\n'), 0o600); err != nil {
			return nil, err
		}
	}
	return names, nil
}
