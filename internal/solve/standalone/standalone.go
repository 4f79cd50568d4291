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
	"os"
	"path/filepath"
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
	// Addr is the address bound while challenges are presented: a TCP
	// host:port, or "unix:/absolute/path" for a Unix socket behind a local
	// proxy (created with mode 0660, a stale socket left by a dead process
	// replaced, removed when released). The default is ":80" for HTTP01
	// and ":443" for TLSALPN01; public CAs only connect to those ports.
	Addr string
	// Listener, when set, is a pre-bound listener (socket activation, a port
	// handed in by the caller, tests). Addr is then ignored; the solver
	// serves on Listener from the first Present until Close, answering
	// nothing useful while it holds no challenge. The solver closes Listener
	// only in Close.
	Listener net.Listener

	// Name is what errors and logs call the solver, such as "side-port"
	// for a layer built on this one. Empty means "standalone".
	Name string
	// BindError, when set, turns a failure to bind Addr into the error
	// Check and Present return, in place of the standalone path's advice
	// (free the port or pick another validation path), which does not fit
	// a layer that binds some other local address.
	BindError func(err error) error
	// TrustForwarded makes HTTP01 also match a request's host against
	// X-Forwarded-Host and the host= parameter of Forwarded (RFC 7239
	// §5.3), on connections from a loopback address or a Unix socket only,
	// that is from a proxy on this host that rewrites Host. Off by default:
	// on port 80 the CA connects directly. TLSALPN01 ignores it.
	TrustForwarded bool
	// ExplainNotFound makes HTTP01 answer a request it holds no challenge
	// for with a 404 whose plain-text body names the token and host asked
	// for (and the hosts the token was presented for), and log it at info
	// level, so a forward that rewrites Host or points at the wrong Detour
	// is easy to spot. TLSALPN01 ignores it.
	ExplainNotFound bool
}

// shutdownTimeout bounds how long releasing the port waits for in-flight
// requests before cutting them off.
const shutdownTimeout = 2 * time.Second

// unixPrefix marks a Unix socket address in Options.Addr.
const unixPrefix = "unix:"

// socketMode is the permission of a Unix socket the solver creates: the
// proxy's group may connect, nobody else.
const socketMode = 0o660

// defaultName is what messages call a solver whose Options.Name is empty.
const defaultName = "standalone"

// errClosed is returned by Check and Present after Close, prefixed with the
// solver's name.
var errClosed = errors.New("solver is closed")

var discardLogger = slog.New(slog.DiscardHandler)

// withDefaults validates opts and fills in the logger, name and address.
func (o Options) withDefaults(defaultAddr string) (Options, error) {
	if o.Logger == nil {
		o.Logger = discardLogger
	}
	if o.Name == "" {
		o.Name = defaultName
	} else {
		o.Logger = o.Logger.With("solver", o.Name)
	}
	if o.Listener != nil {
		return o, nil
	}
	if o.Addr == "" {
		o.Addr = defaultAddr
	}
	if p, ok := strings.CutPrefix(o.Addr, unixPrefix); ok && !filepath.IsAbs(p) {
		return o, fmt.Errorf("invalid listen address %q: a Unix socket needs an absolute path, such as \"unix:/run/detour/http.sock\"", o.Addr)
	}
	if _, _, ok := SplitAddr(o.Addr); !ok {
		return o, fmt.Errorf("invalid listen address %q: want host:port, such as %q or \"192.0.2.1%s\"", o.Addr, defaultAddr, defaultAddr)
	}
	return o, nil
}

// SplitAddr splits an Options.Addr value into the network and address for
// net.Listen: ("unix", the cleaned path) for "unix:/absolute/path", ("tcp",
// addr) for a host:port. ok is false for anything else, including a Unix
// socket with a relative path. Layers with an address option of their own
// (the side port) use it so that every path reads addresses the same way.
func SplitAddr(addr string) (network, address string, ok bool) {
	if p, isUnix := strings.CutPrefix(addr, unixPrefix); isUnix {
		if !filepath.IsAbs(p) {
			return "", "", false
		}
		return "unix", filepath.Clean(p), true
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return "", "", false
	}
	return "tcp", addr, true
}

// newLifecycle returns the listener lifecycle for validated opts.
func (o Options) newLifecycle(typ, inUseHelp string, newRunner func() runner) *lifecycle {
	l := &lifecycle{
		log:       o.Logger,
		typ:       typ,
		name:      o.Name,
		addr:      o.Addr,
		given:     o.Listener,
		newRunner: newRunner,
		inUseHelp: inUseHelp,
		bindError: o.BindError,
	}
	if o.Listener == nil {
		l.network, l.address, _ = SplitAddr(o.Addr) // validated by withDefaults
	}
	return l
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
	name      string // solver name, for messages; "" means defaultName
	addr      string // as configured, for messages
	network   string // "tcp" or "unix"; "" means "tcp"
	address   string // for net.Listen
	given     net.Listener
	newRunner func() runner
	inUseHelp string            // what to do when addr is taken
	bindError func(error) error // replaces explainBind when set
	grace     time.Duration     // how long releasing waits for in-flight connections; 0 means shutdownTimeout

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
		return l.closedErr()
	}
	if l.cur == nil {
		ln := l.given
		if ln == nil {
			var err error
			if ln, err = l.listen(); err != nil {
				return err
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
		return l.closedErr()
	}
	if l.given != nil || l.cur != nil {
		return nil
	}
	ln, err := l.listen()
	if err != nil {
		return err
	}
	if err := ln.Close(); err != nil {
		return fmt.Errorf("releasing test listener on %s: %w", l.addr, err)
	}
	return nil
}

// closedErr is errClosed prefixed with the solver's name.
func (l *lifecycle) closedErr() error {
	return fmt.Errorf("%s %w", l.solverName(), errClosed)
}

// solverName is what messages call the solver.
func (l *lifecycle) solverName() string {
	if l.name == "" {
		return defaultName
	}
	return l.name
}

// listen binds the configured address. A Unix socket gets socketMode; a
// stale socket file left by a process that died is replaced.
func (l *lifecycle) listen() (net.Listener, error) {
	network := l.network
	if network == "" {
		network = "tcp"
	}
	ln, err := net.Listen(network, l.address)
	if err != nil && network == "unix" && errors.Is(err, syscall.EADDRINUSE) && staleSocket(l.address) {
		l.log.Info("removing stale socket", "path", l.address)
		if rerr := os.Remove(l.address); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return nil, fmt.Errorf("removing stale socket %s: %w", l.address, rerr)
		}
		ln, err = net.Listen(network, l.address)
	}
	if err != nil {
		if l.bindError != nil {
			return nil, l.bindError(err)
		}
		return nil, l.explainBind(err)
	}
	if network == "unix" {
		if err := os.Chmod(l.address, socketMode); err != nil {
			ln.Close()
			return nil, fmt.Errorf("setting mode %o on socket %s: %w", socketMode, l.address, err)
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
func (l *lifecycle) explainBind(err error) error {
	unix := l.network == "unix"
	switch {
	case unix && errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("binding %s for %s: %w: the directory %s does not exist; create it or choose another socket path", l.addr, l.typ, err, filepath.Dir(l.address))
	case unix && errors.Is(err, syscall.EACCES):
		return fmt.Errorf("binding %s for %s: %w: Detour may not create files in %s; make the directory writable by Detour's user or choose another socket path", l.addr, l.typ, err, filepath.Dir(l.address))
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
