package router

import (
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// A connection that has not sent its whole ClientHello costs the router a
// descriptor and gives it nothing: it has no route yet, and the client may
// never send more. An attacker holding thousands of them could take every
// descriptor the process may open, and the router could then accept no
// one. The guard bounds them in two ways:
//
//   - per source: at most Options.MaxPeekPerSource of them from one IPv4
//     address or one IPv6 /64 (the prefix one subscriber gets, RFC 6177);
//     one more is closed as soon as it is accepted. Connections past their
//     ClientHello are not counted, so that any number of clients behind
//     one NAT address, with any number of connections open, pass.
//   - per process: Options.FDReserve descriptors are kept free for new
//     clients and their backends. Linux (and every Unix) gives a new
//     descriptor the lowest free number, so an accepted descriptor numbered
//     n means at least n+1 are open; when that comes within FDReserve of
//     RLIMIT_NOFILE, the two oldest connections still reading their
//     ClientHello are closed (one for the new client, one for its
//     backend). When accepting fails for want of descriptors (EMFILE,
//     ENFILE), up to FDReserve of them are closed, and accepting goes on.
//
// The oldest go first: a real client sends its ClientHello as soon as it
// has connected, so its hello is complete within about a round trip; those
// that have waited longest are the idle ones.
//
// The guard is consulted twice per connection, under one mutex: when it is
// accepted and when its ClientHello is complete (or it closes before
// that). Reading and copying never touch it.

// Defaults of Options (limits).
const (
	// DefaultMaxPeekPerSource bounds the connections of one source still
	// reading their ClientHello. A client sends its hello right after
	// connecting, so a source has about (new connections per second) ×
	// (round-trip time) of them at once: a NAT with thousands of users
	// opening 100 connections a second at a 100 ms round trip has 10.
	DefaultMaxPeekPerSource = 64
	// DefaultFDReserve is the number of descriptors kept free for new
	// clients, at most a quarter of RLIMIT_NOFILE.
	DefaultFDReserve = 256
)

// sourcePrefixV6 is the IPv6 prefix that counts as one source.
const sourcePrefixV6 = 64

// episodeQuiet ends an episode of closed connections: the next one closed
// after this long without any is logged as the start of a new episode.
const episodeQuiet = 30 * time.Second

// sourceKey is the source that a client at a counts against: a's IPv4
// address (also when it comes mapped into IPv6, from a dual-stack
// listener), or its IPv6 /64 without zone. Not valid when a is not.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(sourcePrefixV6) // strips the zone
		return p.Addr()
	}
	return a
}

// remoteIP is the IP address of c's peer; not valid for other kinds of
// address (a Unix socket).
func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr()
	}
	return netip.Addr{}
}

// peekEntry is a conn's place in the guard while it reads its ClientHello.
// All of it is guarded by guard.mu.
type peekEntry struct {
	prev, next *conn
	src        netip.Addr // sourceKey of the client; not valid: not counted
	// The event loop and pair that serve it, evicted by evictPair; nil
	// for a connection served by a goroutine, evicted by closing
	// conn.client.
	loop    *loop
	pair    *pair
	listed  bool
	evicted bool
}

// guard limits the connections still reading their ClientHello; see above.
type guard struct {
	log       *slog.Logger
	on        bool // a limit is set: connections are listed
	perSource int32
	limit     int // RLIMIT_NOFILE when the Router was made; 0 unknown
	reserve   int // 0: no reserve
	// watermark is limit - reserve: an accepted descriptor numbered at
	// least this means few are left. math.MaxInt without a reserve.
	watermark int

	overSource, evicted atomic.Uint64

	mu         sync.Mutex
	sources    map[netip.Addr]int32
	head, tail *conn // oldest first
	n          int
	overEp     episode
	evictEp    episode
}

// newGuard returns a guard for Options.MaxPeekPerSource perSource and
// Options.FDReserve reserve (either off when not positive), below a
// descriptor limit (0: unknown, no reserve).
func newGuard(log *slog.Logger, perSource, reserve, limit int) *guard {
	g := &guard{log: log, perSource: int32(min(max(perSource, 0), math.MaxInt32)), watermark: math.MaxInt, sources: make(map[netip.Addr]int32)}
	if reserve > 0 && limit > 0 {
		g.limit = limit
		g.reserve = max(1, min(reserve, limit/4))
		g.watermark = limit - g.reserve
	}
	g.on = g.perSource > 0 || g.reserve > 0
	return g
}

// admit lists cn, just accepted from a client at ip, as reading its
// ClientHello; l and p are the loop and pair that serve it, if any.
// It reports false, and counts it, when the client's source has
// MaxPeekPerSource connections listed already: the caller closes it.
func (g *guard) admit(cn *conn, ip netip.Addr, l *loop, p *pair) bool {
	if !g.on {
		return true
	}
	var key netip.Addr
	if g.perSource > 0 {
		key = sourceKey(ip)
	}
	g.mu.Lock()
	if key.IsValid() {
		n := g.sources[key]
		if n >= g.perSource {
			start := g.overEp.note(g)
			g.mu.Unlock()
			g.overSource.Add(1)
			if start {
				g.log.Warn("closing new connections from a source with too many connections still sending their TLS ClientHello; the episode ends after a quiet period",
					"source", netip.PrefixFrom(key, keyBits(key)).String(), "limit", g.perSource, "quiet", episodeQuiet)
			}
			return false
		}
		g.sources[key] = n + 1
	}
	cn.peek = peekEntry{src: key, loop: l, pair: p, listed: true, prev: g.tail}
	if g.tail != nil {
		g.tail.peek.next = cn
	} else {
		g.head = cn
	}
	g.tail = cn
	g.n++
	g.mu.Unlock()
	return true
}

// keyBits is the prefix length of a source key.
func keyBits(key netip.Addr) int {
	if key.Is4() {
		return 32
	}
	return sourcePrefixV6
}

// attach records that loop l serves cn, listed by a goroutine, as pair p.
// It reports false when cn was evicted meanwhile.
func (g *guard) attach(cn *conn, l *loop, p *pair) bool {
	if !g.on {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if cn.peek.evicted {
		return false
	}
	cn.peek.loop, cn.peek.pair = l, p
	return true
}

// leave unlists cn: its ClientHello is complete, or it is closing. It
// reports whether cn was evicted. Calling it again does nothing.
func (g *guard) leave(cn *conn) (evicted bool) {
	if !g.on {
		return false
	}
	g.mu.Lock()
	if cn.peek.listed {
		g.unlist(cn)
	}
	evicted = cn.peek.evicted
	g.mu.Unlock()
	return evicted
}

// unlist takes cn off the list and its source's count. Called with g.mu
// held.
func (g *guard) unlist(cn *conn) {
	e := &cn.peek
	if e.prev != nil {
		e.prev.peek.next = e.next
	} else {
		g.head = e.next
	}
	if e.next != nil {
		e.next.peek.prev = e.prev
	} else {
		g.tail = e.prev
	}
	e.prev, e.next, e.listed = nil, nil, false
	g.n--
	if e.src.IsValid() {
		if n := g.sources[e.src] - 1; n > 0 {
			g.sources[e.src] = n
		} else {
			delete(g.sources, e.src)
		}
	}
}

// pressure reports whether a descriptor numbered fd, just made, is within
// the reserve.
func (g *guard) pressure(fd int) bool { return fd >= g.watermark }

// exhausted closes, when accepting failed for want of descriptors, up to
// FDReserve of the oldest connections still reading their ClientHello;
// see evict for the results.
func (g *guard) exhausted(held *loop) (closed, freed int) {
	if g.reserve == 0 {
		return 0, 0
	}
	return g.evict(g.reserve, nil, held, -1)
}

// evict closes up to n of the oldest connections still reading their
// ClientHello, except keep. held is the event loop whose lock the caller
// holds, if any; fd is the descriptor whose number set it off (-1:
// accepting failed), for the log. It returns how many it closed, and how
// many of those had their descriptors freed by now (a net.Conn frees its
// own once its reader has woken; a pair of another Serve's loops is closed
// by a goroutine, and not counted here).
func (g *guard) evict(n int, keep *conn, held *loop, fd int) (closed, freed int) {
	var pairs []peekEntry // of those served by a loop
	g.mu.Lock()
	for c := g.head; c != nil && n > 0; {
		next := c.peek.next
		if c != keep {
			g.unlist(c)
			c.peek.evicted = true
			if c.peek.pair != nil {
				pairs = append(pairs, c.peek)
			} else {
				// Under g.mu, so that its goroutine, in leave, learns
				// that it was evicted, whatever it read.
				_ = c.client.Close()
				closed++
			}
			n--
		}
		c = next
	}
	g.mu.Unlock()
	// Outside g.mu: a loop takes it under its own lock.
	for _, e := range pairs {
		if ok, _ := evictPair(e.loop, e.pair, held); ok {
			closed++
			freed++
		}
	}
	g.countEvicted(closed, fd)
	return closed, freed
}

// countEvicted counts n connections evicted, and logs the start of an
// episode of them.
func (g *guard) countEvicted(n, fd int) {
	if n == 0 {
		return
	}
	g.evicted.Add(uint64(n))
	g.mu.Lock()
	start := g.evictEp.note(g)
	g.mu.Unlock()
	if start {
		args := []any{"limit", g.limit, "reserve", g.reserve, "quiet", episodeQuiet}
		if fd >= 0 {
			args = append(args, "open_at_least", fd+1)
		}
		g.log.Warn("file descriptors running low: closing the connections that have waited longest for their TLS ClientHello; the episode ends after a quiet period", args...)
	}
}

// peeking is the number of connections reading their ClientHello.
func (g *guard) peeking() int {
	if !g.on {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// episode is a run of connections closed for one reason, logged once when
// it starts and once when episodeQuiet has passed without any.
type episode struct {
	active bool
	count  uint64
	last   time.Time
	timer  *time.Timer
}

// note counts a connection closed; it reports whether that starts an
// episode (the caller logs it). Called with g.mu held.
func (e *episode) note(g *guard) bool {
	e.count++
	e.last = time.Now()
	if e.active {
		return false
	}
	e.active = true
	if e.timer == nil {
		e.timer = time.AfterFunc(episodeQuiet, func() { g.endEpisode(e) })
	} else {
		e.timer.Reset(episodeQuiet)
	}
	return true
}

// endEpisode is an episode's timer: it logs the end of the episode when
// it has been quiet long enough, and waits on otherwise.
func (g *guard) endEpisode(e *episode) {
	g.mu.Lock()
	if wait := episodeQuiet - time.Since(e.last); wait > 0 {
		e.timer.Reset(wait)
		g.mu.Unlock()
		return
	}
	n := e.count
	e.active, e.count = false, 0
	g.mu.Unlock()
	what := "connections from sources over their limit"
	if e == &g.evictEp {
		what = "connections closed to keep descriptors free"
	}
	g.log.Info("episode of closed connections ended", "what", what, "closed", n)
}
