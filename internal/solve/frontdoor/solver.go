package frontdoor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/mholt/acmez/v3"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
)

// Defaults of Options.
const (
	DefaultRouterAddr = "127.0.0.1:443"
	DefaultTTL        = 10 * time.Minute
)

const (
	// checkTimeout bounds one probe handshake.
	checkTimeout = 5 * time.Second
	// checkValid is how long a successful probe is trusted, so that an
	// order with many identifiers probes the router once.
	checkValid = time.Minute
	// cleanupTimeout bounds removing the probe record.
	cleanupTimeout = 5 * time.Second
)

// idPeACMEIdentifier is the id-pe-acmeIdentifier extension (RFC 8737 §6.1).
var idPeACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// Options configures a Solver.
type Options struct {
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// Store is the state directory shared with the router. Required.
	Store store.Storage
	// RouterAddr is where the router listens, as dialled by Check. Default
	// DefaultRouterAddr.
	RouterAddr string
	// TTL is how long a presented challenge is served if CleanUp never
	// runs (a crash). Default DefaultTTL.
	TTL time.Duration
}

// Solver presents tls-alpn-01 challenges to a Detour router through the
// store. It is safe for concurrent use.
type Solver struct {
	log  *slog.Logger
	st   store.Storage
	addr string
	ttl  time.Duration

	mu      sync.Mutex
	checked time.Time // last successful probe
}

var _ solve.Solver = (*Solver)(nil)

// New returns a front-door Solver.
func New(opts Options) (*Solver, error) {
	if opts.Store == nil {
		return nil, errors.New("creating front-door solver: no store; the router reads challenges from the state directory")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RouterAddr == "" {
		opts.RouterAddr = DefaultRouterAddr
	}
	if _, _, err := net.SplitHostPort(opts.RouterAddr); err != nil {
		return nil, fmt.Errorf("creating front-door solver: router address %q: want host:port such as %q", opts.RouterAddr, DefaultRouterAddr)
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.TTL < 0 {
		return nil, fmt.Errorf("creating front-door solver: negative TTL %s", opts.TTL)
	}
	return &Solver{log: opts.Logger, st: opts.Store, addr: opts.RouterAddr, ttl: opts.TTL}, nil
}

// Type returns solve.TLSALPN01.
func (s *Solver) Type() string { return solve.TLSALPN01 }

// Check reports whether the front door can validate id now: id must not be
// a wildcard, and a Detour router must answer on the router address and read
// this solver's store. It stores a probe record under a random name below
// ProbeName, asks the router for it with an acme-tls/1 handshake and checks
// the certificate carries the record's key authorization. A success is
// trusted for a minute.
func (s *Solver) Check(ctx context.Context, id ident.Identifier) error {
	if !solve.Applicable(solve.TLSALPN01, id) {
		return fmt.Errorf("%w: tls-alpn-01 cannot validate %q; wildcard names need a dns-01 path", solve.ErrNotApplicable, id.Value)
	}
	s.mu.Lock()
	fresh := !s.checked.IsZero() && time.Since(s.checked) < checkValid
	s.mu.Unlock()
	if fresh {
		return nil
	}
	if err := s.probe(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	s.checked = time.Now()
	s.mu.Unlock()
	return nil
}

// probe runs one probe handshake against the router.
func (s *Solver) probe(ctx context.Context) error {
	nonce, err := newNonce()
	if err != nil {
		return fmt.Errorf("probing router: %w", err)
	}
	keyAuth, err := newNonce()
	if err != nil {
		return fmt.Errorf("probing router: %w", err)
	}
	probeID := ident.Identifier{Type: ident.TypeDNS, Value: nonce + "." + ProbeName}
	if err := s.put(ctx, probeID, "probe."+keyAuth, time.Now().Add(checkValid)); err != nil {
		return fmt.Errorf("probing router: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if err := s.st.Delete(cctx, Key(probeID)); err != nil {
			s.log.Warn("removing router probe record", "path", Key(probeID), "error", err)
		}
	}()

	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return s.noRouter(err)
	}
	defer raw.Close()
	tc := tls.Client(raw, &tls.Config{
		ServerName:         probeID.Value,
		NextProtos:         []string{acmez.ACMETLS1Protocol},
		InsecureSkipVerify: true, // a challenge certificate is self-signed; checked below
		MinVersion:         tls.VersionTLS12,
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return s.notRouter(fmt.Errorf("TLS handshake: %w", err))
	}
	st := tc.ConnectionState()
	if st.NegotiatedProtocol != acmez.ACMETLS1Protocol || len(st.PeerCertificates) == 0 {
		return s.notRouter(fmt.Errorf("the server did not negotiate %s", acmez.ACMETLS1Protocol))
	}
	leaf := st.PeerCertificates[0]
	switch {
	case slices.Equal(leaf.DNSNames, []string{probeID.Value}) && hasKeyAuth(leaf, "probe."+keyAuth):
		s.log.Debug("router answers", "addr", s.addr)
		return nil
	case slices.Contains(leaf.DNSNames, ProbeName):
		return fmt.Errorf("the Detour router on %s does not see the challenges this command stores: start `detour router` with the same --state-dir as `detour issue`, as a user that can read it", s.addr)
	}
	return s.notRouter(errors.New("its certificate is not a Detour probe answer"))
}

// noRouter is Check's error when nothing accepts connections.
func (s *Solver) noRouter(err error) error {
	return fmt.Errorf("no Detour router answers on %s (%v): start `detour router --listen :%s --backend 127.0.0.1:8443`, and move your HTTPS server to the backend address",
		s.addr, err, port(s.addr))
}

// notRouter is Check's error when something else answers.
func (s *Solver) notRouter(err error) error {
	return fmt.Errorf("the server on %s is not a Detour router (%v): stop it or move it to a local port such as 127.0.0.1:8443, then start `detour router --listen :%s --backend 127.0.0.1:8443` in its place",
		s.addr, err, port(s.addr))
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// hasKeyAuth reports whether cert carries the critical acmeIdentifier
// extension with the digest of keyAuth (RFC 8737 §3).
func hasKeyAuth(cert *x509.Certificate, keyAuth string) bool {
	sum := sha256.Sum256([]byte(keyAuth))
	want, err := asn1.Marshal(sum[:])
	if err != nil {
		return false
	}
	for _, e := range cert.Extensions {
		if e.Id.Equal(idPeACMEIdentifier) {
			return e.Critical && bytes.Equal(e.Value, want)
		}
	}
	return false
}

// Present stores ch's record for the router, to be served until CleanUp or
// the TTL ends.
func (s *Solver) Present(ctx context.Context, ch solve.Challenge) error {
	id, err := s.identifier(ch)
	if err != nil {
		return err
	}
	if ch.KeyAuthorization == "" {
		return fmt.Errorf("presenting tls-alpn-01 for %q: empty key authorization", id.Value)
	}
	if err := s.put(ctx, id, ch.KeyAuthorization, time.Now().Add(s.ttl)); err != nil {
		return fmt.Errorf("presenting tls-alpn-01 for %q: %w", id.Value, err)
	}
	s.log.Debug("presented tls-alpn-01 challenge to the router", "identifier", id.Value, "path", Key(id))
	return nil
}

// CleanUp removes ch's record, unless it has since been replaced by another
// challenge for the same identifier (an issuer running concurrently).
func (s *Solver) CleanUp(ctx context.Context, ch solve.Challenge) error {
	id, err := s.identifier(ch)
	if err != nil {
		return nil // Present refused it, so nothing is in place.
	}
	key := Key(id)
	data, err := s.st.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cleaning up tls-alpn-01 for %q: %w", id.Value, err)
	}
	var rec Record
	if json.Unmarshal(data, &rec) == nil && rec.KeyAuthorization != ch.KeyAuthorization {
		return nil
	}
	if err := s.st.Delete(ctx, key); err != nil {
		return fmt.Errorf("cleaning up tls-alpn-01 for %q: %w", id.Value, err)
	}
	return nil
}

// identifier validates ch and returns its normalised identifier.
func (s *Solver) identifier(ch solve.Challenge) (ident.Identifier, error) {
	if ch.Type != "" && ch.Type != solve.TLSALPN01 {
		return ident.Identifier{}, fmt.Errorf("presenting %s challenge with the front-door solver: it answers tls-alpn-01 only", ch.Type)
	}
	id, err := ident.Parse(ch.Identifier.Value)
	if err != nil {
		return ident.Identifier{}, fmt.Errorf("presenting tls-alpn-01: %w", err)
	}
	if id != ch.Identifier {
		return ident.Identifier{}, fmt.Errorf("presenting tls-alpn-01: identifier %s %q is not normalised (want %s %q)", ch.Identifier.Type, ch.Identifier.Value, id.Type, id.Value)
	}
	if !solve.Applicable(solve.TLSALPN01, id) {
		return ident.Identifier{}, fmt.Errorf("%w: tls-alpn-01 cannot validate %q; wildcard names need a dns-01 path", solve.ErrNotApplicable, id.Value)
	}
	return id, nil
}

// put stores a record for id.
func (s *Solver) put(ctx context.Context, id ident.Identifier, keyAuth string, expires time.Time) error {
	data, err := json.Marshal(Record{Identifier: id.Value, Type: id.Type, KeyAuthorization: keyAuth, Expires: expires.UTC()})
	if err != nil {
		return fmt.Errorf("encoding challenge record: %w", err)
	}
	if err := s.st.Store(ctx, Key(id), data); err != nil {
		return fmt.Errorf("storing challenge record: %w", err)
	}
	return nil
}
