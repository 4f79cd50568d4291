package standalone

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// localKey is the context key under which markConn records whether a
// connection comes from a proxy on this host.
type localKey struct{}

// markConn is the http.Server ConnContext hook used with
// Options.TrustForwarded: it records whether c comes from loopback or a
// Unix socket, where forwarding headers are believed.
func markConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, localKey{}, LocalPeer(c.RemoteAddr()))
}

// LocalPeer reports whether a peer at a is on this host: a Unix socket peer
// or a loopback address. Only such a peer (the local proxy) is believed when
// it names the original host in X-Forwarded-Host or Forwarded.
func LocalPeer(a net.Addr) bool {
	switch a := a.(type) {
	case *net.UnixAddr:
		return true
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case nil:
		return false
	}
	return loopbackRemote(a.String())
}

// loopbackRemote reports whether an http.Request RemoteAddr is loopback.
func loopbackRemote(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	return ap.Addr().IsLoopback()
}

// trustsForwarding reports whether the forwarding headers of r are believed.
func (s *HTTP01) trustsForwarding(r *http.Request) bool {
	if !s.trustForwarded {
		return false
	}
	if v, ok := r.Context().Value(localKey{}).(bool); ok {
		return v
	}
	// Mounted in another server: only the request's RemoteAddr is known.
	return loopbackRemote(r.RemoteAddr)
}

// hosts returns the normalised hosts a request may be for, best first: the
// Forwarded host= values and X-Forwarded-Host values when trusted, then
// Host. Values that cannot name an identifier are dropped.
func (s *HTTP01) hosts(r *http.Request) []string {
	var raw []string
	if s.trustsForwarding(r) {
		raw = append(raw, ForwardedHosts(r.Header.Values("Forwarded"))...)
		for _, v := range r.Header.Values("X-Forwarded-Host") {
			raw = append(raw, strings.Split(v, ",")...)
		}
	}
	raw = append(raw, r.Host)
	out := make([]string, 0, len(raw))
	for _, h := range raw {
		if n := normalizeHost(h); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// ForwardedHosts returns the host= parameters of Forwarded header values
// (RFC 7239 §4, §5.3), in order, unquoted. Malformed pairs are skipped.
func ForwardedHosts(values []string) []string {
	var out []string
	for _, v := range values {
		for _, pair := range splitForwarded(v) {
			k, val, ok := strings.Cut(pair, "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(k), "host") {
				continue
			}
			val = strings.TrimSpace(val)
			if strings.HasPrefix(val, `"`) {
				u, err := unquote(val)
				if err != nil {
					continue
				}
				val = u
			}
			out = append(out, val)
		}
	}
	return out
}

// splitForwarded splits a Forwarded value at the ',' and ';' that separate
// elements and pairs, leaving quoted strings intact.
func splitForwarded(v string) []string {
	var out []string
	start, inQuote, escaped := 0, false, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case escaped:
			escaped = false
		case inQuote && c == '\\':
			escaped = true
		case c == '"':
			inQuote = !inQuote
		case !inQuote && (c == ',' || c == ';'):
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

// unquote decodes an RFC 9110 §5.6.4 quoted-string.
func unquote(q string) (string, error) {
	if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		return "", fmt.Errorf("unterminated quoted string %s", q)
	}
	var b strings.Builder
	body := q[1 : len(q)-1]
	for i := 0; i < len(body); i++ {
		if body[i] == '\\' && i+1 < len(body) {
			i++
		}
		b.WriteByte(body[i])
	}
	return b.String(), nil
}
