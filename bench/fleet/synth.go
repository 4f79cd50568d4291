package main

import (
	"context"
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
	"sync"
	"time"

	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/store/etcdstore"
)

// selfSigned returns a fresh self-signed ECDSA certificate for name, valid
// from a day ago for 90 days: a new key and serial each call, so that
// every bundle has a LiveSum of its own.
func selfSigned(name string, now time.Time) (store.Bundle, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return store.Bundle{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return store.Bundle{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(89 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return store.Bundle{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return store.Bundle{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return store.Bundle{CertPEM: certPEM, ChainPEM: certPEM,
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})}, nil
}

// synthRecord is the record of a certificate that is not due, as
// bench/agent writes it: a 90-day certificate issued 1 to 29 days ago,
// with a CA renewal window around day 60, fetched an hour ago with a
// Retry-After of 6 hours, so that neither a renewal nor an ARI poll is
// due and no network is used.
func synthRecord(name string, r *mrand.Rand, sum string, now time.Time) store.Record {
	issued := now.Add(-time.Duration(1+r.IntN(28)) * 24 * time.Hour)
	mid := issued.Add(60 * 24 * time.Hour)
	return store.Record{
		Name: name, Identifiers: []string{name}, CA: "https://acme.invalid/directory", CAName: "bench",
		Account: "https://acme.invalid/acct/1", KeyType: "ecdsa-p256",
		Paths:   []store.PathRef{{Name: "standalone-http", Kind: "standalone", Settings: map[string]string{"challenge": "http-01", "listen": "127.0.0.1:1"}}},
		Version: 1, Serial: "1", LiveSum: sum, NotBefore: issued, NotAfter: issued.Add(90 * 24 * time.Hour), Issued: issued,
		ARI: &store.ARIWindow{Start: mid.Add(-24 * time.Hour), End: mid.Add(24 * time.Hour),
			Fetched: now.Add(-time.Hour), RetryAfter: now.Add(6 * time.Hour)},
		Last: &store.Attempt{Time: issued, OK: true, Path: "standalone-http"},
	}
}

func synthName(i int) string { return fmt.Sprintf("site%05d.bench.example", i) }

// synthFS writes n certificates that are not due into a fresh state
// directory in the layout store.FS reads, one shared certificate for all.
// It is bench/agent's synthesize (a main package, so copied): the same
// records, so that the two stores decide over the same data.
func synthFS(dir string, n int, b store.Bundle, now time.Time) error {
	files := map[string][]byte{
		"cert": b.CertPEM, "chain": b.ChainPEM, "fullchain": append(append([]byte{}, b.CertPEM...), b.ChainPEM...),
		"privkey": b.KeyPEM,
	}
	for _, d := range []string{"archive", "live", "renewal", "accounts", "locks"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	sum := b.LiveSum()
	r := mrand.New(mrand.NewPCG(1, 2))
	for i := range n {
		name := synthName(i)
		arch := filepath.Join(dir, "archive", name)
		vdir := filepath.Join(arch, ".v1")
		if err := os.MkdirAll(vdir, 0o700); err != nil {
			return err
		}
		for kind, data := range files {
			if err := os.WriteFile(filepath.Join(arch, kind+"1.pem"), data, 0o600); err != nil {
				return err
			}
			if err := os.Symlink("../"+kind+"1.pem", filepath.Join(vdir, kind+".pem")); err != nil {
				return err
			}
		}
		if err := os.Symlink("../archive/"+name+"/.v1", filepath.Join(dir, "live", name)); err != nil {
			return err
		}
		data, err := json.MarshalIndent(synthRecord(name, r, sum, now), "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "renewal", name+".json"), append(data, '\n'), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// synthEtcd stores the same n certificates and records in the fleet's
// store through its own API (PutCertificate, SaveRecord), with workers
// writers at once.
func synthEtcd(ctx context.Context, st *etcdstore.Store, n int, b store.Bundle, now time.Time, workers int) error {
	sum := b.LiveSum()
	r := mrand.New(mrand.NewPCG(1, 2))
	recs := make([]store.Record, n)
	for i := range n {
		recs[i] = synthRecord(synthName(i), r, sum, now)
	}
	jobs := make(chan store.Record)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for rec := range jobs {
				if _, err := st.PutCertificate(ctx, rec.Name, b); err != nil {
					errs <- err
					return
				}
				if err := st.SaveRecord(ctx, rec); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for _, rec := range recs {
		select {
		case jobs <- rec:
		case err = <-errs:
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err != nil {
		return err
	}
	select {
	case err = <-errs:
		return err
	default:
		return nil
	}
}
