// Package alpnforward is the alpn-forward path kind: tls-alpn-01 (RFC 8737)
// answered on a side address, to which an nginx stream (ssl_preread) or
// HAProxy rule that owns port 443 sends the connections offering ALPN
// acme-tls/1 (`detour snippet tls-alpn` prints the rule). The answering is
// package standalone's; this package only declares the kind.
package alpnforward

import (
	"context"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/standalone"
)

// Kind is the kind of an alpn-forward path.
const Kind = "alpn-forward"

// DefaultAddr is where the forwarded connections arrive by default.
const DefaultAddr = "127.0.0.1:8403"

// Spec declares the alpn-forward path kind.
var Spec = solve.Spec{
	Kind:       Kind,
	Summary:    "answers tls-alpn-01 on a side address that nginx stream or HAProxy sends acme-tls/1 connections to",
	For:        "nginx `stream` or HAProxy owns port 443: add the rule `detour snippet tls-alpn` prints",
	Challenges: []string{solve.TLSALPN01},
	Settings: []solve.Setting{
		{Key: "listen", Type: solve.TypeListen, Default: DefaultAddr, Example: DefaultAddr,
			Doc: "where the proxy on :443 sends connections offering acme-tls/1"},
	},
	Builtins: []solve.Builtin{{Name: Kind}},
	Build: func(_ context.Context, s solve.Settings, env solve.Env) (solve.Solver, error) {
		return solve.Built(standalone.NewTLSALPN01(standalone.Options{Logger: env.Logger, Addr: s.Get("listen"), Name: Kind}))
	},
	Example: "alpn",
}
