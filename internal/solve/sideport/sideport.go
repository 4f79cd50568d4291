// Package sideport implements the "side port" validation path: the web
// server that owns port 80 keeps it and forwards
// /.well-known/acme-challenge/ to a local address where Detour answers
// http-01 challenges (RFC 8555 §8.3).
//
// The forward is configured once (internal/snippet prints it for nginx,
// Apache, HAProxy, Caddy, Traefik and lighttpd); afterwards Detour binds the
// side port on the first Present and releases it after the last CleanUp, the
// same lifecycle as the standalone path. A pre-bound listener may be handed
// in instead for a side port that stays open permanently.
//
// The address is a TCP host:port (127.0.0.1:8402 by default) or a Unix
// socket ("unix:/run/detour/http.sock"), created with mode 0660 and removed
// when released.
//
// Requests are matched by token and by host, as in the standalone path.
// Proxies that rewrite the Host header usually pass the original in
// X-Forwarded-Host or in the host= parameter of Forwarded (RFC 7239 §5.3);
// those headers are honoured only on connections from a loopback address or
// the Unix socket, that is from the local proxy itself.
package sideport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/standalone"
)

// DefaultAddr is the side port used when Options.Addr is empty.
const DefaultAddr = "127.0.0.1:8402"

// unixPrefix marks a Unix socket address in Options.Addr.
const unixPrefix = "unix:"

// socketMode is the permission of a Unix socket Detour creates: the web
// server's group may connect, nobody else.
const socketMode = 0o660

// HTTP timeouts: the proxy sends one small GET; nothing legitimate is slow.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 15 * time.Second
	idleTimeout       = 30 * time.Second
	maxHeaderBytes    = 16 << 10
	shutdownTimeout   = 2 * time.Second
)

// Options configures a side-port solver.
type Options struct {
	// Logger receives diagnostics; requests are logged at debug level,
	// requests for unknown tokens at info level. Nil discards everything.
	Logger *slog.Logger
	// Addr is where Detour answers while challenges are presented: a TCP
	// host:port (DefaultAddr when empty) or "unix:/path/to.sock". The web
	// server's forward must point at the same address.
	Addr string
	// Listener, when set, is a pre-bound listener (socket activation, a
	// side port kept open permanently, tests). Addr is then ignored; the
	// solver serves on it from the first Present until Close, and closes it
	// only in Close.
	Listener net.Listener
	// IgnoreForwarded turns off X-Forwarded-Host and Forwarded host=
	// matching. By default (false) those headers are honoured on
	// connections from loopback or the Unix socket, so a proxy that rewrites
	// Host still works. (The zero value is the safe, working default; a
	// field named TrustForwarded could not default to true.)
	IgnoreForwarded bool
}

var discardLogger = slog.New(slog.DiscardHandler)

// errClosed is returned by Present and Check after Close.
var errClosed = errors.New("side-port solver is closed")

// Solver answers http-01 challenges on the side port. It is also an
// http.Handler, so the answers can be mounted in another server.
type Solver struct {
	log            *slog.Logger
	network        string // "tcp" or "unix"
	address        string // host:port or socket path
	given          net.Listener
	trustForwarded bool

	lmu    sync.Mutex // guards the listener lifecycle below
	refs   int
	cur    *session
	closed bool

	mu      sync.RWMutex
	entries map[key]*entry
}

// key identifies one presented answer.
type key struct {
	host  string // normalised identifier value
	token string
}

// entry is a presented key authorization and how many Presents hold it.
type entry struct {
	keyAuth string
	refs    int
}

// session is the http.Server serving one listener.
type session struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

var (
	_ solve.Solver = (*Solver)(nil)
	_ http.Handler = (*Solver)(nil)
)

// New returns a side-port solver. It binds nothing until the first Present.
func New(opts Options) (*Solver, error) {
	s := &Solver{
		log:            opts.Logger,
		given:          opts.Listener,
		trustForwarded: !opts.IgnoreForwarded,
		entries:        make(map[key]*entry),
	}
	if s.log == nil {
		s.log = discardLogger
	}
	if s.given != nil {
		return s, nil
	}
	addr := opts.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	network, address, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	s.network, s.address = network, address
	return s, nil
}

// ParseAddr splits a side-port address into a network ("tcp" or "unix") and
// an address for net.Listen or net.Dial. It accepts "host:port" and
// "unix:/absolute/path".
func ParseAddr(addr string) (network, address string, err error) {
	if p, ok := strings.CutPrefix(addr, unixPrefix); ok {
		if !filepath.IsAbs(p) {
			return "", "", fmt.Errorf("invalid side-port address %q: a Unix socket needs an absolute path, such as \"unix:/run/detour/http.sock\"", addr)
		}
		return "unix", filepath.Clean(p), nil
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return "", "", fmt.Errorf("invalid side-port address %q: want host:port, such as %q, or \"unix:/run/detour/http.sock\"", addr, DefaultAddr)
	}
	return "tcp", addr, nil
}

// Type returns solve.HTTP01.
func (s *Solver) Type() string { return solve.HTTP01 }

// Check reports whether id can be validated through the side port:
// wildcards cannot (they need dns-01), and the address must be bindable now,
// unless the solver already serves it or was given a listener. Check cannot
// see whether the web server forwards to the side port; the self-check
// proves that after Present.
func (s *Solver) Check(ctx context.Context, id ident.Identifier) error {
	if !solve.Applicable(solve.HTTP01, id) {
		return fmt.Errorf("%w: http-01 cannot validate %q; wildcard names need a dns-01 path", solve.ErrNotApplicable, id.Value)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.closed {
		return errClosed
	}
	if s.given != nil || s.cur != nil {
		return nil
	}
	ln, err := s.listen()
	if err != nil {
		return err
	}
	if err := ln.Close(); err != nil {
		return fmt.Errorf("releasing test listener on %s: %w", s.addrText(), err)
	}
	return nil
}

// Present makes the solver answer ch, binding the side port if this is the
// first challenge presented.
func (s *Solver) Present(ctx context.Context, ch solve.Challenge) error {
	k, err := keyFor(ch)
	if err != nil {
		return err
	}
	if ch.KeyAuthorization == "" {
		return fmt.Errorf("presenting http-01 for %q: empty key authorization", ch.Identifier.Value)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.acquire(); err != nil {
		return fmt.Errorf("presenting http-01 for %q: %w", ch.Identifier.Value, err)
	}
	s.mu.Lock()
	if e, ok := s.entries[k]; ok {
		e.keyAuth = ch.KeyAuthorization
		e.refs++
	} else {
		s.entries[k] = &entry{keyAuth: ch.KeyAuthorization, refs: 1}
	}
	s.mu.Unlock()
	s.log.Debug("presented http-01 token", "identifier", ch.Identifier.Value, "token", ch.Token)
	return nil
}

// CleanUp stops answering ch; after the last CleanUp the side port is
// released (unless a Listener was given). Cleaning up a challenge that was
// never presented does nothing.
func (s *Solver) CleanUp(ctx context.Context, ch solve.Challenge) error {
	k, err := keyFor(ch)
	if err != nil {
		return nil // Present refused it, so nothing is in place.
	}
	s.mu.Lock()
	e, ok := s.entries[k]
	if ok {
		e.refs--
		if e.refs == 0 {
			delete(s.entries, k)
		}
	}
	s.mu.Unlock()
	if !ok {
		return nil
	}
	if err := s.release(ctx); err != nil {
		return fmt.Errorf("cleaning up http-01 for %q: %w", ch.Identifier.Value, err)
	}
	return nil
}

// Close stops serving and closes the listener, including a given one.
// Present fails afterwards.
func (s *Solver) Close() error {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.refs = 0
	if s.cur != nil {
		return s.stop(context.Background())
	}
	if s.given != nil {
		if err := s.given.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("closing listener %s: %w", s.given.Addr(), err)
		}
	}
	return nil
}

// Addr returns the address being served, or nil when the solver is not
// serving.
func (s *Solver) Addr() net.Addr {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.cur == nil {
		return nil
	}
	return s.cur.ln.Addr()
}

// keyFor validates ch and returns its lookup key.
func keyFor(ch solve.Challenge) (key, error) {
	if ch.Type != "" && ch.Type != solve.HTTP01 {
		return key{}, fmt.Errorf("presenting %s challenge with the http-01 side-port solver: wrong challenge type", ch.Type)
	}
	if !solve.Applicable(solve.HTTP01, ch.Identifier) {
		return key{}, fmt.Errorf("%w: http-01 cannot validate %q", solve.ErrNotApplicable, ch.Identifier.Value)
	}
	if !solve.ValidToken(ch.Token) {
		return key{}, fmt.Errorf("presenting http-01 for %q: token %q is not base64url; refusing to serve it", ch.Identifier.Value, ch.Token)
	}
	host := standalone.NormalizeHost(ch.Identifier.Value)
	if host == "" {
		return key{}, fmt.Errorf("presenting http-01: invalid identifier %q", ch.Identifier.Value)
	}
	return key{host: host, token: ch.Token}, nil
}

// acquire makes sure the side port is served and counts one more user.
func (s *Solver) acquire() error {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.closed {
		return errClosed
	}
	if s.cur == nil {
		ln := s.given
		if ln == nil {
			var err error
			if ln, err = s.listen(); err != nil {
				return err
			}
		}
		s.start(ln)
	}
	s.refs++
	return nil
}

// release counts one user less; the last one stops serving and frees the
// address, unless the listener was given.
func (s *Solver) release(ctx context.Context) error {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.refs == 0 {
		return nil
	}
	s.refs--
	if s.refs > 0 || s.given != nil || s.cur == nil {
		return nil
	}
	return s.stop(ctx)
}

// start serves ln in a new goroutine. s.lmu is held.
func (s *Solver) start(ln net.Listener) {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnContext:       markConn,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	sess := &session{srv: srv, ln: ln, done: make(chan struct{})}
	s.cur = sess
	s.log.Info("serving challenges on the side port", "challenge", solve.HTTP01, "addr", ln.Addr().String())
	go func() {
		defer close(sess.done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serving challenges stopped", "challenge", solve.HTTP01, "addr", ln.Addr().String(), "error", err)
		}
	}()
}

// stop shuts the current session down and waits for it. s.lmu is held.
func (s *Solver) stop(ctx context.Context) error {
	sess := s.cur
	s.cur = nil
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := sess.srv.Shutdown(ctx)
	if err != nil {
		// In-flight requests outlived the grace period: cut them off.
		err = sess.srv.Close()
	}
	<-sess.done
	s.log.Info("stopped serving challenges on the side port", "challenge", solve.HTTP01, "addr", sess.ln.Addr().String())
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("closing listener %s: %w", sess.ln.Addr(), err)
	}
	return nil
}

// addrText is the configured address as the user wrote it.
func (s *Solver) addrText() string {
	if s.network == "unix" {
		return unixPrefix + s.address
	}
	return s.address
}

// listen binds the configured address. A Unix socket gets mode 0660; a
// stale socket file left by a process that died is replaced.
func (s *Solver) listen() (net.Listener, error) {
	ln, err := net.Listen(s.network, s.address)
	if err != nil && s.network == "unix" && errors.Is(err, syscall.EADDRINUSE) && staleSocket(s.address) {
		s.log.Info("removing stale side-port socket", "path", s.address)
		if rerr := os.Remove(s.address); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return nil, fmt.Errorf("removing stale socket %s: %w", s.address, rerr)
		}
		ln, err = net.Listen(s.network, s.address)
	}
	if err != nil {
		return nil, s.explainBind(err)
	}
	if s.network == "unix" {
		if err := os.Chmod(s.address, socketMode); err != nil {
			ln.Close()
			return nil, fmt.Errorf("setting mode %o on socket %s: %w", socketMode, s.address, err)
		}
	}
	return ln, nil
}

// staleSocket reports whether path is a Unix socket nobody listens on.
func staleSocket(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket {
		return false
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// explainBind turns a bind failure into a message that says what to change.
func (s *Solver) explainBind(err error) error {
	addr := s.addrText()
	switch {
	case s.network == "unix" && errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("binding side port %s: %w: the directory %s does not exist; create it (RuntimeDirectory=detour in the systemd unit does) or choose another socket path", addr, err, filepath.Dir(s.address))
	case s.network == "unix" && errors.Is(err, syscall.EACCES):
		return fmt.Errorf("binding side port %s: %w: Detour may not create files in %s; make the directory writable by Detour's user or choose another socket path", addr, err, filepath.Dir(s.address))
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("binding side port %s: %w: ports below 1024 need root or CAP_NET_BIND_SERVICE; the side port needs neither, so choose a port above 1024 such as %s", addr, err, DefaultAddr)
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("binding side port %s: %w: something else already listens there (another Detour?); choose another side-port address and point the web server's forward at it (`detour snippet http` prints it)", addr, err)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("binding side port %s: %w: the address is not on this host; use a local address such as %s", addr, err, DefaultAddr)
	}
	return fmt.Errorf("binding side port %s: %w", addr, err)
}
