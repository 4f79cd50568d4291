package standalone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// HTTP timeouts: the CA sends one small GET; nothing legitimate is slow.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 15 * time.Second
	httpWriteTimeout      = 15 * time.Second
	httpIdleTimeout       = 30 * time.Second
	httpMaxHeaderBytes    = 16 << 10
)

// challengePrefix is the path prefix of http-01 requests (RFC 8555 §8.3).
const challengePrefix = "/.well-known/acme-challenge/"

// inUseHelpHTTP is what a user whose port 80 is taken can do instead.
const inUseHelpHTTP = "Keep that server and use the side-port, webroot or stateless path instead " +
	"(`detour snippet http` prints the configuration for it), or stop it during validation; " +
	"a firewall window helps when port 80 is free but blocked"

// HTTP01 answers http-01 challenges (RFC 8555 §8.3) on a port it binds
// itself (":80" by default) while challenges are presented.
//
// It serves GET and HEAD of /.well-known/acme-challenge/<token> with the key
// authorization as a text/plain body, but only when the request's Host
// names the identifier the token was presented for (for IP identifiers the
// CA sends the address as Host, RFC 8738 §7); every other request gets 404.
// Options.TrustForwarded and Options.ExplainNotFound adapt it to answer
// behind a local proxy (the side-port path).
type HTTP01 struct {
	log            *slog.Logger
	lc             *lifecycle
	trustForwarded bool
	explain        bool // diagnostic 404 bodies

	mu      sync.RWMutex
	entries map[httpKey]*httpEntry
}

// httpKey identifies one presented answer.
type httpKey struct {
	host  string // normalised identifier value
	token string
}

// httpEntry is a presented key authorization and how many Presents hold it.
type httpEntry struct {
	keyAuth string
	refs    int
}

var (
	_ solve.Solver = (*HTTP01)(nil)
	_ http.Handler = (*HTTP01)(nil)
)

// NewHTTP01 returns an http-01 solver. It binds nothing until the first
// Present.
func NewHTTP01(opts Options) (*HTTP01, error) {
	opts, err := opts.withDefaults(":80")
	if err != nil {
		return nil, err
	}
	s := &HTTP01{
		log:            opts.Logger,
		trustForwarded: opts.TrustForwarded,
		explain:        opts.ExplainNotFound,
		entries:        make(map[httpKey]*httpEntry),
	}
	s.lc = opts.newLifecycle(solve.HTTP01, inUseHelpHTTP, s.newServer)
	return s, nil
}

// Type returns solve.HTTP01.
func (s *HTTP01) Type() string { return solve.HTTP01 }

// Check reports whether id can be validated through this solver: wildcards
// cannot (they need dns-01), and the listen address must be bindable now,
// unless the solver already serves it.
func (s *HTTP01) Check(ctx context.Context, id ident.Identifier) error {
	if !solve.Applicable(solve.HTTP01, id) {
		return fmt.Errorf("%w: http-01 cannot validate %q; wildcard names need a dns-01 path", solve.ErrNotApplicable, id.Value)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.lc.check()
}

// Present makes the solver answer ch, binding the listen address if this is
// the first challenge presented.
func (s *HTTP01) Present(ctx context.Context, ch solve.Challenge) error {
	key, err := s.keyFor(ch)
	if err != nil {
		return err
	}
	if ch.KeyAuthorization == "" {
		return fmt.Errorf("presenting http-01 for %q: empty key authorization", ch.Identifier.Value)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.lc.acquire(); err != nil {
		return fmt.Errorf("presenting http-01 for %q: %w", ch.Identifier.Value, err)
	}
	s.mu.Lock()
	if e, ok := s.entries[key]; ok {
		e.keyAuth = ch.KeyAuthorization
		e.refs++
	} else {
		s.entries[key] = &httpEntry{keyAuth: ch.KeyAuthorization, refs: 1}
	}
	s.mu.Unlock()
	s.log.Debug("presented http-01 token", "identifier", ch.Identifier.Value, "token", ch.Token)
	return nil
}

// CleanUp stops answering ch; after the last CleanUp the port is released
// (unless a Listener was given). Cleaning up a challenge that was never
// presented does nothing.
func (s *HTTP01) CleanUp(ctx context.Context, ch solve.Challenge) error {
	key, err := s.keyFor(ch)
	if err != nil {
		return nil // Present refused it, so nothing is in place.
	}
	s.mu.Lock()
	e, ok := s.entries[key]
	if ok {
		e.refs--
		if e.refs == 0 {
			delete(s.entries, key)
		}
	}
	s.mu.Unlock()
	if !ok {
		return nil
	}
	if err := s.lc.release(ctx); err != nil {
		return fmt.Errorf("cleaning up http-01 for %q: %w", ch.Identifier.Value, err)
	}
	return nil
}

// Close stops serving and closes the listener, including a given one.
// Present fails afterwards.
func (s *HTTP01) Close() error { return s.lc.close() }

// Addr returns the address being served, or nil when the solver is not
// serving.
func (s *HTTP01) Addr() net.Addr { return s.lc.addrNow() }

// keyFor validates ch and returns its lookup key.
func (s *HTTP01) keyFor(ch solve.Challenge) (httpKey, error) {
	if ch.Type != "" && ch.Type != solve.HTTP01 {
		return httpKey{}, fmt.Errorf("presenting %s challenge with the http-01 %s solver: wrong challenge type", ch.Type, s.lc.solverName())
	}
	if !solve.Applicable(solve.HTTP01, ch.Identifier) {
		return httpKey{}, fmt.Errorf("%w: http-01 cannot validate %q", solve.ErrNotApplicable, ch.Identifier.Value)
	}
	if !solve.ValidToken(ch.Token) {
		return httpKey{}, fmt.Errorf("presenting http-01 for %q: token %q is not base64url; refusing to serve it", ch.Identifier.Value, ch.Token)
	}
	host := normalizeHost(ch.Identifier.Value)
	if host == "" {
		return httpKey{}, fmt.Errorf("presenting http-01: invalid identifier %q", ch.Identifier.Value)
	}
	return httpKey{host: host, token: ch.Token}, nil
}

// ServeHTTP answers one http-01 request: the key authorization for a
// presented token whose identifier matches the request's host (Host, or a
// forwarded host from a local proxy with Options.TrustForwarded), 404 for
// anything else. It is exported so the answers can also be mounted in
// another server.
func (s *HTTP01) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.URL.Path, challengePrefix)
	if !ok {
		s.notFound(w, r, "detour: only "+challengePrefix+"<token> is served here")
		return
	}
	valid := solve.ValidToken(token)
	if !valid && !s.explain {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	if !valid {
		s.notFound(w, r, fmt.Sprintf("detour: %q is not an ACME token", token))
		return
	}
	hosts := s.hosts(r)
	var keyAuth string
	found := false
	s.mu.RLock()
	for _, h := range hosts {
		if e, ok := s.entries[httpKey{host: h, token: token}]; ok {
			keyAuth, found = e.keyAuth, true
			break
		}
	}
	s.mu.RUnlock()
	host := r.Host
	if len(hosts) > 0 {
		host = hosts[0]
	}
	level := slog.LevelDebug
	if !found && s.explain {
		level = slog.LevelInfo
	}
	s.log.Log(r.Context(), level, "http-01 request", "remote_addr", r.RemoteAddr, "host", host, "method", r.Method, "token", token, "found", found)
	if !found {
		msg := fmt.Sprintf("detour: no challenge for token %s on host %s", token, host)
		if others := s.hostsOf(token); len(others) > 0 {
			msg += fmt.Sprintf(" (it was presented for %s: does the proxy pass the original Host header?)", strings.Join(others, ", "))
		}
		s.notFound(w, r, msg)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Length", strconv.Itoa(len(keyAuth)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte(keyAuth))
	}
}

// hostsOf lists the identifiers token is presented for.
func (s *HTTP01) hostsOf(token string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for k := range s.entries {
		if k.token == token {
			out = append(out, k.host)
		}
	}
	slices.Sort(out)
	return out
}

// notFound answers 404: with Options.ExplainNotFound a plain-text body that
// is msg, otherwise the usual short one.
func (s *HTTP01) notFound(w http.ResponseWriter, r *http.Request, msg string) {
	if !s.explain {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNotFound)
	_, _ = fmt.Fprintln(w, msg)
}

// newServer returns a fresh http.Server for one serving session.
func (s *HTTP01) newServer() runner {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if s.trustForwarded {
		srv.ConnContext = markConn
	}
	return &httpRunner{srv: srv}
}

// httpRunner adapts http.Server to runner.
type httpRunner struct{ srv *http.Server }

func (h *httpRunner) serve(ln net.Listener) error {
	if err := h.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (h *httpRunner) shutdown(ctx context.Context) error {
	if err := h.srv.Shutdown(ctx); err != nil {
		// In-flight requests outlived ctx: cut them off.
		return h.srv.Close()
	}
	return nil
}
