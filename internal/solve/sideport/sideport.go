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
// the Unix socket, that is from the local proxy itself. Requests for unknown
// tokens get a 404 whose body names the token and host.
//
// The solver is a standalone.HTTP01 configured for this: the side port's
// defaults, forwarded hosts, diagnostic 404s and its own bind-error advice.
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
	"syscall"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/standalone"
)

// DefaultAddr is the side port used when Options.Addr is empty.
const DefaultAddr = "127.0.0.1:8402"

// unixPrefix marks a Unix socket address in Options.Addr.
const unixPrefix = "unix:"

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

// Solver answers http-01 challenges on the side port. It is also an
// http.Handler, so the answers can be mounted in another server.
type Solver struct {
	h       *standalone.HTTP01
	network string // "tcp" or "unix"; "" with a given listener
	address string // host:port or socket path
}

var (
	_ solve.Solver = (*Solver)(nil)
	_ http.Handler = (*Solver)(nil)
)

// New returns a side-port solver. It binds nothing until the first Present.
func New(opts Options) (*Solver, error) {
	s := &Solver{}
	addr := ""
	if opts.Listener == nil {
		addr = opts.Addr
		if addr == "" {
			addr = DefaultAddr
		}
		network, address, err := ParseAddr(addr)
		if err != nil {
			return nil, err
		}
		s.network, s.address = network, address
		addr = s.addrText()
	}
	h, err := standalone.NewHTTP01(standalone.Options{
		Logger:          opts.Logger,
		Addr:            addr,
		Listener:        opts.Listener,
		Name:            "side-port",
		BindError:       s.explainBind,
		TrustForwarded:  !opts.IgnoreForwarded,
		ExplainNotFound: true,
	})
	if err != nil {
		return nil, fmt.Errorf("configuring the side port: %w", err)
	}
	s.h = h
	return s, nil
}

// ParseAddr splits a side-port address into a network ("tcp" or "unix") and
// an address for net.Listen or net.Dial. It accepts "host:port" and
// "unix:/absolute/path".
func ParseAddr(addr string) (network, address string, err error) {
	network, address, ok := standalone.SplitAddr(addr)
	switch {
	case ok:
		return network, address, nil
	case strings.HasPrefix(addr, unixPrefix):
		return "", "", fmt.Errorf("invalid side-port address %q: a Unix socket needs an absolute path, such as \"unix:/run/detour/http.sock\"", addr)
	}
	return "", "", fmt.Errorf("invalid side-port address %q: want host:port, such as %q, or \"unix:/run/detour/http.sock\"", addr, DefaultAddr)
}

// Type returns solve.HTTP01.
func (s *Solver) Type() string { return s.h.Type() }

// Check reports whether id can be validated through the side port:
// wildcards cannot (they need dns-01), and the address must be bindable now,
// unless the solver already serves it or was given a listener. Check cannot
// see whether the web server forwards to the side port; the self-check
// proves that after Present.
func (s *Solver) Check(ctx context.Context, id ident.Identifier) error {
	return s.h.Check(ctx, id)
}

// Present makes the solver answer ch, binding the side port if this is the
// first challenge presented.
func (s *Solver) Present(ctx context.Context, ch solve.Challenge) error {
	return s.h.Present(ctx, ch)
}

// CleanUp stops answering ch; after the last CleanUp the side port is
// released (unless a Listener was given). Cleaning up a challenge that was
// never presented does nothing.
func (s *Solver) CleanUp(ctx context.Context, ch solve.Challenge) error {
	return s.h.CleanUp(ctx, ch)
}

// Close stops serving and closes the listener, including a given one.
// Present fails afterwards.
func (s *Solver) Close() error { return s.h.Close() }

// Addr returns the address being served, or nil when the solver is not
// serving.
func (s *Solver) Addr() net.Addr { return s.h.Addr() }

// ServeHTTP answers one http-01 request: the key authorization for a
// presented token whose identifier matches the request's host (Host, or a
// forwarded host from the local proxy). Unknown tokens get 404 with a body
// that names the token and host, to help diagnose a forward that rewrites
// the Host header or points at the wrong Detour.
func (s *Solver) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.h.ServeHTTP(w, r) }

// addrText is the configured address as the user wrote it.
func (s *Solver) addrText() string {
	if s.network == "unix" {
		return unixPrefix + s.address
	}
	return s.address
}

// explainBind turns a bind failure into a message that says what to change.
// It replaces the standalone path's advice, which is about ports 80 and 443.
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
