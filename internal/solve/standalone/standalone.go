// Package standalone implements the "standalone" validation paths: Detour
// binds the validation port itself, for hosts where nothing else listens on
// it.
//
//   - HTTP01 answers http-01 (RFC 8555 §8.3) on port 80: GET or HEAD of
//     /.well-known/acme-challenge/<token> returns the key authorization.
//   - TLSALPN01 answers tls-alpn-01 (RFC 8737) on port 443: a TLS handshake
//     offering the "acme-tls/1" protocol gets a self-signed certificate
//     carrying the id-pe-acmeIdentifier extension (RFC 8737 §3). IP
//     identifiers are matched through their reverse-DNS SNI (RFC 8738 §6).
//
// Both solvers bind their address on the first Present and release it after
// the last CleanUp, so the port is held only while the CA validates. A
// pre-bound listener (socket activation, tests) may be handed in instead; it
// is then served from the first Present until Close.
package standalone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configures a standalone solver.
type Options struct {
	// Logger receives diagnostics; the CA's requests are logged at debug
	// level. Nil discards everything.
	Logger *slog.Logger
	// Addr is the host:port bound while challenges are presented. The
	// default is ":80" for HTTP01 and ":443" for TLSALPN01; public CAs only
	// connect to those ports.
	Addr string
	// Listener, when set, is a pre-bound listener (socket activation, a port
	// handed in by the caller, tests). Addr is then ignored; the solver
	// serves on Listener from the first Present until Close, answering
	// nothing useful while it holds no challenge. The solver closes Listener
	// only in Close.
	Listener net.Listener
}

// shutdownTimeout bounds how long releasing the port waits for in-flight
// requests before cutting them off.
const shutdownTimeout = 2 * time.Second

// errClosed is returned by Present after Close.
var errClosed = errors.New("standalone solver is closed")

var discardLogger = slog.New(slog.DiscardHandler)

// withDefaults validates opts and fills in the logger and address.
func (o Options) withDefaults(defaultAddr string) (Options, error) {
	if o.Logger == nil {
		o.Logger = discardLogger
	}
	if o.Listener != nil {
		return o, nil
	}
	if o.Addr == "" {
		o.Addr = defaultAddr
	}
	if _, port, err := net.SplitHostPort(o.Addr); err != nil || port == "" {
		return o, fmt.Errorf("invalid listen address %q: want host:port, such as %q or \"192.0.2.1%s\"", o.Addr, defaultAddr, defaultAddr)
	}
	return o, nil
}

// runner is one serving session on a listener: an http.Server or a
// tlsServer. A runner is used once.
type runner interface {
	// serve blocks until the runner is shut down (returning nil) or the
	// listener fails.
	serve(ln net.Listener) error
	// shutdown closes the listener and waits for in-flight connections
	// until ctx is done, then cuts them off.
	shutdown(ctx context.Context) error
}

// session is a runner serving on a listener.
type session struct {
	r    runner
	ln   net.Listener
	done chan struct{}
}

// lifecycle binds the listener on the first acquire and releases it after
// the last release (Addr mode), or serves a given listener from the first
// acquire until close. It is shared by both solvers.
type lifecycle struct {
	log       *slog.Logger
	typ       string // challenge type, for messages
	addr      string
	given     net.Listener
	newRunner func() runner
	inUseHelp string        // what to do when addr is taken
	grace     time.Duration // how long releasing waits for in-flight connections; 0 means shutdownTimeout

	mu     sync.Mutex
	refs   int
	cur    *session
	closed bool
}

// acquire makes sure the listener is served and counts one more user.
func (l *lifecycle) acquire() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errClosed
	}
	if l.cur == nil {
		ln := l.given
		if ln == nil {
			var err error
			ln, err = net.Listen("tcp", l.addr)
			if err != nil {
				return l.explainBind(err)
			}
		}
		l.start(ln)
	}
	l.refs++
	return nil
}

// start serves ln in a new goroutine. l.mu is held.
func (l *lifecycle) start(ln net.Listener) {
	s := &session{r: l.newRunner(), ln: ln, done: make(chan struct{})}
	l.cur = s
	l.log.Info("serving challenges", "challenge", l.typ, "addr", ln.Addr().String())
	go func() {
		defer close(s.done)
		if err := s.r.serve(ln); err != nil {
			l.log.Error("serving challenges stopped", "challenge", l.typ, "addr", ln.Addr().String(), "error", err)
		}
	}()
}

// release counts one user less; the last one in Addr mode stops serving and
// frees the port.
func (l *lifecycle) release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refs == 0 {
		return nil
	}
	l.refs--
	if l.refs > 0 || l.given != nil || l.cur == nil {
		return nil
	}
	return l.stop(ctx)
}

// stop shuts the current session down and waits for it. l.mu is held.
func (l *lifecycle) stop(ctx context.Context) error {
	s := l.cur
	l.cur = nil
	grace := l.grace
	if grace <= 0 {
		grace = shutdownTimeout
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	err := s.r.shutdown(ctx)
	<-s.done
	l.log.Info("stopped serving challenges", "challenge", l.typ, "addr", s.ln.Addr().String())
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("closing listener %s: %w", s.ln.Addr(), err)
	}
	return nil
}

// close stops serving for good and closes the listener, given or bound.
func (l *lifecycle) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	l.refs = 0
	if l.cur != nil {
		return l.stop(context.Background())
	}
	if l.given != nil {
		if err := l.given.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("closing listener %s: %w", l.given.Addr(), err)
		}
	}
	return nil
}

// addrNow returns the address being served, or nil.
func (l *lifecycle) addrNow() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return nil
	}
	return l.cur.ln.Addr()
}

// check reports whether the port can be served: it passes when already
// serving or given a listener, and otherwise binds the address and releases
// it at once.
func (l *lifecycle) check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errClosed
	}
	if l.given != nil || l.cur != nil {
		return nil
	}
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return l.explainBind(err)
	}
	if err := ln.Close(); err != nil {
		return fmt.Errorf("releasing test listener on %s: %w", l.addr, err)
	}
	return nil
}

// explainBind turns a bind failure into a message that says what to change.
func (l *lifecycle) explainBind(err error) error {
	switch {
	case errors.Is(err, syscall.EACCES):
		hint := "binding it needs permission"
		if _, p, perr := net.SplitHostPort(l.addr); perr == nil {
			if n, nerr := strconv.Atoi(p); nerr == nil && n < 1024 {
				hint = "ports below 1024 need root or the CAP_NET_BIND_SERVICE capability"
			}
		}
		return fmt.Errorf("binding %s for %s: %w: %s; grant it with `setcap cap_net_bind_service=+ep $(which detour)`, or with AmbientCapabilities=CAP_NET_BIND_SERVICE in the systemd unit", l.addr, l.typ, err, hint)
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("binding %s for %s: %w: something already listens on it (a web server such as nginx?); the standalone path needs the port free. %s", l.addr, l.typ, err, l.inUseHelp)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("binding %s for %s: %w: the address is not on this host; set the listen address to one of this host's addresses, or leave the host part empty", l.addr, l.typ, err)
	}
	return fmt.Errorf("binding %s for %s: %w", l.addr, l.typ, err)
}

// normalizeHost reduces an HTTP Host header, an SNI value or an identifier
// value to the form identifiers are compared in: no port, no IPv6 brackets,
// lower case, no trailing dot, canonical IP text. It returns "" for values
// that cannot name an identifier (an IP with a zone).
func normalizeHost(h string) string {
	h = strings.TrimSpace(h)
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	} else if len(h) >= 2 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if ip, err := netip.ParseAddr(h); err == nil {
		if ip.Zone() != "" {
			return ""
		}
		return ip.Unmap().String()
	}
	return h
}
