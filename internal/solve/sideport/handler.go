package sideport

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/standalone"
)

// challengePrefix is the path prefix of http-01 requests (RFC 8555 §8.3).
const challengePrefix = "/.well-known/acme-challenge/"

// trustKey is the context key under which markConn records whether a
// connection comes from the local proxy.
type trustKey struct{}

// markConn is the http.Server ConnContext hook: it records whether c comes
// from loopback or a Unix socket, where forwarding headers are believed.
func markConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, trustKey{}, trustedAddr(c.RemoteAddr()))
}

// trustedAddr reports whether a peer at a is the local proxy: a Unix socket
// peer or a loopback address.
func trustedAddr(a net.Addr) bool {
	switch a := a.(type) {
	case *net.UnixAddr:
		return true
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case nil:
		return false
	}
	return trustedRemote(a.String())
}

// trustedRemote reports whether an http.Request RemoteAddr is loopback.
func trustedRemote(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	return ap.Addr().IsLoopback()
}

// trusted reports whether forwarding headers of r are believed.
func (s *Solver) trusted(r *http.Request) bool {
	if !s.trustForwarded {
		return false
	}
	if v, ok := r.Context().Value(trustKey{}).(bool); ok {
		return v
	}
	// Mounted in another server: only the request's RemoteAddr is known.
	return trustedRemote(r.RemoteAddr)
}

// hosts returns the normalised hosts a request may be for, best first: the
// Forwarded host= values and X-Forwarded-Host values when trusted, then
// Host. Empty values are dropped.
func (s *Solver) hosts(r *http.Request) []string {
	var raw []string
	if s.trusted(r) {
		raw = append(raw, forwardedHosts(r.Header.Values("Forwarded"))...)
		for _, v := range r.Header.Values("X-Forwarded-Host") {
			raw = append(raw, strings.Split(v, ",")...)
		}
	}
	raw = append(raw, r.Host)
	out := make([]string, 0, len(raw))
	for _, h := range raw {
		if n := standalone.NormalizeHost(h); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// forwardedHosts returns the host= parameters of Forwarded header values
// (RFC 7239 §4), in order, unquoted. Malformed pairs are skipped.
func forwardedHosts(values []string) []string {
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

// unquote decodes an RFC 9110 quoted-string.
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

// ServeHTTP answers one http-01 request: the key authorization for a
// presented token whose identifier matches the request's host (Host, or a
// forwarded host from the local proxy). Unknown tokens get 404 with a body
// that names the token and host, to help diagnose a forward that rewrites
// the Host header or points at the wrong Detour.
func (s *Solver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.URL.Path, challengePrefix)
	if !ok {
		notFound(w, "detour: only "+challengePrefix+"<token> is served here")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	if !solve.ValidToken(token) {
		notFound(w, fmt.Sprintf("detour: %q is not an ACME token", token))
		return
	}
	hosts := s.hosts(r)
	var keyAuth string
	found := false
	s.mu.RLock()
	for _, h := range hosts {
		if e, ok := s.entries[key{host: h, token: token}]; ok {
			keyAuth, found = e.keyAuth, true
			break
		}
	}
	s.mu.RUnlock()
	host := r.Host
	if len(hosts) > 0 {
		host = hosts[0]
	}
	if !found {
		s.log.Info("side port: request for an unknown challenge", "remote_addr", r.RemoteAddr, "host", host, "token", token)
		msg := fmt.Sprintf("detour: no challenge for token %s on host %s", token, host)
		if others := s.hostsOf(token); len(others) > 0 {
			msg += fmt.Sprintf(" (it was presented for %s: does the proxy pass the original Host header?)", strings.Join(others, ", "))
		}
		notFound(w, msg)
		return
	}
	s.log.Debug("side port: http-01 request", "remote_addr", r.RemoteAddr, "host", host, "token", token)
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Length", strconv.Itoa(len(keyAuth)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte(keyAuth))
	}
}

// hostsOf lists the identifiers token is presented for.
func (s *Solver) hostsOf(token string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for k := range s.entries {
		if k.token == token {
			out = append(out, k.host)
		}
	}
	slices.Sort(out)
	return out
}

// notFound writes a plain-text 404 with msg as the body.
func notFound(w http.ResponseWriter, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNotFound)
	_, _ = fmt.Fprintln(w, msg)
}
