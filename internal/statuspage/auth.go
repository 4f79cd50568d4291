package statuspage

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// BasicAuth is the one user allowed in, with the bcrypt hash of the
// password (never the password itself).
type BasicAuth struct {
	User string
	Hash []byte
	// Logger records refused requests; nil discards.
	Logger *slog.Logger
}

// maxVerified bounds the verified credentials remembered.
const maxVerified = 32

// RequireBasicAuth serves h only to requests carrying a's user and a
// password matching its hash (RFC 7617); others get 401 and a challenge.
// A bcrypt comparison costs tens of milliseconds by design, so credentials
// that matched once are remembered (as a SHA-256 of user and password)
// and later requests, a Prometheus scrape every few seconds or a page's
// style sheet, are answered at once. Wrong ones are compared every time.
func RequireBasicAuth(h http.Handler, a BasicAuth) (http.Handler, error) {
	if a.User == "" || len(a.Hash) == 0 {
		return nil, errors.New("statuspage: basic auth needs a user and a bcrypt hash")
	}
	if _, err := bcrypt.Cost(a.Hash); err != nil {
		return nil, fmt.Errorf("the password hash is not a bcrypt hash: %w", err)
	}
	if a.Logger == nil {
		a.Logger = slog.New(slog.DiscardHandler)
	}
	g := &guard{h: h, a: a, ok: map[[32]byte]bool{}}
	return g, nil
}

type guard struct {
	h  http.Handler
	a  BasicAuth
	mu sync.Mutex
	ok map[[32]byte]bool
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.allowed(r) {
		g.h.ServeHTTP(w, r)
		return
	}
	g.a.Logger.WarnContext(r.Context(), "status page: refused a request without the right credentials", "remote", r.RemoteAddr, "path", r.URL.Path)
	w.Header().Set("WWW-Authenticate", `Basic realm="detour", charset="UTF-8"`)
	http.Error(w, "credentials required", http.StatusUnauthorized)
}

func (g *guard) allowed(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(user + "\x00" + pass))
	g.mu.Lock()
	known := g.ok[sum]
	g.mu.Unlock()
	if known {
		return true
	}
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte(g.a.User)) == 1
	// The hash is compared whatever the user, so that the time taken
	// does not say whether the user exists.
	passOK := bcrypt.CompareHashAndPassword(g.a.Hash, []byte(pass)) == nil
	if !userOK || !passOK {
		return false
	}
	g.mu.Lock()
	if len(g.ok) >= maxVerified {
		clear(g.ok)
	}
	g.ok[sum] = true
	g.mu.Unlock()
	return true
}

// TLSConfig returns the server side of TLS for the status listener: the
// certificate and key in certFile and keyFile (read again when the
// certificate file changes, so that a certificate Detour renews is picked
// up), and, when clientCAFile is set, a client certificate required and
// verified against the CAs it holds.
func TLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	kp := &keyPair{cert: certFile, key: keyFile}
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.get() }}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("reading the client CAs: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate; status_client_ca names the CA that issues the client certificates", clientCAFile)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// keyPair is a certificate and key loaded from files, loaded again when
// the certificate file's modification time changes.
type keyPair struct {
	cert, key string
	mu        sync.Mutex
	mod       time.Time
	pair      *tls.Certificate
}

func (k *keyPair) get() (*tls.Certificate, error) {
	fi, err := os.Stat(k.cert)
	if err != nil {
		return nil, fmt.Errorf("reading the status page's certificate: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pair != nil && fi.ModTime().Equal(k.mod) {
		return k.pair, nil
	}
	pair, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		if k.pair != nil {
			return k.pair, nil // a renewal half-way through: keep the last good one
		}
		return nil, fmt.Errorf("loading the status page's certificate %s and key %s: %w", k.cert, k.key, err)
	}
	k.pair, k.mod = &pair, fi.ModTime()
	return k.pair, nil
}
