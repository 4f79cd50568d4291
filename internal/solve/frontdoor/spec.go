package frontdoor

import (
	"context"
	"fmt"

	"github.com/detour-acme/detour/internal/solve"
)

// Kind is the kind of a front-door path.
const Kind = "front-door"

// Spec declares the front-door path kind.
var Spec = solve.Spec{
	Kind:       Kind,
	Summary:    "answers tls-alpn-01 through a running `detour router` that owns :443 and passes every other connection on",
	For:        "you can move the HTTPS server to a local port: `detour router` takes :443",
	Challenges: []string{solve.TLSALPN01},
	Settings: []solve.Setting{
		{Key: "router", Type: solve.TypeAddress, Default: DefaultRouterAddr, Example: DefaultRouterAddr, Check: solve.CheckListen,
			Doc: "where `detour router` listens (it learns the challenges from the shared state directory)"},
	},
	Builtins: []solve.Builtin{{Name: Kind}},
	Build: func(_ context.Context, s solve.Settings, env solve.Env) (solve.Solver, error) {
		if env.Store == nil {
			return nil, fmt.Errorf("the %s path shares the state directory with `detour router`, and none is open here", Kind)
		}
		return solve.Built(New(Options{Logger: env.Logger, Store: env.Store, RouterAddr: s.Get("router")}))
	},
	Example: "door",
}
