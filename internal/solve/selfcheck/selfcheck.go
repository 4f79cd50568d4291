// Package selfcheck fetches a presented http-01 or tls-alpn-01 answer the way
// the CA will, from this host, before the CA is asked to validate. A broken
// path then costs the user no failed validation and no rate limit, and the
// error says what answered instead and what to change.
//
// HTTP01 follows RFC 8555 §8.3 as Let's Encrypt's validation authority
// (Boulder, va/http.go) implements it:
//
//   - the name's A and AAAA records are resolved; the first IPv6 address is
//     tried first, and the first IPv4 address only when no TCP connection to
//     it could be made (refused, timed out, unreachable: Boulder's
//     fallbackErr takes only a failed dial). An answer, whatever it is, and a
//     connection that was accepted and then reset or left unanswered end the
//     attempt: the CA does not fall back after them. An IP identifier
//     (RFC 8738 §4) is connected to directly;
//   - GET http://<identifier>/.well-known/acme-challenge/<token> is sent with
//     that Host header, never through a proxy (HTTP_PROXY is ignored);
//   - up to 10 redirects are followed, only to http:// or https:// URLs on
//     ports 80 or 443 and only to names, not IP addresses; any other Location
//     fails the check, naming it. A redirect's target is connected to at its
//     first address alone (IPv6 when it has one): Boulder falls back to IPv4
//     only for the challenge URL itself;
//   - after a redirect to https:// the certificate is not verified.
//     Let's Encrypt documents this ("When redirected to an HTTPS URL, it does
//     not validate certificates (since this challenge is intended to
//     bootstrap valid certificates, it may encounter self-signed or expired
//     certificates along the way)", https://letsencrypt.org/docs/challenge-types/)
//     and Boulder's va/http.go builds its client with InsecureSkipVerify
//     for that reason;
//   - the answer must be status 200 with a body equal to the key
//     authorization after trailing whitespace is removed (RFC 8555 §8.3:
//     "The server SHOULD ignore whitespace characters at the end of the
//     body").
//
// TLSALPN01 follows RFC 8737 §3: it connects to <identifier>:443 with SNI set
// to the identifier, or to the reverse-DNS name for an IP identifier
// (RFC 8738 §6), offers only the "acme-tls/1" protocol, and checks that
// acme-tls/1 was negotiated, that the leaf certificate names exactly the
// identifier, and that it carries a critical id-pe-acmeIdentifier extension
// (1.3.6.1.5.5.7.1.31) holding the SHA-256 digest of the key authorization
// as an ASN.1 OCTET STRING. The certificate is not otherwise verified: it is
// self-signed by design. The first IPv6 address is tried first and the first
// IPv4 address when the handshake with it did not complete (Boulder's
// va/tlsalpn.go falls back after any dial or handshake error); a completed
// handshake is an answer, and its certificate is judged without fallback.
//
// When the answer the CA will get fails the check and the name has an
// address of the other family that the CA will not try, that address is
// fetched too: when it answers correctly the error (ReasonFamily) names both
// families, both records and both answers, and says to fix the server on the
// failing address or the record.
//
// A check that finds the path broken returns a *MismatchError; any other
// error (an invalid challenge, a cancelled context) is returned as is. The
// checks keep no state and are safe for concurrent use.
//
// The check runs from this host, so it cannot see everything the CA sees:
// split-horizon DNS or a host behind NAT without hairpin routing can make it
// fail while the CA would succeed. When a connection fails to an address
// that is on no interface of this host, the error says so and how to go on
// (self_check = false, or a DNS path).
package selfcheck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// Defaults and limits shared by both checks.
const (
	// DefaultHTTPPort is the only port public CAs use for http-01.
	DefaultHTTPPort = 80
	// DefaultTLSPort is the only port public CAs use for tls-alpn-01, and the
	// second port an http-01 redirect may lead to.
	DefaultTLSPort = 443
	// DefaultTimeout bounds one connection attempt (dial, request, answer).
	DefaultTimeout = 10 * time.Second
	// MaxRedirects is how many redirects HTTP01 follows, as Let's Encrypt.
	MaxRedirects = 10
)

// Resolver looks up the addresses of a name. *net.Resolver implements it;
// network is "ip", "ip4" or "ip6".
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

var _ Resolver = (*net.Resolver)(nil)

// Options configures a check. The zero value checks the way a public CA
// does.
type Options struct {
	// Logger receives each attempt at debug level and an IPv6 fallback at
	// warn level. Nil discards everything.
	Logger *slog.Logger
	// Resolver resolves names; nil means net.DefaultResolver.
	Resolver Resolver
	// HTTPPort is the port connected to for http-01 and for redirects to
	// port 80; 0 means 80. Only tests and rehearsals against a local CA
	// change it: in production it stays 80.
	HTTPPort int
	// TLSPort is the port connected to for tls-alpn-01 and for redirects to
	// port 443; 0 means 443. In production it stays 443.
	TLSPort int
	// Timeout bounds one connection attempt to one address; 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// PathKind names the kind of path that presented the answer
	// ("webroot", "side-port", "stateless", "standalone", ...), so that a
	// hint speaks of what the user set up. Empty gives generic hints.
	PathKind string
	// Root is the webroot's directory, for webroot hints.
	Root string
	// Listen is the path's own listen address, its `listen` setting: where
	// a side-port, alpn-forward or standalone path answers ("127.0.0.1:8403",
	// "unix:/run/detour/alpn.sock"). A hint about a forward names it as the
	// forward's target, and tls-alpn-01 connects to it directly to tell a
	// forward that points elsewhere from a responder that is down. Empty
	// when unknown.
	Listen string
	// LocalAddrs lists the addresses of this host's interfaces, to tell a
	// host behind NAT (its public address on no interface) from one whose
	// own address refuses; nil means net.InterfaceAddrs. Tests set it.
	LocalAddrs func() ([]net.Addr, error)
}

var discardLogger = slog.New(slog.DiscardHandler)

// withDefaults validates o and fills in its defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Logger == nil {
		o.Logger = discardLogger
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = DefaultHTTPPort
	}
	if o.TLSPort == 0 {
		o.TLSPort = DefaultTLSPort
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.LocalAddrs == nil {
		o.LocalAddrs = net.InterfaceAddrs
	}
	for _, p := range []int{o.HTTPPort, o.TLSPort} {
		if p < 1 || p > 65535 {
			return o, fmt.Errorf("invalid self-check port %d: want 1-65535, or 0 for the default", p)
		}
	}
	if o.Timeout < 0 {
		return o, fmt.Errorf("invalid self-check timeout %v: want a positive duration, or 0 for %v", o.Timeout, DefaultTimeout)
	}
	return o, nil
}

// For returns the check for challenge type typ: HTTP01 for "http-01",
// TLSALPN01 for "tls-alpn-01", and nil for "dns-01" and any other type,
// whose answers are not checked here (a dns-01 solver's Wait covers
// propagation).
func For(typ string) func(context.Context, solve.Challenge, Options) error {
	switch typ {
	case solve.HTTP01:
		return HTTP01
	case solve.TLSALPN01:
		return TLSALPN01
	}
	return nil
}

// validate rejects a challenge that check typ cannot be run for.
func validate(ch solve.Challenge, typ string) error {
	if ch.Type != "" && ch.Type != typ {
		return fmt.Errorf("running the %s self-check on a %s challenge: pick the check with selfcheck.For(challenge.Type)", typ, ch.Type)
	}
	switch ch.Identifier.Type {
	case ident.TypeDNS:
	case ident.TypeIP:
		if _, err := netip.ParseAddr(ch.Identifier.Value); err != nil {
			return fmt.Errorf("checking %s for %q: %w", typ, ch.Identifier.Value, ident.ErrInvalid)
		}
	default:
		return fmt.Errorf("checking %s for %q: unknown identifier type %q", typ, ch.Identifier.Value, ch.Identifier.Type)
	}
	if !solve.Applicable(typ, ch.Identifier) {
		return fmt.Errorf("checking %s for %s: %w: a wildcard can only be validated with dns-01", typ, ch.Identifier.Value, solve.ErrNotApplicable)
	}
	if ch.KeyAuthorization == "" {
		return fmt.Errorf("checking %s for %s: the challenge has no key authorization", typ, ch.Identifier.Value)
	}
	return nil
}

// Attempt is one connection attempt to one address.
type Attempt struct {
	Addr netip.AddrPort
	Err  error // nil for the attempt that answered
}

// String describes the attempt for a log line or an error message.
func (a Attempt) String() string {
	if a.Err == nil {
		return a.Addr.String() + " answered"
	}
	return a.Addr.String() + ": " + describeNetErr(a.Err)
}

// lookup returns the addresses to try for host, in the CA's order: the
// first IPv6 address, then the first IPv4 address. An IP literal is its
// own single address.
func lookup(ctx context.Context, o Options, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	lctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	addrs, err := o.Resolver.LookupNetIP(lctx, "ip", host)
	if err != nil && len(addrs) == 0 {
		var de *net.DNSError
		if errors.As(err, &de) && de.Err != "" {
			// Drop "lookup NAME on SERVER:": the caller names the host.
			return nil, errors.New(de.Err)
		}
		return nil, err
	}
	var v6, v4 netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case a.Is4() && !v4.IsValid():
			v4 = a
		case a.Is6() && !v6.IsValid():
			v6 = a
		}
	}
	var out []netip.Addr
	for _, a := range []netip.Addr{v6, v4} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no A or AAAA record for %s", host)
	}
	return out, nil
}

// tryEach runs try against each address in turn, each under o.Timeout, and
// moves on to the next address only when fallback(err) says the CA would
// (after a failed dial for http-01, any failure before the handshake
// completed for tls-alpn-01). It returns the first answer and every attempt
// made; on failure the error is the last attempt's.
func tryEach[T any](ctx context.Context, o Options, addrs []netip.Addr, port int, fallback func(error) bool,
	try func(ctx context.Context, ap netip.AddrPort) (T, error)) (T, []Attempt, error) {
	var zero T
	var attempts []Attempt
	for i, a := range addrs {
		ap := netip.AddrPortFrom(a, uint16(port))
		actx, cancel := context.WithTimeout(ctx, o.Timeout)
		v, err := try(actx, ap)
		cancel()
		attempts = append(attempts, Attempt{Addr: ap, Err: err})
		if err == nil {
			if i > 0 {
				o.Logger.Warn("self-check: IPv6 address failed, IPv4 answered; the CA falls back the same way, but fix or remove the AAAA record",
					"failed", attempts[0].String(), "addr", ap.String())
			}
			return v, attempts, nil
		}
		if ctx.Err() != nil {
			return zero, attempts, ctx.Err()
		}
		o.Logger.Debug("self-check: connection attempt failed", "addr", ap.String(), "error", err)
		if !fallback(err) {
			return zero, attempts, err
		}
	}
	return zero, attempts, attempts[len(attempts)-1].Err
}

// notConnected reports whether err came before a TCP connection was made:
// the only failure after which the CA tries the next address for http-01.
func notConnected(err error) bool {
	var ce *connectedError
	return !errors.As(err, &ce)
}

// anyFailure is tls-alpn-01's fallback rule: every failure before the
// handshake completed.
func anyFailure(error) bool { return true }

// isTimeout reports whether err is a timeout.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// netReason classifies a failed connection.
func netReason(err error) Reason {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonRefused
	case isTimeout(err):
		return ReasonTimeout
	}
	return ReasonNetwork
}

// describeNetErr says in a few words what went wrong with a connection.
func describeNetErr(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case isTimeout(err):
		return "timed out"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to host"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "address not available on this host"
	}
	return err.Error()
}

// urlHost returns host as written in a URL authority: IPv6 in brackets.
func urlHost(host string) string {
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
		return "[" + host + "]"
	}
	return host
}

// reverseName returns the reverse-DNS name of ip without a trailing dot, the
// SNI a CA sends for an IP identifier (RFC 8738 §6).
func reverseName(ip netip.Addr) string {
	ip = ip.Unmap()
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		for i := 3; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(a[i])))
			b.WriteByte('.')
		}
		b.WriteString("in-addr.arpa")
		return b.String()
	}
	const hex = "0123456789abcdef"
	a := ip.As16()
	for i := 15; i >= 0; i-- {
		b.WriteByte(hex[a[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[a[i]>>4])
		b.WriteByte('.')
	}
	b.WriteString("ip6.arpa")
	return b.String()
}

// ResolverAt returns a resolver that asks the DNS server at addr
// (host:port) instead of the system's (rehearsals against a local DNS).
func ResolverAt(addr string) *net.Resolver {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}}
}

// Hint names what a path is, so that a failed check speaks of what the
// user set up: its kind, the webroot's directory, and the path's listen
// address (see Options.Listen).
type Hint struct{ Kind, Root, Listen string }

// Func returns the check a renewal runs after each Present, before the CA
// is asked: the answer fetched the way the CA will fetch it, for the
// challenge types that have a check (For). hint, when set, describes each
// path by name.
func Func(opts Options, hint func(path string) (Hint, bool)) func(context.Context, solve.Path, solve.Challenge) error {
	return func(ctx context.Context, p solve.Path, ch solve.Challenge) error {
		check := For(ch.Type)
		if check == nil {
			return nil
		}
		o := opts
		if hint != nil {
			if h, ok := hint(p.Name); ok {
				o.PathKind, o.Root, o.Listen = h.Kind, h.Root, h.Listen
			}
		}
		return check(ctx, ch, o)
	}
}
