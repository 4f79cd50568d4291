package dnsembed

import (
	"context"

	"github.com/detour-acme/detour/internal/dnsserver"
	"github.com/detour-acme/detour/internal/solve"
)

// Kind is the kind of a path answered by the embedded DNS responder.
const Kind = "dns-embedded"

// Spec declares the dns-embedded path kind.
var Spec = solve.Spec{
	Kind:       Kind,
	Summary:    "answers DNS challenges from Detour's own authoritative DNS responder",
	For:        "no inbound web port at all: delegate _acme-challenge.<name> (NS) to this host",
	Challenges: solve.TXTChallenges(),
	Settings: []solve.Setting{
		{Key: "listen", Type: solve.TypeListen, Default: ":53", Example: "[::]:53",
			Doc: "UDP and TCP address the responder binds while a challenge is out (delegate _acme-challenge.<name> here with an NS record)"},
	},
	Builtins: []solve.Builtin{{Name: Kind}},
	Build: func(_ context.Context, s solve.Settings, env solve.Env) (solve.Solver, error) {
		srv := dnsserver.New(dnsserver.Options{Logger: env.Logger})
		return solve.Built(New(Options{Logger: env.Logger, Server: srv, Listen: s.Get("listen"),
			Challenge: s.Challenge(), AccountURL: env.AccountURL(Kind)}))
	},
	Example: "dns",
}
