package frontdoor

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/standalone"
	"github.com/detour-acme/detour/internal/store"
)

// certCacheSize bounds the challenge certificates a Responder keeps. An
// order has at most a few hundred identifiers, and a certificate is only
// built for a record that is presented.
const certCacheSize = 256

// loadTimeout bounds reading a record from the store during a handshake.
const loadTimeout = 5 * time.Second

// Responder answers tls-alpn-01 handshakes from the records in a store. Its
// GetCertificate fits tls.Config.GetCertificate and router.Options.ACME.
// It is safe for concurrent use.
type Responder struct {
	store store.Storage
	log   *slog.Logger

	probeOnce sync.Once
	probeCert *tls.Certificate
	probeErr  error

	mu    sync.Mutex
	cache map[string]*tls.Certificate // identifier type, value and key authorization -> certificate
}

// NewResponder returns a Responder reading records from st. A nil logger
// discards diagnostics.
func NewResponder(st store.Storage, logger *slog.Logger) *Responder {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Responder{store: st, log: logger, cache: make(map[string]*tls.Certificate)}
}

// GetCertificate returns the challenge certificate (RFC 8737 §3) for the
// identifier named by hello's SNI, if a challenge for it is presented and
// has not expired, and the probe certificate for ProbeName. It refuses
// handshakes that do not offer "acme-tls/1". The store is read on each call;
// certificates are cached per key authorization.
func (r *Responder) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !slices.Contains(hello.SupportedProtos, acmez.ACMETLS1Protocol) {
		return nil, fmt.Errorf("refusing handshake for %q: %s not offered; only ACME validations are answered here", hello.ServerName, acmez.ACMETLS1Protocol)
	}
	sni := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
	if sni == ProbeName {
		return r.probe()
	}
	name := standalone.IdentifierForSNI(sni)
	if name == "" {
		return nil, errors.New("refusing tls-alpn-01 handshake without a host name in SNI")
	}
	id, err := ident.Parse(name)
	if err != nil || id.IsWildcard() {
		return nil, fmt.Errorf("refusing tls-alpn-01 handshake for SNI %q: not a valid identifier", hello.ServerName)
	}
	ctx := hello.Context()
	if ctx == nil { // a ClientHelloInfo not made by crypto/tls
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	rec, err := r.load(ctx, id)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && strings.HasSuffix(id.Value, "."+ProbeName) {
			// A probe from a Solver whose record this router cannot see:
			// answer as a router, so that Check can say which store is wrong.
			return r.probe()
		}
		r.log.Debug("refusing tls-alpn-01 handshake", "identifier", id.Value, "error", err)
		return nil, err
	}
	cert, err := r.challengeCert(id, rec.KeyAuthorization)
	if err != nil {
		return nil, err
	}
	r.log.Debug("answering tls-alpn-01 handshake", "identifier", id.Value)
	return cert, nil
}

// load reads and checks id's record.
func (r *Responder) load(ctx context.Context, id ident.Identifier) (Record, error) {
	data, err := r.store.Load(ctx, Key(id))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Record{}, fmt.Errorf("no tls-alpn-01 challenge presented for %q: %w", id.Value, err)
		}
		return Record{}, fmt.Errorf("loading tls-alpn-01 challenge for %q: %w", id.Value, err)
	}
	var rec Record
	if err := json.Unmarshal(data, &rec); err != nil {
		return Record{}, fmt.Errorf("decoding tls-alpn-01 challenge for %q: %w", id.Value, err)
	}
	switch {
	case rec.Identifier != id.Value || rec.Type != id.Type:
		return Record{}, fmt.Errorf("tls-alpn-01 challenge record %s names %s %q, not %q", Key(id), rec.Type, rec.Identifier, id.Value)
	case rec.KeyAuthorization == "":
		return Record{}, fmt.Errorf("tls-alpn-01 challenge record %s has no key authorization", Key(id))
	case !time.Now().Before(rec.Expires):
		return Record{}, fmt.Errorf("tls-alpn-01 challenge for %q expired at %s: %w", id.Value, rec.Expires.Format(time.RFC3339), fs.ErrNotExist)
	}
	return rec, nil
}

// challengeCert returns the cached challenge certificate for id and keyAuth,
// building it on first use.
func (r *Responder) challengeCert(id ident.Identifier, keyAuth string) (*tls.Certificate, error) {
	k := id.Type + "\x00" + id.Value + "\x00" + keyAuth
	r.mu.Lock()
	cert := r.cache[k]
	r.mu.Unlock()
	if cert != nil {
		return cert, nil
	}
	cert, err := acmez.TLSALPN01ChallengeCert(acme.Challenge{
		Type:             solve.TLSALPN01,
		Identifier:       acme.Identifier{Type: id.Type, Value: id.Value},
		KeyAuthorization: keyAuth,
	})
	if err != nil {
		return nil, fmt.Errorf("creating tls-alpn-01 certificate for %q: %w", id.Value, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.cache[k]; c != nil {
		return c, nil // built concurrently; keep one
	}
	if len(r.cache) >= certCacheSize {
		for old := range r.cache { // evict an arbitrary entry
			delete(r.cache, old)
			break
		}
	}
	r.cache[k] = cert
	return cert, nil
}

// probe returns the self-signed certificate for ProbeName, created once.
func (r *Responder) probe() (*tls.Certificate, error) {
	r.probeOnce.Do(func() { r.probeCert, r.probeErr = newProbeCert() })
	return r.probeCert, r.probeErr
}

// newProbeCert creates a self-signed ECDSA P-256 certificate for ProbeName.
func newProbeCert() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("creating probe key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("creating probe serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: ProbeName, Organization: []string{"Detour router"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		DNSNames:              []string{ProbeName},
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating probe certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing probe certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
