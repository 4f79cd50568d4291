package config

import (
	"strings"

	"github.com/detour-acme/detour/internal/solve"
)

// Router is the [router] table: `detour router` owns a TLS port (normally
// :443), answers tls-alpn-01 itself and passes every other connection to the
// web server.
type Router struct {
	// Listen is the address the router binds. Default ":443".
	Listen string
	// Backend receives connections no route matches ("host:port" or
	// "unix:/path"); empty means such connections are closed.
	Backend string
	// ProxyProtocol prefixes connections to Backend with a PROXY protocol v2
	// header so the backend sees client addresses.
	ProxyProtocol bool
	// Routes send names (exact, or "*.example.com") to other backends.
	Routes []Route
	// Line is where the table starts (0 when the file has none).
	Line int
}

// Route is one [[router.route]] entry.
type Route struct {
	SNI           string
	Backend       string
	ProxyProtocol bool
	Line          int
}

// DefaultRouterListen is where the router listens unless told otherwise.
const DefaultRouterListen = ":443"

const (
	keyRouterTable   = "router"
	keyRouterListen  = "listen"
	keyBackend       = "backend"
	keyProxyProtocol = "proxy_protocol"
	keyRoute         = "route"
	keySNI           = "sni"
)

// decodeRouter decodes the [router] table and its [[router.route]] entries.
func decodeRouter(l *errList, f *file, path string, v any) {
	m, ok := v.(map[string]any)
	if !ok {
		l.typeErr(path, "expected a [router] table, got %s", describe(v))
		return
	}
	r := &f.Router
	r.Line = l.idx.line(path)
	l.table(path, m, []field{
		str(keyRouterListen, &r.Listen),
		str(keyBackend, &r.Backend),
		boolean(keyProxyProtocol, &r.ProxyProtocol),
		{keyRoute, func(l *errList, path string, v any) {
			list, ok := v.([]any)
			if !ok {
				l.typeErr(path, "expected [[router.route]] entries, got %s", describe(v))
				return
			}
			for i, e := range list {
				key := elem(path, i)
				em, ok := e.(map[string]any)
				if !ok {
					l.typeErr(key, "expected a table, got %s", describe(e))
					continue
				}
				rt := Route{Line: l.idx.line(key)}
				has := l.table(key, em, []field{
					str(keySNI, &rt.SNI),
					str(keyBackend, &rt.Backend),
					boolean(keyProxyProtocol, &rt.ProxyProtocol),
				})
				if !has[keySNI] {
					l.add(key, "sni is missing; write the name this route is for, e.g. sni = \"app.example.com\" or \"*.example.com\"")
				}
				if !has[keyBackend] {
					l.add(key, "backend is missing; write where these connections go, e.g. backend = \"127.0.0.1:8443\"")
				}
				r.Routes = append(r.Routes, rt)
			}
		}},
	})
}

// validateRouter checks addresses of the [router] table.
func validateRouter(l *errList, r Router) {
	if r.Line == 0 {
		return
	}
	if r.Listen != "" {
		if err := solve.CheckListen(r.Listen); err != nil {
			l.add(join(keyRouterTable, keyRouterListen), "%v", err)
		}
	}
	if r.Backend != "" {
		if err := solve.CheckListen(r.Backend); err != nil {
			l.add(join(keyRouterTable, keyBackend), "%v", err)
		}
	}
	seen := map[string]bool{}
	for i, rt := range r.Routes {
		key := elem(join(keyRouterTable, keyRoute), i)
		if rt.Backend != "" {
			if err := solve.CheckListen(rt.Backend); err != nil {
				l.add(join(key, keyBackend), "%v", err)
			}
		}
		sni := strings.ToLower(strings.TrimSuffix(rt.SNI, "."))
		if sni != "" {
			if strings.Contains(sni[min(len(sni), 1):], "*") || (strings.HasPrefix(sni, "*") && !strings.HasPrefix(sni, "*.")) {
				l.add(join(key, keySNI), "%q: a wildcard route must be written \"*.example.com\"", rt.SNI)
			}
			if seen[sni] {
				l.add(join(key, keySNI), "%q is routed twice; remove one of the routes", rt.SNI)
			}
			seen[sni] = true
		}
	}
}

// ListenAddr returns the router's listen address with its default.
func (r Router) ListenAddr() string {
	if r.Listen == "" {
		return DefaultRouterListen
	}
	return r.Listen
}
