// Package snippet generates the small configuration blocks that let a web
// server which keeps ports 80 and 443 take part in ACME validation:
//
//   - HTTPForward: forward /.well-known/acme-challenge/ (http-01, RFC 8555
//     §8.3) to Detour's side port (internal/solve/sideport), keeping the
//     Host header.
//   - Stateless: answer /.well-known/acme-challenge/<token> with
//     "<token>.<thumbprint>", the key authorization of RFC 8555 §8.1, from
//     the web server itself (internal/solve/stateless).
//   - TLSALPNForward: route TLS connections that offer the "acme-tls/1"
//     protocol (tls-alpn-01, RFC 8737 §3) to Detour and every other TLS
//     connection to the HTTPS server, without terminating TLS.
//
// Each snippet starts with comments saying where it goes and what must not
// run before it (an HTTP-to-HTTPS redirect would send the CA away from the
// answer). The nginx, Apache and HAProxy snippets are tested against the
// real servers.
package snippet

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/detour-acme/detour/internal/solve/sideport"
	"github.com/detour-acme/detour/internal/solve/stateless"
)

// Web server names accepted by the generators. "apache2" and "httpd" are
// accepted for Apache.
const (
	Nginx    = "nginx"
	Apache   = "apache"
	HAProxy  = "haproxy"
	Caddy    = "caddy"
	Traefik  = "traefik"
	Lighttpd = "lighttpd"
)

// HTTPForwardServers lists the servers HTTPForward supports.
func HTTPForwardServers() []string {
	return []string{Nginx, Apache, HAProxy, Caddy, Traefik, Lighttpd}
}

// StatelessServers lists the servers Stateless supports.
func StatelessServers() []string { return []string{Nginx, Apache, HAProxy} }

// TLSALPNForwardServers lists the servers TLSALPNForward supports.
func TLSALPNForwardServers() []string { return []string{Nginx, HAProxy} }

// canonical maps a user-given server name to one of the constants, or ""
// when it is not among supported.
func canonical(server string, supported []string) (string, error) {
	s := strings.ToLower(strings.TrimSpace(server))
	switch s {
	case "apache2", "httpd":
		s = Apache
	}
	if !slices.Contains(supported, s) {
		return "", fmt.Errorf("unknown web server %q: supported are %s", server, strings.Join(supported, ", "))
	}
	return s, nil
}

// CheckServer returns an error listing supported when server is not one of
// them ("apache2" and "httpd" count as Apache). Callers check the name
// before any work the snippet needs, such as registering the ACME account
// whose thumbprint Stateless prints.
func CheckServer(server string, supported []string) error {
	_, err := canonical(server, supported)
	return err
}

// target is a validated address the web server forwards to.
type target struct {
	unix string // socket path, or ""
	host string // IP or DNS name, without brackets
	port int
}

// hostPort is the TCP address in host:port form (IPv6 in brackets).
func (t target) hostPort() string { return net.JoinHostPort(t.host, strconv.Itoa(t.port)) }

// String is the address as Detour's configuration writes it.
func (t target) String() string {
	if t.unix != "" {
		return "unix:" + t.unix
	}
	return t.hostPort()
}

// parseTarget validates a forward target: "host:port" with a concrete host,
// or "unix:/absolute/path". Only characters that are safe unquoted in every
// server's configuration syntax are accepted, so the value cannot inject
// configuration.
func parseTarget(addr, what, example string) (target, error) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !filepath.IsAbs(p) || strings.Trim(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+@") != "" {
			return target{}, fmt.Errorf("invalid %s %q: a Unix socket needs an absolute path of letters, digits and /._-+@, such as \"unix:/run/detour/http.sock\"", what, addr)
		}
		return target{unix: filepath.Clean(p)}, nil
	}
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return target{}, fmt.Errorf("invalid %s %q: want host:port, such as %q, or unix:/path", what, addr, example)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 1 || port > 65535 {
		return target{}, fmt.Errorf("invalid %s %q: the port must be a number from 1 to 65535", what, addr)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return target{}, fmt.Errorf("invalid %s %q: an address with a zone cannot be used; use 127.0.0.1 or ::1", what, addr)
		}
		if ip.IsUnspecified() {
			return target{}, fmt.Errorf("invalid %s %q: the web server must connect to a concrete address; use %q", what, addr, example)
		}
		return target{host: ip.Unmap().String(), port: port}, nil
	}
	if host == "" || strings.Trim(strings.ToLower(host), "abcdefghijklmnopqrstuvwxyz0123456789.-") != "" {
		return target{}, fmt.Errorf("invalid %s %q: the host must be an IP address or a host name, such as %q", what, addr, example)
	}
	return target{host: host, port: port}, nil
}

// fill replaces @NAME@ placeholders in tmpl.
func fill(tmpl string, kv ...string) string {
	return strings.NewReplacer(kv...).Replace(tmpl)
}

// HTTPForward returns the configuration block for server that forwards
// http-01 requests (/.well-known/acme-challenge/) to Detour's side port at
// addr ("127.0.0.1:8402", or "unix:/run/detour/http.sock"; empty means
// sideport.DefaultAddr), keeping the Host header so Detour can match the
// identifier. server is one of HTTPForwardServers.
func HTTPForward(server, addr string) (string, error) {
	srv, err := canonical(server, HTTPForwardServers())
	if err != nil {
		return "", err
	}
	if addr == "" {
		addr = sideport.DefaultAddr
	}
	t, err := parseTarget(addr, "side-port address", sideport.DefaultAddr)
	if err != nil {
		return "", err
	}
	switch srv {
	case Nginx:
		return forwardNginx(t), nil
	case Apache:
		return forwardApache(t), nil
	case HAProxy:
		return forwardHAProxy(t), nil
	case Caddy:
		return forwardCaddy(t), nil
	case Traefik:
		return forwardTraefik(t)
	default: // Lighttpd
		return forwardLighttpd(t), nil
	}
}

// Stateless returns the configuration block for server that answers every
// http-01 request of the ACME account whose key has the RFC 7638 thumbprint
// thumbprint, without Detour running. server is one of StatelessServers.
func Stateless(server, thumbprint string) (string, error) {
	srv, err := canonical(server, StatelessServers())
	if err != nil {
		return "", err
	}
	if err := stateless.ValidThumbprint(thumbprint); err != nil {
		return "", err
	}
	switch srv {
	case Nginx:
		return fill(statelessNginx, "@THUMBPRINT@", thumbprint), nil
	case Apache:
		return fill(statelessApache, "@THUMBPRINT@", thumbprint), nil
	default: // HAProxy
		return fill(statelessHAProxy, "@THUMBPRINT@", thumbprint), nil
	}
}

// TLSALPNForward returns the configuration for server that takes port 443
// and sends TLS connections offering "acme-tls/1" to Detour's tls-alpn-01
// responder at addr (such as "127.0.0.1:8403") and every other connection,
// untouched, to the HTTPS server. The HTTPS server's new address appears as
// the placeholder 127.0.0.1:8443, marked EDIT, for the user to change.
// server is one of TLSALPNForwardServers.
func TLSALPNForward(server, addr string) (string, error) {
	srv, err := canonical(server, TLSALPNForwardServers())
	if err != nil {
		return "", err
	}
	if addr == "" {
		return "", fmt.Errorf("missing Detour's tls-alpn-01 address: give the address Detour answers acme-tls/1 on, such as %q", exampleALPNAddr)
	}
	t, err := parseTarget(addr, "tls-alpn-01 address", exampleALPNAddr)
	if err != nil {
		return "", err
	}
	switch srv {
	case Nginx:
		return alpnNginx(t), nil
	default: // HAProxy
		return alpnHAProxy(t), nil
	}
}
