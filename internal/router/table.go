package router

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Route sends the TLS connections whose SNI matches to one backend.
type Route struct {
	// SNI is an exact host name ("www.example.com"), a wildcard
	// ("*.example.com", matching any name that ends in ".example.com", at
	// any depth, as nginx's server_name does), or "" for the default route
	// that takes connections matching nothing else, including those without
	// SNI. Matching ignores case and a trailing dot.
	SNI string
	// Backend is "host:port" (TCP) or "unix:/absolute/path" (a Unix stream
	// socket).
	Backend string
	// ProxyProtocol prefixes the connection to the backend with a PROXY
	// protocol version 2 header carrying the client's address (nginx:
	// `listen ... proxy_protocol;`, HAProxy: `accept-proxy`).
	ProxyProtocol bool
}

// Table is an immutable routing table: exact names first, then the longest
// matching wildcard, then the default route. Build it with NewTable and swap
// it in with Router.Reload.
type Table struct {
	routes []Route
	exact  map[string]*route
	wild   map[string]*route // keyed by the suffix after "*.", e.g. "example.com"
	def    *route
}

// route is a validated Route with its dial target and per-backend state.
type route struct {
	Route
	network, addr string
	local         bool           // a loopback address or a Unix socket
	ip            netip.AddrPort // addr, when it is a literal address
	failLog       logLimiter
}

// NewTable validates routes and builds a table. Errors name the offending
// route by position and SNI. An empty table is valid: it closes every
// connection that is not an ACME validation.
func NewTable(routes []Route) (*Table, error) {
	t := &Table{
		routes: append([]Route(nil), routes...),
		exact:  make(map[string]*route),
		wild:   make(map[string]*route),
	}
	for i, r := range routes {
		where := fmt.Sprintf("route %d (sni %q)", i+1, r.SNI)
		if r.SNI == "" {
			where = fmt.Sprintf("route %d (default)", i+1)
		}
		rt := &route{Route: r}
		var err error
		if rt.network, rt.addr, err = parseBackend(r.Backend); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if rt.network == "tcp" {
			rt.ip, _ = netip.ParseAddrPort(rt.addr)
		}
		rt.local = isLocal(rt.network, rt.addr)
		name := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(r.SNI)), ".")
		switch {
		case r.SNI == "":
			if t.def != nil {
				return nil, fmt.Errorf("%s: a second default route; keep one route with an empty SNI", where)
			}
			t.def = rt
		case strings.HasPrefix(name, "*."):
			base := name[2:]
			if err := validName(base); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if t.wild[base] != nil {
				return nil, fmt.Errorf("%s: SNI listed twice; remove one of the routes", where)
			}
			t.wild[base] = rt
		default:
			if err := validName(name); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if t.exact[name] != nil {
				return nil, fmt.Errorf("%s: SNI listed twice; remove one of the routes", where)
			}
			t.exact[name] = rt
		}
	}
	return t, nil
}

// Routes returns a copy of the routes the table was built from.
func (t *Table) Routes() []Route { return append([]Route(nil), t.routes...) }

// Match returns the route for a ClientHello's SNI ("" when it sent none),
// and false when no route matches and there is no default.
func (t *Table) Match(sni string) (Route, bool) {
	var buf [255]byte
	if len(sni) > len(buf) {
		return Route{}, false
	}
	rt := t.lookup(routingName(&buf, []byte(sni)))
	if rt == nil {
		return Route{}, false
	}
	return rt.Route, true
}

// lookup finds the route for a normalised name without allocating.
func (t *Table) lookup(name []byte) *route {
	if len(name) > 0 {
		if rt := t.exact[string(name)]; rt != nil {
			return rt
		}
		if len(t.wild) > 0 {
			for i, c := range name {
				if c == '.' {
					if rt := t.wild[string(name[i+1:])]; rt != nil {
						return rt
					}
				}
			}
		}
	}
	return t.def
}

// validName checks a route's host name: letters, digits, hyphens and dots,
// no empty label, not an IP address (SNI never carries one, RFC 6066 §3).
func validName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("SNI must be a host name such as \"www.example.com\" or \"*.example.com\"")
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return fmt.Errorf("SNI cannot be an IP address: clients never send one (RFC 6066); use the default route (empty SNI) for connections by address")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("SNI %q has an empty or over-long label", name)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				if c == '*' {
					return fmt.Errorf("SNI %q: a wildcard may only be the whole first label, as in \"*.example.com\"", name)
				}
				return fmt.Errorf("SNI %q contains %q; use the ASCII (punycode) form of the name", name, c)
			}
		}
	}
	return nil
}

// parseBackend splits a Backend into a network and an address for net.Dial.
func parseBackend(b string) (network, addr string, err error) {
	if path, ok := strings.CutPrefix(b, "unix:"); ok {
		if !strings.HasPrefix(path, "/") {
			return "", "", fmt.Errorf("backend %q: a Unix socket path must be absolute, as in \"unix:/run/nginx/https.sock\"", b)
		}
		return "unix", path, nil
	}
	host, port, err := net.SplitHostPort(b)
	if err != nil || host == "" {
		return "", "", fmt.Errorf("backend %q: want host:port (such as \"127.0.0.1:8443\") or unix:/path", b)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", "", fmt.Errorf("backend %q: port must be a number from 1 to 65535", b)
	}
	return "tcp", b, nil
}

// isLocal reports whether a dial target is a Unix socket or a loopback
// address ("localhost" included).
func isLocal(network, addr string) bool {
	if network == "unix" {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.IsLoopback()
	}
	return strings.EqualFold(host, "localhost")
}

// failLogInterval is how often, at most, a failing backend is logged.
const failLogInterval = 10 * time.Second

// logLimiter lets one log line through per failLogInterval and counts the
// ones it holds back, so that a backend that is down does not flood the log.
type logLimiter struct {
	last       atomic.Int64 // unix nanoseconds of the last line logged
	suppressed atomic.Int64
}

// log emits the failure if the interval has passed, with the number of
// failures suppressed since the previous line.
func (l *logLimiter) log(log *slog.Logger, msg string, args ...any) {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if now-last < int64(failLogInterval) || !l.last.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		return
	}
	args = append(args, "suppressed", l.suppressed.Swap(0))
	log.Warn(msg, args...)
}
