// Package router is Detour's front door: it owns port 443, answers ACME
// tls-alpn-01 validations itself (RFC 8737) and passes every other TLS
// connection, byte for byte, to the HTTPS server that moved to a local port.
//
// For each connection the router peeks the ClientHello (RFC 8446 §4.1.2)
// without consuming it: the records are read into a pooled buffer, bounded
// by Options.MaxHello and Options.PeekTimeout, and parsed by a small parser
// for the server_name (RFC 6066 §3) and ALPN (RFC 7301) extensions. Then:
//
//   - ALPN offers "acme-tls/1" and Options.ACME is set: TLS is terminated
//     here over a connection that replays the peeked bytes, the certificate
//     comes from Options.ACME, and the connection is closed after the
//     handshake (RFC 8737 §3).
//   - otherwise the SNI picks a Route (exact name, longest wildcard,
//     default); the router connects to its backend, writes an optional
//     PROXY protocol v2 header and the peeked bytes, and copies both ways.
//     A half-close (FIN) in one direction is passed on as one.
//   - anything that is not a TLS ClientHello (plain HTTP, a PROXY header
//     sent by the client, garbage, a hello that is too large or too slow) is
//     logged at debug level and closed. It is never forwarded: a default
//     backend that trusts PROXY headers must not receive one forged by a
//     client, and a backend that speaks only TLS gains nothing from junk.
//
// Connections still sending their ClientHello are bounded, so that clients
// that send part of one (or nothing) and wait cannot take every file
// descriptor: Options.MaxPeekPerSource per IPv4 address or IPv6 /64, and
// Options.FDReserve descriptors kept free by closing the ones that have
// waited longest (guard.go).
//
// On Linux, connections are served by event loops of the router's own (one
// per four CPUs; see loop_linux.go): a loop accepts from a TCP listener,
// reads the ClientHello, connects to a local backend and copies both ways,
// so that an idle connection costs no goroutine, no timer and no buffer,
// and a busy one costs one read and one write per message.
// Answering acme-tls/1 and dialing a backend that is remote or named by a
// host name run on a goroutine, and the connection then returns to a loop.
// Elsewhere, and for listeners or connections of other types, each
// connection has a goroutine per copy direction (copy.go). Reload swaps
// the routing table atomically; connections in flight keep the backend
// they were given.
//
// The choices above were measured against HAProxy and nginx stream with the
// harness in bench/router (CPU per new connection, per keep-alive request,
// per GiB); see its README.
package router

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// acmeTLS1 is the ALPN protocol of tls-alpn-01 (RFC 8737 §6.2).
const acmeTLS1 = "acme-tls/1"

// acmeHandshakeTimeout bounds a locally answered tls-alpn-01 handshake.
const acmeHandshakeTimeout = 10 * time.Second

// Defaults of Options.
const (
	DefaultPeekTimeout  = 5 * time.Second
	DefaultMaxHello     = 16 << 10
	DefaultDialTimeout  = 5 * time.Second
	DefaultDrainTimeout = 10 * time.Second
)

// ACMEResponder supplies tls-alpn-01 challenge certificates.
// frontdoor.Responder implements it.
type ACMEResponder interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// Options configures a Router.
type Options struct {
	// Logger receives start, stop and backend failures (rate limited) at
	// info/warn level, the start and end of each episode of connections
	// closed by MaxPeekPerSource or FDReserve (once each, not per
	// connection), and per-connection diagnostics at debug level. Nil
	// discards everything.
	Logger *slog.Logger
	// ACME answers connections whose ALPN offers "acme-tls/1". Nil passes
	// them through like any other connection.
	ACME ACMEResponder
	// PeekTimeout bounds reading the whole ClientHello, so that a client
	// sending one byte a second is cut off. Default DefaultPeekTimeout.
	PeekTimeout time.Duration
	// MaxHello bounds the bytes of the ClientHello, record headers included;
	// it may span several TLS records. Default DefaultMaxHello (16 KiB);
	// at least 1 KiB.
	MaxHello int
	// DialTimeout bounds connecting to a backend. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// DrainTimeout is the grace period at shutdown: when Serve's context is
	// cancelled the listener closes at once, connections in flight may go
	// on for this long, and those still open then are closed. Default
	// DefaultDrainTimeout.
	DrainTimeout time.Duration
	// MaxPeekPerSource bounds the connections from one source (an IPv4
	// address, or an IPv6 /64) that are still sending their ClientHello:
	// one more is closed as soon as it is accepted (Stats.OverSource).
	// Connections past their ClientHello do not count, so many clients
	// behind one NAT address are not limited by how many connections they
	// keep open. Default DefaultMaxPeekPerSource (64); negative: no limit.
	// Clients with an address of another kind (a Unix socket) are not
	// limited.
	MaxPeekPerSource int
	// FDReserve is the number of file descriptors kept free for new
	// clients and their backends, below the process's RLIMIT_NOFILE read
	// by New: when a connection is accepted with its descriptor within
	// FDReserve of the limit, the two connections that have waited longest
	// for their ClientHello are closed, and when accepting fails for want
	// of descriptors (EMFILE, ENFILE) up to FDReserve of them are
	// (Stats.Evicted). Default DefaultFDReserve (256), and at most a
	// quarter of the limit; negative: none kept, and nothing closed. No
	// effect where there is no RLIMIT_NOFILE.
	FDReserve int
}

// Stats counts connections since the Router was created.
type Stats struct {
	Accepted uint64 // accepted from a listener
	Routed   uint64 // passed through to a backend
	ACME     uint64 // answered locally with acme-tls/1 (handshake completed)
	Rejected uint64 // closed before routing: not TLS, malformed, too large or too slow
	NoRoute  uint64 // a ClientHello no route matched, with no default route
	Failed   uint64 // backend unreachable, or a failed acme-tls/1 handshake
	// OverSource counts connections closed as soon as they were accepted:
	// their source had Options.MaxPeekPerSource connections sending their
	// ClientHello already. They are counted in Accepted, never in Active.
	OverSource uint64
	// Evicted counts connections closed while sending their ClientHello,
	// to keep Options.FDReserve descriptors free.
	Evicted uint64
	Active  int64 // open now
	Peeking int64 // open now and still sending their ClientHello
}

// Router routes TLS connections by their ClientHello. It is safe for
// concurrent use; Serve may run on several listeners at once.
type Router struct {
	log     *slog.Logger
	opts    Options
	acmeCfg *tls.Config
	dialer  net.Dialer // TCP keep-alive on, Go's default
	// localDialer is for loopback and Unix backends: no keep-alive probes
	// (four setsockopt calls per connection saved), since a local peer
	// cannot vanish without its kernel closing the connection.
	localDialer net.Dialer
	table       atomic.Pointer[Table]
	bufs        sync.Pool // *[]byte of maxProxyHeader+MaxHello bytes

	noLoops bool // serve with goroutines only, as off Linux (tests)

	guard *guard // connections still sending their ClientHello

	accepted, routed, acme, rejected, noRoute, failed atomic.Uint64
	active                                            atomic.Int64
}

// New returns a Router that routes by t.
func New(opts Options, t *Table) (*Router, error) {
	if t == nil {
		return nil, errors.New("creating router: no routing table")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.PeekTimeout == 0 {
		opts.PeekTimeout = DefaultPeekTimeout
	}
	if opts.MaxHello == 0 {
		opts.MaxHello = DefaultMaxHello
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	if opts.MaxPeekPerSource == 0 {
		opts.MaxPeekPerSource = DefaultMaxPeekPerSource
	}
	if opts.FDReserve == 0 {
		opts.FDReserve = DefaultFDReserve
	}
	switch {
	case opts.PeekTimeout < 0 || opts.DialTimeout < 0 || opts.DrainTimeout < 0:
		return nil, errors.New("creating router: timeouts must be positive")
	case opts.MaxHello < 1<<10 || opts.MaxHello > 1<<20:
		return nil, fmt.Errorf("creating router: MaxHello %d out of range; use 1 KiB to 1 MiB (16 KiB is plenty)", opts.MaxHello)
	}
	r := &Router{
		log:         opts.Logger,
		opts:        opts,
		dialer:      net.Dialer{Timeout: opts.DialTimeout},
		localDialer: net.Dialer{Timeout: opts.DialTimeout, KeepAlive: -1},
		guard:       newGuard(opts.Logger, opts.MaxPeekPerSource, opts.FDReserve, fdLimit()),
	}
	r.table.Store(t)
	size := maxProxyHeader + opts.MaxHello
	r.bufs.New = func() any {
		b := make([]byte, size)
		return &b
	}
	if opts.ACME != nil {
		r.acmeCfg = &tls.Config{
			MinVersion:             tls.VersionTLS12, // RFC 8737 §3
			NextProtos:             []string{acmeTLS1},
			GetCertificate:         opts.ACME.GetCertificate,
			SessionTicketsDisabled: true,
		}
	}
	return r, nil
}

// Reload makes t the routing table for connections accepted from now on.
// Connections in flight keep their backend.
func (r *Router) Reload(t *Table) {
	if t != nil {
		r.table.Store(t)
	}
}

// Table returns the routing table in use.
func (r *Router) Table() *Table { return r.table.Load() }

// Stats returns the connection counters.
func (r *Router) Stats() Stats {
	return Stats{
		Accepted:   r.accepted.Load(),
		Routed:     r.routed.Load(),
		ACME:       r.acme.Load(),
		Rejected:   r.rejected.Load(),
		NoRoute:    r.noRoute.Load(),
		Failed:     r.failed.Load(),
		OverSource: r.guard.overSource.Load(),
		Evicted:    r.guard.evicted.Load(),
		Active:     r.active.Load(),
		Peeking:    int64(r.guard.peeking()),
	}
}

// Serve accepts connections from ln until ctx is cancelled, then closes ln,
// lets the connections in flight drain for Options.DrainTimeout, closes the
// rest and returns nil. It returns an error if ln fails for another reason
// (after the same drain). Serve always closes ln.
func (r *Router) Serve(ctx context.Context, ln net.Listener) error {
	s := &session{conns: make(map[*conn]struct{})}
	connCtx, cancelConns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelConns()
	if !r.noLoops {
		ls, err := newLoops(connCtx, r, s)
		switch {
		case err != nil:
			r.log.Warn("serving connections with goroutines instead of event loops", "error", err)
		case ls != nil:
			s.loops = ls
			defer ls.close() // after the drain below: every connection is gone
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	r.log.Info("router listening", "addr", ln.Addr().String())

	var serveErr error
	handled := false
	if s.loops != nil {
		handled, serveErr = s.loops.listen(ctx, ln)
	}
	if !handled {
		serveErr = r.acceptLoop(ctx, connCtx, s, ln)
	}
	_ = ln.Close()

	r.log.Info("router stopping", "addr", ln.Addr().String(), "active", s.count(), "drain_timeout", r.opts.DrainTimeout)
	drained := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(drained)
	}()
	t := time.NewTimer(r.opts.DrainTimeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
		cancelConns()
		s.closeAll()
		<-drained
	}
	return serveErr
}

// acceptLoop accepts connections from ln, each served by a goroutine or
// handed to a loop, until ctx is cancelled (nil) or ln fails.
func (r *Router) acceptLoop(ctx, connCtx context.Context, s *session, ln net.Listener) error {
	for backoff := time.Duration(0); ; {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accepting connections on %s: %w", ln.Addr(), err)
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors: close connections still waiting
				// for their ClientHello (guard.go). Their descriptors
				// are freed once their readers have woken: accept
				// again shortly.
				if closed, _ := r.guard.exhausted(nil); closed > 0 {
					select {
					case <-time.After(time.Millisecond):
					case <-ctx.Done():
					}
					continue
				}
			}
			// Transient, such as EMFILE: back off as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			r.log.Warn("accepting connection", "error", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			continue
		}
		backoff = 0
		r.accepted.Add(1)
		cn := &conn{client: c}
		if !r.guard.admit(cn, remoteIP(c), nil, nil) {
			_ = c.Close()
			continue
		}
		if r.guard.reserve > 0 {
			if fd := connFD(c); fd >= 0 && r.guard.pressure(fd) {
				r.guard.evict(2, cn, nil, fd)
			}
		}
		if !s.track(cn) {
			r.guard.leave(cn)
			_ = c.Close()
			return nil
		}
		if s.loops != nil && s.loops.accept(cn) {
			continue
		}
		go r.handle(connCtx, s, cn)
	}
}

// session tracks the connections of one Serve call.
type session struct {
	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool // closeAll ran: close whatever registers later
	wg     sync.WaitGroup
	loops  *loops // nil: a goroutine per direction
}

// conn is one client connection and, once dialled, its backend.
type conn struct {
	client   net.Conn
	backend  net.Conn // set under session.mu
	up, down halfPipe // client to backend, backend to client
	ended    atomic.Int32
	peek     peekEntry // while it sends its ClientHello: guarded by guard.mu
}

func (s *session) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *session) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// setBackend records c's backend; it reports false (and closes b) when the
// session is being torn down.
func (s *session) setBackend(c *conn, b net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = b.Close()
		return false
	}
	c.backend = b
	return true
}

// setClient makes nc c's client connection (a loop hands the connection to
// a goroutine); it reports false (and closes nc) when the session is being
// torn down.
func (s *session) setClient(c *conn, nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = nc.Close()
		return false
	}
	c.client = nc
	return true
}

func (s *session) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// closeAll closes every connection, client and backend.
func (s *session) closeAll() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		if c.client != nil {
			_ = c.client.Close()
		}
		if c.backend != nil {
			_ = c.backend.Close()
		}
	}
	s.mu.Unlock()
	// Outside s.mu: a loop takes s.mu (track, release) under its own.
	if s.loops != nil {
		s.loops.shutdownAll()
	}
}

// handle peeks the ClientHello of one connection and routes it.
func (r *Router) handle(ctx context.Context, s *session, cn *conn) {
	r.active.Add(1)
	growStack(0)
	r.finish(s, cn, r.route(ctx, s, cn))
}

// finish takes a connection on from what route or dispatch did with it.
func (r *Router) finish(s *session, cn *conn, res routeResult) {
	if res == routeFailed {
		r.release(s, cn)
		return
	}
	if s.loops != nil && s.loops.adopt(cn) {
		return // the loop releases it
	}
	// Two directions, one of them on this goroutine; the one that ends
	// last releases the connection.
	cn.up.init(cn.backend, cn.client)
	cn.down.init(cn.client, cn.backend)
	go r.pump(s, cn, &cn.up)
	r.pump(s, cn, &cn.down)
}

// stackReserve is about the stack that routing a connection needs (the
// dial is deep), less the 2 KiB a goroutine starts with.
const stackReserve = 6 << 10

// growStack grows a new goroutine's stack, while it is still shallow, to
// the size routing needs. Otherwise the runtime grows it twice deep in
// route (at its entry and inside the dial), copying and re-walking a dozen
// frames each time: 2 % of the CPU of BenchmarkRouterConnect.
//
//go:noinline
func growStack(i int) byte {
	var b [stackReserve]byte
	return b[i&(len(b)-1)]
}

// release closes both sides of cn and forgets it.
func (r *Router) release(s *session, cn *conn) {
	if cn.client != nil { // nil: accepted by an event loop, which closed it
		_ = cn.client.Close()
	}
	if cn.backend != nil {
		_ = cn.backend.Close()
	}
	r.active.Add(-1)
	s.untrack(cn)
}

// pump runs one direction of cn. The direction that ends first at EOF
// half-closes its destination (CloseWrite), so that the FIN travels on
// while the other direction goes on; on an error, or when the destination
// cannot half-close, it closes both sides, which ends the other direction
// too. The direction that ends last releases cn: both sides are done by
// then, so closing them sends what a half-close would have sent.
func (r *Router) pump(s *session, cn *conn, h *halfPipe) {
	err := h.copy()
	if cn.ended.Add(1) == 2 {
		r.release(s, cn)
		return
	}
	if err == nil {
		if cw, ok := h.dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
	}
	_ = cn.client.Close()
	_ = cn.backend.Close()
}

// routeResult is what route did with a connection.
type routeResult int

const (
	routeFailed routeResult = iota // answered locally, or failed: release it
	routeCopy                      // connected to its backend: copy both ways
)

// route peeks the ClientHello of cn and answers it or connects it to its
// backend.
func (r *Router) route(ctx context.Context, s *session, cn *conn) routeResult {
	c := cn.client
	bp := r.bufs.Get().(*[]byte)
	defer r.bufs.Put(bp)
	_ = c.SetReadDeadline(time.Now().Add(r.opts.PeekTimeout))
	n, hello, err := readHello(c, (*bp)[maxProxyHeader:])
	if r.guard.leave(cn) {
		return routeFailed // closed to keep descriptors free; counted
	}
	if err != nil {
		r.rejected.Add(1)
		r.log.Debug("closing connection: no valid client hello", "remote_addr", c.RemoteAddr().String(), "bytes", n, "error", err)
		return routeFailed
	}
	_ = c.SetReadDeadline(time.Time{})
	return r.dispatch(ctx, s, cn, *bp, n, hello)
}

// decide returns what to do with a ClientHello: answer it locally (acme),
// or pass it to rt, or close it (neither; counted here). name is the
// routing name, in nameBuf.
func (r *Router) decide(hello clientHello, nameBuf *[255]byte) (rt *route, name []byte, acme bool) {
	if r.acmeCfg != nil && hello.hasProto(acmeTLS1) {
		return nil, nil, true
	}
	name = routingName(nameBuf, hello.sni)
	rt = r.table.Load().lookup(name)
	if rt == nil {
		r.noRoute.Add(1)
	}
	return rt, name, false
}

// logNoRoute logs, at debug level, a connection closed for want of a route.
func (r *Router) logNoRoute(remote func() net.Addr, name []byte) {
	if r.log.Enabled(context.Background(), slog.LevelDebug) {
		r.log.Debug("closing connection: no route", "remote_addr", remote().String(), "sni", string(name))
	}
}

// firstBytes puts the PROXY header of rt, if it wants one, in the headroom
// of buf before the n peeked bytes, and returns what goes to the backend
// first: the header and the ClientHello, for one write.
func firstBytes(buf []byte, n int, rt *route, remote, local net.Addr) []byte {
	start := maxProxyHeader
	if rt.ProxyProtocol {
		var hdr [maxProxyHeader]byte
		h := appendProxyV2(hdr[:0], remote, local)
		start -= len(h)
		copy(buf[start:], h)
	}
	return buf[start : maxProxyHeader+n]
}

// dispatch answers or routes cn, whose ClientHello has been read: n bytes
// at buf[maxProxyHeader:], parsed as hello.
func (r *Router) dispatch(ctx context.Context, s *session, cn *conn, buf []byte, n int, hello clientHello) routeResult {
	c := cn.client
	var nameBuf [255]byte
	rt, name, acme := r.decide(hello, &nameBuf)
	if acme {
		r.answerACME(ctx, c, buf[maxProxyHeader:maxProxyHeader+n], hello)
		return routeFailed
	}
	if rt == nil {
		r.logNoRoute(c.RemoteAddr, name)
		return routeFailed
	}
	first := firstBytes(buf, n, rt, c.RemoteAddr(), c.LocalAddr())

	// Not ctx: a dial is bounded by DialTimeout, and a context that
	// descends from the session's would cost every connection a
	// registration with it. A dial in progress at shutdown finds the
	// session closed when it completes.
	d := &r.dialer
	if rt.local {
		d = &r.localDialer
	}
	bc, err := d.DialContext(context.Background(), rt.network, rt.addr)
	if err != nil {
		r.failed.Add(1)
		rt.failLog.log(r.log, "connecting to backend", "backend", rt.Backend, "sni", string(name), "error", err)
		return routeFailed
	}
	if !s.setBackend(cn, bc) {
		return routeFailed
	}
	if _, err = bc.Write(first); err != nil {
		r.failed.Add(1)
		rt.failLog.log(r.log, "writing to backend", "backend", rt.Backend, "sni", string(name), "error", err)
		return routeFailed
	}
	r.routed.Add(1)
	if r.log.Enabled(ctx, slog.LevelDebug) {
		r.log.Debug("routing connection", "remote_addr", c.RemoteAddr().String(), "sni", string(name), "backend", rt.Backend)
	}
	return routeCopy
}

// readHello reads from c into buf until buf holds a complete ClientHello,
// and returns the number of bytes read. The read deadline set by the caller
// bounds the whole loop.
func readHello(c net.Conn, buf []byte) (int, clientHello, error) {
	n := 0
	for {
		m, err := c.Read(buf[n:])
		n += m
		if m > 0 {
			h, perr := parseHello(buf[:n], len(buf))
			if perr == nil {
				return n, h, nil
			}
			if !errors.Is(perr, errShort) {
				return n, clientHello{}, perr
			}
		}
		if err != nil {
			return n, clientHello{}, fmt.Errorf("reading client hello: %w", err)
		}
		if n == len(buf) {
			return n, clientHello{}, errTooLarge
		}
	}
}

// answerACME completes a tls-alpn-01 handshake over c, replaying the peeked
// bytes, and closes it: no data follows the handshake (RFC 8737 §3).
func (r *Router) answerACME(ctx context.Context, c net.Conn, peeked []byte, hello clientHello) {
	_ = c.SetDeadline(time.Now().Add(acmeHandshakeTimeout))
	ctx, cancel := context.WithTimeout(ctx, acmeHandshakeTimeout)
	defer cancel()
	tc := tls.Server(&replayConn{Conn: c, pending: peeked}, r.acmeCfg)
	err := tc.HandshakeContext(ctx)
	if err != nil {
		r.failed.Add(1)
		r.log.Debug("tls-alpn-01 handshake failed", "remote_addr", c.RemoteAddr().String(), "sni", string(hello.sni), "error", err)
		return
	}
	r.acme.Add(1)
	r.log.Info("answered tls-alpn-01 validation", "remote_addr", c.RemoteAddr().String(), "sni", tc.ConnectionState().ServerName)
	_ = tc.Close()
}

// replayConn reads the peeked bytes before reading from the connection.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
