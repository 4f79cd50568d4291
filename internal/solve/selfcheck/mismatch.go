package selfcheck

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
)

// Reason classifies why a check failed, for callers that act on it (for
// example, trying the next path after ReasonRefused).
type Reason string

// Reasons a check fails.
const (
	ReasonDNS         Reason = "dns"         // the name did not resolve to any address
	ReasonRefused     Reason = "refused"     // nothing listens on the port
	ReasonTimeout     Reason = "timeout"     // no connection or no answer in time
	ReasonNetwork     Reason = "network"     // another connection failure: unreachable, reset
	ReasonStatus      Reason = "status"      // http-01: a status other than 200
	ReasonBody        Reason = "body"        // http-01: status 200 with another body
	ReasonRedirect    Reason = "redirect"    // http-01: a redirect a CA will not follow
	ReasonProtocol    Reason = "protocol"    // tls-alpn-01: handshake failed or acme-tls/1 not negotiated
	ReasonCertificate Reason = "certificate" // tls-alpn-01: acme-tls/1 negotiated, certificate wrong
	// ReasonFamily: the address the CA will use (IPv6) fails while the
	// name's address of the other family (IPv4) answers correctly, and the
	// CA will not fall back to it.
	ReasonFamily Reason = "family"
)

// bodyPreview is how much of a body MismatchError keeps.
const bodyPreview = 256

// MismatchError reports that a presented answer is not what the CA would
// see, and what answered instead. Fields that do not apply are zero.
type MismatchError struct {
	Challenge  string // solve.HTTP01 or solve.TLSALPN01
	Identifier string // the identifier's value
	Reason     Reason

	// URL is, for http-01, the URL whose answer failed the check (the last
	// one after redirects); for tls-alpn-01, the identifier:port connected
	// to.
	URL string
	// Redirects lists, for http-01, the URLs fetched before URL, in order,
	// starting with the challenge URL. Empty when there was no redirect.
	Redirects []string
	// Location is the Location header of a refused redirect.
	Location string
	// Addr is the address that answered, or the last one tried; invalid
	// when the name did not resolve.
	Addr netip.AddrPort
	// Attempts lists the connection attempts for URL, IPv6 first.
	Attempts []Attempt

	Status int    // http-01: the status code
	Server string // http-01: the Server header
	Body   string // http-01: the first bytes of the body

	Protocol    string // tls-alpn-01: the negotiated ALPN protocol, "" for none
	CertSubject string // tls-alpn-01: the names the leaf certificate is for
	CertIssuer  string // tls-alpn-01: the leaf certificate's issuer

	// Detail says what answered and what was wrong with it.
	Detail string
	// Hint says what to change.
	Hint string
	// Err is the underlying error, if any.
	Err error
}

// Error returns Detail, the redirect chain and failed attempts, and Hint.
func (e *MismatchError) Error() string {
	var b strings.Builder
	b.WriteString(e.Detail)
	if len(e.Redirects) > 0 {
		short := make([]string, len(e.Redirects))
		for i, r := range e.Redirects {
			short[i] = abbreviate(r)
		}
		fmt.Fprintf(&b, " (redirected from %s)", strings.Join(short, " -> "))
	}
	var failed []string
	for _, a := range e.Attempts {
		if a.Err != nil && a.Addr != e.Addr {
			failed = append(failed, a.String())
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(&b, " (tried first: %s)", strings.Join(failed, "; "))
	}
	if e.Hint != "" {
		b.WriteString(": ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *MismatchError) Unwrap() error { return e.Err }

// LogValue groups the fields that are set, for structured logs.
func (e *MismatchError) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("challenge", e.Challenge),
		slog.String("identifier", e.Identifier),
		slog.String("reason", string(e.Reason)),
	}
	add := func(k, v string) {
		if v != "" {
			attrs = append(attrs, slog.String(k, v))
		}
	}
	add("url", e.URL)
	if len(e.Redirects) > 0 {
		attrs = append(attrs, slog.Any("redirects", e.Redirects))
	}
	add("location", e.Location)
	if e.Addr.IsValid() {
		add("addr", e.Addr.String())
	}
	if e.Status != 0 {
		attrs = append(attrs, slog.Int("status", e.Status))
	}
	add("server", e.Server)
	add("body", e.Body)
	add("protocol", e.Protocol)
	add("cert_subject", e.CertSubject)
	add("cert_issuer", e.CertIssuer)
	add("hint", e.Hint)
	if e.Err != nil {
		add("error", e.Err.Error())
	}
	return slog.GroupValue(attrs...)
}

// abbreviate shortens the token in a challenge URL ("…/acme-challenge/abc…")
// so that messages stay readable.
func abbreviate(u string) string {
	const marker = "/.well-known/acme-challenge/"
	i := strings.Index(u, marker)
	if i < 0 {
		return u
	}
	tok := u[i+len(marker):]
	if len(tok) <= 12 {
		return u
	}
	return u[:i+len(marker)] + tok[:8] + "…"
}

// quoteBody returns the start of body, quoted, for a message.
func quoteBody(body string) string {
	const max = 60
	if len(body) > max {
		return strconv.Quote(body[:max]) + "…"
	}
	return strconv.Quote(body)
}

// snippetServer maps a Server header to the --server value of
// `detour snippet http`, or "" when the software is not one it knows.
func snippetServer(server string) string {
	s := strings.ToLower(strings.TrimSpace(server))
	for _, p := range []struct{ prefix, name string }{
		{"nginx", "nginx"},
		{"openresty", "nginx"},
		{"angie", "nginx"},
		{"apache", "apache"},
		{"caddy", "caddy"},
		{"lighttpd", "lighttpd"},
		{"haproxy", "haproxy"},
		{"traefik", "traefik"},
	} {
		if strings.HasPrefix(s, p.prefix) {
			return p.name
		}
	}
	return ""
}

// snippetCommand is the command that prints the http-01 forward for server.
func snippetCommand(server string) string {
	if name := snippetServer(server); name != "" {
		return "`detour snippet http --server " + name + "`"
	}
	return "`detour snippet http`"
}
