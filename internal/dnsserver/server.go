// Package dnsserver is Detour's embedded authoritative DNS responder for
// ACME challenge names.
//
// It answers the dns-01 TXT records of RFC 8555 §8.4 (and, for the local
// sandbox, the A/AAAA records of test names) from an in-memory table, as an
// authoritative-only server in the sense of RFC 1034 §4.3.2: the AA bit is
// set on every in-zone answer, recursion is never offered (RA=0, RFC 5358),
// and names outside the served zones are REFUSED.
//
// Negative answers follow RFC 2308: a name that owns any record, a zone apex,
// or an empty non-terminal (a name with descendants that own records, RFC
// 8020 §2) yields NODATA (NOERROR, empty answer); any other in-zone name
// yields NXDOMAIN. Both carry the zone's SOA in the authority section, with a
// TTL equal to the SOA MINIMUM field so that negative caching is as short as
// the TXT TTL.
//
// EDNS(0) (RFC 6891): a query with an OPT record gets an OPT record back that
// advertises Options.UDPSize; a UDP response larger than the smaller of that
// and the client's advertised size (512 octets without EDNS) is truncated and
// has the TC bit set, so the client retries over TCP (RFC 7766). Version
// other than 0 is answered BADVERS.
//
// ANY queries get the minimal answer of RFC 8482 §4.2: one synthesised HINFO
// record with CPU "RFC8482", never the full record set, so ANY cannot be used
// for amplification.
//
// Over UDP, Serve applies a per-source token bucket (Options.RateLimit):
// queries beyond it are dropped silently, before they are parsed. Dropping
// (rather than answering TC) sends nothing at all towards a spoofed victim; a
// real client simply retries. TCP is not limited since it cannot be spoofed.
// The drops are logged once when a source starts being limited and summed up
// when it stops (or every minute while it lasts), for at most a few sources
// one by one and the rest together (ratelimit.DropLog), so a flood from
// however many spoofed addresses writes a bounded number of lines.
package dnsserver

import (
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/ratelimit"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultTTL       = 60   // seconds, for A, AAAA, NS, SOA and HINFO
	DefaultTXTTTL    = 1    // seconds, for TXT and negative answers
	DefaultUDPSize   = 1232 // octets, the DNS Flag Day 2020 recommendation
	DefaultRateLimit = 100  // UDP queries per second per source
	DefaultRateBurst = 200  // UDP queries in a burst per source
)

// Options configures a Server. The zero value serves every name that has
// records, with the defaults above.
type Options struct {
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
	// Zones are the apexes served authoritatively, e.g. "detour.test.".
	// Names below no zone are REFUSED. When empty, every name that owns
	// records implies a zone: its name with any leading underscore labels
	// removed (RFC 8552), so "_acme-challenge.example.test." implies
	// "example.test.". Names under no such implied zone are REFUSED.
	Zones []string
	// NS is the name server host name in SOA and NS records. Default
	// "ns.<first zone>", or "ns.<apex>" per implied zone when Zones is empty.
	NS string
	// TTL is the TTL of A, AAAA, NS, SOA and HINFO records. 0 means
	// DefaultTTL.
	TTL uint32
	// TXTTTL is the TTL of TXT records (never longer than the time a value has
	// left before it expires) and the SOA MINIMUM, which bounds negative
	// caching. 0 means DefaultTXTTTL.
	TXTTTL uint32
	// UDPSize is the largest UDP response sent, advertised in the OPT
	// record. 0 means DefaultUDPSize; values below 512 become 512.
	UDPSize uint16
	// RateLimit is the number of UDP queries per second answered for one
	// source (an IPv4 address or an IPv6 /64). 0 means DefaultRateLimit; a
	// negative value disables the limit.
	RateLimit float64
	// RateBurst is the bucket size of the rate limit. 0 means
	// DefaultRateBurst, or twice RateLimit if that is larger.
	RateBurst int
	// Now is the clock used for TXT expiry and the rate limit; nil means
	// time.Now.
	Now func() time.Time
}

// Server is an authoritative DNS responder with an in-memory record table.
// It is safe for concurrent use; records may change while it serves.
type Server struct {
	log     *slog.Logger
	zones   []string
	ns      string
	ttl     uint32
	txtTTL  uint32
	udpSize int
	now     func() time.Time
	limit   *ratelimit.Limiter // nil when disabled
	drops   *ratelimit.DropLog // logs the limit's drops; nil when disabled
	dropped atomic.Uint64

	mu         sync.Mutex
	names      map[string]*node
	ents       map[string]int // proper ancestors of owner names -> owners below
	implied    map[string]int // implied zone apexes -> owners (Zones empty)
	nextExpiry time.Time      // earliest TXT expiry; zero when none
	serial     uint32

	readyMu sync.Mutex
	serving int
	ready   chan struct{}
}

type txtValue struct {
	value   string
	expires time.Time // zero: never
}

type node struct {
	addrs []netip.Addr
	txt   []txtValue
	cname string // alias target (FQDN); when set it is answered instead of the rest
}

func (n *node) empty() bool { return len(n.addrs) == 0 && len(n.txt) == 0 && n.cname == "" }

// New returns a Server configured by opts.
func New(opts Options) *Server {
	s := &Server{
		log:     opts.Logger,
		ttl:     opts.TTL,
		txtTTL:  opts.TXTTTL,
		udpSize: int(opts.UDPSize),
		now:     opts.Now,
		names:   make(map[string]*node),
		ents:    make(map[string]int),
		implied: make(map[string]int),
		ready:   make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.ttl == 0 {
		s.ttl = DefaultTTL
	}
	if s.txtTTL == 0 {
		s.txtTTL = DefaultTXTTTL
	}
	if s.udpSize == 0 {
		s.udpSize = DefaultUDPSize
	}
	s.udpSize = max(s.udpSize, dns.MinMsgSize)
	if s.now == nil {
		s.now = time.Now
	}
	for _, z := range opts.Zones {
		z = canonical(z)
		if _, ok := dns.IsDomainName(z); !ok {
			s.log.Warn("ignoring invalid zone name", "zone", z)
			continue
		}
		if !slices.Contains(s.zones, z) {
			s.zones = append(s.zones, z)
		}
	}
	if opts.NS != "" {
		s.ns = canonical(opts.NS)
	} else if len(s.zones) > 0 {
		s.ns = child("ns", s.zones[0])
	}
	if opts.RateLimit >= 0 {
		rate := opts.RateLimit
		if rate == 0 {
			rate = DefaultRateLimit
		}
		burst := opts.RateBurst
		if burst <= 0 {
			burst = max(DefaultRateBurst, int(2*rate))
		}
		s.limit = ratelimit.New(ratelimit.Options{
			Rate:       rate,
			Burst:      burst,
			MaxSources: maxSources,
			SweepEvery: sweepInterval,
			Now:        s.now,
		})
		s.drops = ratelimit.NewDropLog(ratelimit.DropLogOptions{
			Logger: s.log,
			What:   "DNS queries over UDP",
			Now:    s.now,
		})
	}
	s.serial = uint32(s.now().Unix())
	return s
}

// canonical returns name as a lower-case fully qualified domain name.
func canonical(name string) string { return dns.CanonicalName(name) }

// child returns label prepended to the FQDN parent.
func child(label, parent string) string {
	if parent == "." {
		return label + "."
	}
	return label + "." + parent
}

// Now returns the server's current time (Options.Now), the clock against
// which TXT expiry times are compared.
func (s *Server) Now() time.Time { return s.now() }

// Dropped reports how many UDP queries the rate limit has discarded.
func (s *Server) Dropped() uint64 { return s.dropped.Load() }

// SetAddrs replaces the A and AAAA records of name with addrs; no addrs
// removes them. IPv4-mapped IPv6 addresses are served as A records; invalid
// addresses are ignored.
func (s *Server) SetAddrs(name string, addrs ...netip.Addr) {
	name = canonical(name)
	var clean []netip.Addr
	for _, a := range addrs {
		if !a.IsValid() {
			continue
		}
		a = a.Unmap().WithZone("")
		if !slices.Contains(clean, a) {
			clean = append(clean, a)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n, before := s.nodeLocked(name)
	n.addrs = clean
	s.settleLocked(name, n, before)
}

// AddTXT adds value to the TXT record set of name. Several values per name
// are allowed: a wildcard and its base name share one _acme-challenge name.
// The value is served until expires (the zero time: forever); adding a value
// that is already present only updates its expiry.
func (s *Server) AddTXT(name, value string, expires time.Time) {
	name = canonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(s.now())
	n, before := s.nodeLocked(name)
	i := slices.IndexFunc(n.txt, func(t txtValue) bool { return t.value == value })
	if i >= 0 {
		n.txt[i].expires = expires
	} else {
		n.txt = append(n.txt, txtValue{value: value, expires: expires})
	}
	if !expires.IsZero() && (s.nextExpiry.IsZero() || expires.Before(s.nextExpiry)) {
		s.nextExpiry = expires
	}
	s.settleLocked(name, n, before)
	if !s.inZoneLocked(name) {
		s.log.Warn("TXT record added outside every served zone; it will not be answered",
			"name", name, "zones", s.zones)
	}
}

// RemoveTXT removes value from the TXT record set of name, if present.
func (s *Server) RemoveTXT(name, value string) {
	name = canonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.names[name]
	if !ok {
		return
	}
	i := slices.IndexFunc(n.txt, func(t txtValue) bool { return t.value == value })
	if i < 0 {
		return
	}
	n.txt = slices.Delete(n.txt, i, i+1)
	s.settleLocked(name, n, false)
}

// TXT returns the live (unexpired) TXT values of name.
func (s *Server) TXT(name string) []string {
	name = canonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(s.now())
	n, ok := s.names[name]
	if !ok {
		return nil
	}
	out := make([]string, 0, len(n.txt))
	for _, t := range n.txt {
		out = append(out, t.value)
	}
	return out
}

// InZone reports whether name would be answered authoritatively once it has
// records: it lies at or below one of Options.Zones, or Zones is empty.
func (s *Server) InZone(name string) bool {
	if len(s.zones) == 0 {
		return true
	}
	_, ok := s.explicitZone(canonical(name))
	return ok
}

// nodeLocked returns the node of name, creating it, and whether it was empty.
func (s *Server) nodeLocked(name string) (*node, bool) {
	n, ok := s.names[name]
	if !ok {
		n = &node{}
		s.names[name] = n
	}
	return n, n.empty()
}

// settleLocked updates the bookkeeping after n (of name) changed; wasEmpty
// tells whether it had no records before the change.
func (s *Server) settleLocked(name string, n *node, wasEmpty bool) {
	s.serial++
	switch {
	case wasEmpty && !n.empty():
		s.countLocked(name, 1)
	case !wasEmpty && n.empty():
		s.countLocked(name, -1)
	}
	if n.empty() {
		delete(s.names, name)
	}
}

// countLocked adds delta to the empty-non-terminal counts of name's proper
// ancestors and to the count of its implied zone.
func (s *Server) countLocked(name string, delta int) {
	for _, a := range ancestors(name) {
		add(s.ents, a, delta)
	}
	add(s.implied, impliedApex(name), delta)
}

func add(m map[string]int, k string, delta int) {
	if m[k]+delta <= 0 {
		delete(m, k)
		return
	}
	m[k] += delta
}

// ancestors returns the proper ancestors of the FQDN name, nearest first,
// ending with the root.
func ancestors(name string) []string {
	if name == "." {
		return nil
	}
	idx := dns.Split(name)
	out := make([]string, 0, len(idx))
	for _, i := range idx[1:] {
		out = append(out, name[i:])
	}
	return append(out, ".")
}

// impliedApex is the zone an owner name implies when Options.Zones is empty:
// the name without leading underscore labels, or the name itself if nothing
// else would remain.
func impliedApex(name string) string {
	apex := name
	for strings.HasPrefix(apex, "_") {
		i := dns.Split(apex)
		if len(i) < 2 {
			return name
		}
		apex = apex[i[1]:]
	}
	return apex
}

// pruneLocked removes expired TXT values once the earliest expiry is due.
func (s *Server) pruneLocked(now time.Time) {
	if s.nextExpiry.IsZero() || now.Before(s.nextExpiry) {
		return
	}
	s.nextExpiry = time.Time{}
	for name, n := range s.names {
		if len(n.txt) == 0 {
			continue
		}
		before := len(n.txt)
		n.txt = slices.DeleteFunc(n.txt, func(t txtValue) bool {
			return !t.expires.IsZero() && !now.Before(t.expires)
		})
		for _, t := range n.txt {
			if !t.expires.IsZero() && (s.nextExpiry.IsZero() || t.expires.Before(s.nextExpiry)) {
				s.nextExpiry = t.expires
			}
		}
		if len(n.txt) != before {
			s.log.Debug("expired TXT values pruned", "name", name, "count", before-len(n.txt))
			s.settleLocked(name, n, false)
		}
	}
}

// explicitZone returns the closest enclosing zone of Options.Zones.
func (s *Server) explicitZone(name string) (string, bool) {
	best := ""
	for _, z := range s.zones {
		if dns.IsSubDomain(z, name) && len(z) > len(best) {
			best = z
		}
	}
	return best, best != ""
}

// inZoneLocked reports whether name is answered now.
func (s *Server) inZoneLocked(name string) bool {
	_, ok := s.zoneLocked(name)
	return ok
}

// zoneLocked returns the apex of the zone name is answered from.
func (s *Server) zoneLocked(name string) (string, bool) {
	if len(s.zones) > 0 {
		return s.explicitZone(name)
	}
	if s.implied[name] > 0 {
		return name, true
	}
	for _, a := range ancestors(name) {
		if s.implied[a] > 0 {
			return a, true
		}
	}
	return "", false
}

// nsName returns the name server host name used for the zone at apex.
func (s *Server) nsName(apex string) string {
	if s.ns != "" {
		return s.ns
	}
	return child("ns", apex)
}

// Ready returns a channel that is closed once a call to Serve has started
// all of its servers. After every Serve call has returned, Ready returns a
// new, open channel.
func (s *Server) Ready() <-chan struct{} {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	return s.ready
}

func (s *Server) markServing(delta int) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	s.serving += delta
	switch {
	case delta > 0 && s.serving == delta:
		close(s.ready)
	case delta < 0 && s.serving == 0:
		s.ready = make(chan struct{})
	}
}
