package stateless

import (
	"context"

	"github.com/detour-acme/detour/internal/solve"
)

// Kind is the kind of a stateless path.
const Kind = "stateless"

// Spec declares the stateless path kind.
var Spec = solve.Spec{
	Kind:       Kind,
	Summary:    "relies on the web server answering <token>.<account thumbprint> by itself; no Detour process listens",
	For:        "the web server can answer by itself: add the block `detour snippet stateless` prints (your thumbprint filled in)",
	Challenges: []string{solve.HTTP01},
	Builtins:   []solve.Builtin{{Name: Kind}},
	Build: func(ctx context.Context, _ solve.Settings, env solve.Env) (solve.Solver, error) {
		acct, err := env.AccountOf(ctx, Kind)
		if err != nil {
			return nil, err
		}
		return solve.Built(New(Options{Logger: env.Logger, Thumbprint: acct.Thumbprint}))
	},
	Example: "nofiles",
}
