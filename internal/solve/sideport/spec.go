package sideport

import (
	"context"

	"github.com/detour-acme/detour/internal/solve"
)

// Kind is the kind of a side-port path.
const Kind = "side-port"

// Spec declares the side-port path kind.
var Spec = solve.Spec{
	Kind:       Kind,
	Summary:    "serves http-01 tokens on a side address the web server forwards /.well-known/acme-challenge/ to",
	For:        "a web server or proxy owns port 80 (nginx, Apache, HAProxy, Caddy, Traefik, lighttpd): add the forward `detour snippet http` prints",
	Challenges: []string{solve.HTTP01},
	Settings: []solve.Setting{
		{Key: "listen", Type: solve.TypeListen, Default: DefaultAddr, Example: DefaultAddr,
			Doc: "where Detour answers the forwarded requests: host:port or unix:/path (the forward must point here)"},
	},
	Builtins: []solve.Builtin{{Name: Kind}},
	Window:   &solve.Window{},
	Build: func(_ context.Context, s solve.Settings, env solve.Env) (solve.Solver, error) {
		return solve.Built(New(Options{Logger: env.Logger, Addr: s.Get("listen")}))
	},
	Example: "forward",
}
