package standalone

import (
	"context"
	"fmt"

	"github.com/detour-acme/detour/internal/solve"
)

// Kind is the kind of a standalone path.
const Kind = "standalone"

// Names of the built-in standalone paths.
const (
	BuiltinHTTP    = "standalone-http"
	BuiltinTLSALPN = "standalone-tls-alpn"
)

// Spec declares the standalone path kind.
var Spec = solve.Spec{
	Kind:       Kind,
	Summary:    "binds the validation port (:80 for http-01, :443 for tls-alpn-01) itself while the CA validates",
	For:        "nothing else listens on port 80 (or 443)",
	Challenges: []string{solve.HTTP01, solve.TLSALPN01},
	Settings: []solve.Setting{
		{Key: "listen", Type: solve.TypeListen, Example: ":80",
			DefaultByChallenge: map[string]string{solve.HTTP01: ":80", solve.TLSALPN01: ":443"},
			Doc:                "the address bound while the CA validates: host:port, or unix:/path behind a local proxy (default :80 for http-01, :443 for tls-alpn-01)"},
	},
	Builtins: []solve.Builtin{
		{Name: BuiltinHTTP, Settings: map[string]string{solve.KeyChallenge: solve.HTTP01}},
		{Name: BuiltinTLSALPN, Settings: map[string]string{solve.KeyChallenge: solve.TLSALPN01}},
	},
	Window: &solve.Window{Listen: "listen"},
	Build: func(_ context.Context, s solve.Settings, env solve.Env) (solve.Solver, error) {
		opts := Options{Logger: env.Logger, Addr: s.Get("listen")}
		switch s.Challenge() {
		case solve.HTTP01:
			return solve.Built(NewHTTP01(opts))
		case solve.TLSALPN01:
			return solve.Built(NewTLSALPN01(opts))
		}
		return nil, fmt.Errorf("%s answers http-01 or tls-alpn-01, not %q", Kind, s.Challenge())
	},
	Example: "web",
}
