package selfcheck

// Small exported pieces of HTTP01 for `detour doctor` (package
// internal/doctor/httpprobe), which fetches a probe the CA's way but must
// report every hop of the chain and each address family, which HTTP01's
// verdict does not carry. Each is a thin wrapper: the behaviour stays
// HTTP01's own.

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"time"
)

// Answer is what one address answered to one request.
type Answer struct {
	Status    int
	Server    string // the Server header, printable ASCII only
	Location  string // the Location header, as sent
	Body      []byte // at most 1024 bytes
	Truncated bool   // the body was longer than Body
}

// FetchOnce sends the CA's GET for u to ap alone (no proxy, the CA's
// headers, no certificate verification for https) and returns the answer,
// without following a redirect. ctx bounds the whole exchange. A failure
// after the TCP connection was made satisfies Connected.
func FetchOnce(ctx context.Context, ap netip.AddrPort, u *url.URL) (Answer, error) {
	a, err := (&httpCheck{}).fetch(ctx, ap, u)
	return Answer{Status: a.status, Server: a.server, Location: a.location, Body: a.body, Truncated: a.truncated}, err
}

// Connected reports whether err, from FetchOnce, came after a TCP
// connection was made: the failures after which the CA does not fall back
// from IPv6 to IPv4.
func Connected(err error) bool { return err != nil && !notConnected(err) }

// IsTimeout reports whether err is a timeout.
func IsTimeout(err error) bool { return isTimeout(err) }

// DescribeNetErr says in a few words what went wrong with a connection
// ("connection refused", "timed out", ...).
func DescribeNetErr(err error) string { return describeNetErr(err) }

// ConnectPort maps a URL's scheme and port to the port connected to, as
// HTTP01 does: 80 to httpPort and 443 to tlsPort (0 means 80 and 443); a
// port equal to httpPort or tlsPort as is. ok is false for any other port.
func ConnectPort(scheme, port string, httpPort, tlsPort int) (p int, ok bool) {
	return portOptions(httpPort, tlsPort).connectPort(scheme, port)
}

// FollowRedirect applies the CA's rules to a redirect from u to location:
// scheme http or https, a host that is a name, port 80 or 443 (httpPort,
// tlsPort as in ConnectPort), at most MaxRedirects (n is the number of
// this redirect, 1 for the first), no URL twice (seen holds the URLs
// fetched so far). It returns the URL to fetch next, or what the redirect
// is ("a redirect to port 8443") and the hint that says what to change.
// The status code is not judged here.
func FollowRedirect(u *url.URL, location string, n int, seen map[string]bool, httpPort, tlsPort int) (next *url.URL, problem, hint string) {
	c := &httpCheck{o: portOptions(httpPort, tlsPort)}
	return c.followable(u, location, n, seen)
}

// Addresses resolves host with r as HTTP01 does and returns the addresses
// the CA tries, in its order: the first IPv6 address, then the first IPv4
// address. An IP literal is its own single address.
func Addresses(ctx context.Context, r Resolver, timeout time.Duration, host string) ([]netip.Addr, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return lookup(ctx, Options{Resolver: r, Timeout: timeout}, host)
}

// IsLocal reports whether a is an address of one of this host's
// interfaces (any address of a loopback network counts), listing them with
// list (net.InterfaceAddrs when nil); known is false when they could not
// be listed.
func IsLocal(a netip.Addr, list func() ([]net.Addr, error)) (local, known bool) {
	if list == nil {
		list = net.InterfaceAddrs
	}
	return Options{Logger: discardLogger, LocalAddrs: list}.isLocal(a)
}

// portOptions is the Options connectPort needs.
func portOptions(httpPort, tlsPort int) Options {
	if httpPort == 0 {
		httpPort = DefaultHTTPPort
	}
	if tlsPort == 0 {
		tlsPort = DefaultTLSPort
	}
	return Options{HTTPPort: httpPort, TLSPort: tlsPort}
}

// SnippetServer maps a Server header to the --server value of
// `detour snippet http` ("nginx", "apache", ...), or "" when the software
// is not one it knows.
func SnippetServer(server string) string { return snippetServer(server) }

// Abbreviate shortens the token in a challenge URL
// ("…/acme-challenge/abcdefgh…") so that messages stay readable.
func Abbreviate(u string) string { return abbreviate(u) }
