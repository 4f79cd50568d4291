// Package acmedns is the HTTP API of an acme-dns compatible server
// (github.com/joohoi/acme-dns), run by `detour dns-server` next to Detour's
// authoritative DNS responder (package dnsserver) for a delegated zone such
// as auth.example.net.
//
// A domain owner registers once (POST /register), creates one CNAME
//
//	_acme-challenge.example.com. CNAME <subdomain>.auth.example.net.
//
// and from then on any ACME client with an acme-dns plug-in (lego,
// certbot-dns-acmedns, acme.sh, Detour's own acme-dns path) answers dns-01
// challenges (RFC 8555 §8.4) by POSTing the TXT value to /update: the CA's
// resolver follows the CNAME (RFC 1034 §3.6.2) to this server's zone.
//
// The API mirrors acme-dns's request and response shapes and status codes,
// which existing clients depend on:
//
//	POST /register  optional body {"allowfrom": ["192.0.2.0/24"]}
//	                201 {"username","password","fulldomain","subdomain","allowfrom"}
//	                400 {"error": "malformed_json_payload" | "invalid_allowfrom_cidr"}
//	POST /update    headers X-Api-User, X-Api-Key; body {"subdomain","txt"}
//	                200 {"txt": "<value>"}
//	                400 {"error": "bad_txt"}  (not exactly 43 base64url characters)
//	                401 {"error": "forbidden"} (credentials, subdomain or source address)
//	GET  /health    200
//
// Beyond acme-dns: requests over the per-source rate limit get 429
// {"error": "rate_limited"}, bodies over MaxBodyBytes 413
// {"error": "request_too_large"}, and storage failures 500
// {"error": "db_error"}.
//
// Differences from acme-dns, on purpose:
//
//   - Any number of TXT values per subdomain (up to Options.MaxTXT), each
//     served for Options.TXTLifetime (default one hour) after its last
//     update, then dropped. acme-dns keeps exactly the two most recent values
//     forever; that breaks a certificate listing a name and its wildcard
//     together with a second order running at once, and leaves stale values
//     in the zone. An hour is far longer than any CA takes to validate after
//     the client says the record is ready, and short enough that nothing
//     lingers.
//   - The source address is always the TCP peer: no header is trusted
//     (acme-dns's use_header), so allowfrom cannot be bypassed by a forged
//     X-Forwarded-For.
//
// Passwords are stored only as bcrypt hashes. Accounts, with their live TXT
// values, are kept one JSON file per account in a store.Storage (see
// account.go for the layout), written atomically, so registrations and
// unexpired values survive a restart.
//
// Several Servers may share one Storage (etcd, for a highly available
// `detour dns-server` on several hosts): when it implements KeyWatcher,
// each Server follows the registrations, updates and removals made through
// the others and serves their TXT values too, so that any of them answers
// the API and DNS (see shared.go).
package acmedns

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/crypto/bcrypt"

	"github.com/detour-acme/detour/internal/dnsserver"
	"github.com/detour-acme/detour/internal/ratelimit"
	"github.com/detour-acme/detour/internal/store"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultTXTLifetime  = time.Hour
	DefaultMaxTXT       = 20
	DefaultRateLimit    = 5  // requests per second per source, /register and /update together
	DefaultRateBurst    = 20 // requests in a burst per source
	DefaultMaxBodyBytes = 16 << 10
)

// Rate limiter parameters.
const (
	// maxSources bounds the limiter's memory; sources seen once the table
	// is full share one overflow bucket.
	maxSources = 1 << 14
	// sweepInterval is how often buckets that have refilled are forgotten.
	sweepInterval = time.Minute
)

// HTTP server timeouts.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 16 << 10
	shutdownTimeout   = 5 * time.Second
)

// Options configures a Server.
type Options struct {
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
	// Storage keeps the accounts. Required. When it also implements
	// KeyWatcher (a Storage other Servers share, such as etcdstore.Store),
	// the Server follows their writes until the ctx given to New ends:
	// that ctx must then last as long as the Server. When it implements
	// Modifier, updates go through it.
	Storage store.Storage
	// DNS is the authoritative responder the TXT values are served from.
	// Required; it should serve Zone.
	DNS *dnsserver.Server
	// Zone is the delegated zone, e.g. "auth.example.net"; each account's
	// name is <subdomain>.<Zone>. Required.
	Zone string
	// TXTLifetime is how long a TXT value is served after its last update.
	// 0 means DefaultTXTLifetime.
	TXTLifetime time.Duration
	// MaxTXT bounds the live TXT values of one subdomain; an update beyond
	// it drops the value that expires first. 0 means DefaultMaxTXT.
	MaxTXT int
	// RateLimit is the number of /register and /update requests per second
	// accepted from one source. 0 means DefaultRateLimit; negative disables
	// the limit.
	RateLimit float64
	// RateBurst is the bucket size of the rate limit. 0 means
	// DefaultRateBurst.
	RateBurst int
	// MaxBodyBytes bounds request bodies. 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// DisableRegistration removes POST /register (404), as acme-dns's
	// disable_registration does; accounts are then made with Register.
	DisableRegistration bool
	// BcryptCost is the bcrypt work factor of new password hashes. 0 means
	// bcrypt.DefaultCost; tests may lower it to bcrypt.MinCost.
	BcryptCost int
	// Now is the clock of TXT expiry; nil means the DNS server's clock.
	Now func() time.Time
}

// Server is the acme-dns API. It is an http.Handler and is safe for
// concurrent use.
type Server struct {
	log      *slog.Logger
	st       store.Storage
	mod      Modifier // st, when it implements Modifier
	shared   bool     // st implements KeyWatcher: other Servers write to it
	dns      *dnsserver.Server
	zone     string // FQDN, lower case, trailing dot
	lifetime time.Duration
	maxTXT   int
	maxBody  int64
	cost     int
	now      func() time.Time
	limit    *ratelimit.Limiter // nil when disabled
	hashSem  chan struct{}
	mux      *http.ServeMux

	dummyOnce sync.Once
	dummy     []byte // see dummyHash

	mu       sync.RWMutex
	accounts map[string]*account // by user name
}

// New loads the stored accounts, puts their unexpired TXT values into the
// DNS server, and returns the API. With a shared Storage (KeyWatcher) it
// starts following the other Servers' writes first, so that none made
// while it loads is missed, and goes on until ctx ends.
func New(ctx context.Context, opts Options) (*Server, error) {
	switch {
	case opts.Storage == nil:
		return nil, errors.New("creating the acme-dns API: no storage given (Options.Storage is required)")
	case opts.DNS == nil:
		return nil, errors.New("creating the acme-dns API: no DNS server given (Options.DNS is required)")
	}
	zone, err := canonicalZone(opts.Zone)
	if err != nil {
		return nil, fmt.Errorf("creating the acme-dns API: %w", err)
	}
	s := &Server{
		log: opts.Logger, st: opts.Storage, dns: opts.DNS, zone: zone,
		lifetime: opts.TXTLifetime, maxTXT: opts.MaxTXT, maxBody: opts.MaxBodyBytes,
		cost: opts.BcryptCost, now: opts.Now,
		hashSem:  make(chan struct{}, max(1, runtime.GOMAXPROCS(0))),
		accounts: make(map[string]*account),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.lifetime <= 0 {
		s.lifetime = DefaultTXTLifetime
	}
	if s.maxTXT <= 0 {
		s.maxTXT = DefaultMaxTXT
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.cost == 0 {
		s.cost = bcrypt.DefaultCost
	}
	if s.cost < bcrypt.MinCost || s.cost > bcrypt.MaxCost {
		return nil, fmt.Errorf("creating the acme-dns API: bcrypt cost %d is outside %d-%d", s.cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	if s.now == nil {
		s.now = s.dns.Now
	}
	if opts.RateLimit >= 0 {
		rate, burst := opts.RateLimit, opts.RateBurst
		if rate == 0 {
			rate = DefaultRateLimit
		}
		if burst <= 0 {
			burst = max(DefaultRateBurst, int(rate))
		}
		s.limit = ratelimit.New(ratelimit.Options{
			Rate:       rate,
			Burst:      burst,
			MaxSources: maxSources,
			SweepEvery: sweepInterval,
			Now:        s.now,
		})
	}
	s.mod, _ = s.st.(Modifier)
	var keys <-chan string
	wctx, stop := context.WithCancel(ctx) // the watch's; stopped unless followed
	following := false
	defer func() {
		if !following {
			stop()
		}
	}()
	if w, ok := s.st.(KeyWatcher); ok {
		s.shared = true
		if keys, err = w.WatchKeys(wctx, strings.TrimSuffix(accountsPrefix, "/")); err != nil {
			return nil, fmt.Errorf("following the shared acme-dns accounts: %w", err)
		}
	}
	accts, err := loadAccounts(ctx, s.st)
	if err != nil {
		return nil, err
	}
	now := s.now()
	restored := 0
	for _, a := range accts {
		s.accounts[a.Username] = a
		for _, t := range a.live(now) {
			s.dns.AddTXT(s.fulldomain(a), t.Value, t.Expires)
			restored++
		}
	}
	s.log.Info("acme-dns accounts loaded", "accounts", len(accts), "txt_values", restored, "zone", s.zone, "shared", s.shared)
	if keys != nil {
		following = true
		go s.follow(wctx, keys) // ends with ctx, as the watch does
	}

	s.mux = http.NewServeMux()
	if !opts.DisableRegistration {
		s.mux.HandleFunc("POST /register", s.handleRegister)
	}
	s.mux.HandleFunc("POST /update", s.handleUpdate)
	s.mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	return s, nil
}

// canonicalZone checks a zone name and returns it lower case with a trailing
// dot.
func canonicalZone(z string) (string, error) {
	if z == "" {
		return "", errors.New("no zone given: name the delegated zone, e.g. auth.example.net")
	}
	fq := z
	if fq[len(fq)-1] != '.' {
		fq += "."
	}
	if _, ok := dns.IsDomainName(fq); !ok || fq == "." {
		return "", fmt.Errorf("zone %q is not a domain name; write e.g. auth.example.net", z)
	}
	return dns.CanonicalName(fq), nil
}

// TXTLifetime returns how long an updated TXT value is served.
func (s *Server) TXTLifetime() time.Duration { return s.lifetime }

// Zone returns the served zone, with a trailing dot.
func (s *Server) Zone() string { return s.zone }

// fulldomain returns the account's name in the zone, with a trailing dot.
func (s *Server) fulldomain(a *account) string { return a.Subdomain + "." + s.zone }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Serve answers the API on ln until ctx is cancelled, over TLS when tlsConf
// is non-nil (its certificate, or GetCertificate, must be set). It closes ln
// and returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener, tlsConf *tls.Config) error {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if tlsConf != nil {
		tlsConf = tlsConf.Clone()
		if tlsConf.MinVersion == 0 {
			tlsConf.MinVersion = tls.VersionTLS12
		}
		tlsConf.NextProtos = []string{"h2", "http/1.1"}
		srv.TLSConfig = tlsConf
		ln = tls.NewListener(ln, tlsConf)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("acme-dns API serving", "address", ln.Addr().String(), "tls", tlsConf != nil)
	select {
	case err := <-errc:
		return fmt.Errorf("serving the acme-dns API: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving the acme-dns API: %w", err)
	}
	s.log.Info("acme-dns API stopped")
	return nil
}
