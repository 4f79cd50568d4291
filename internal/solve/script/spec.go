package script

import (
	"context"

	"github.com/detour-acme/detour/internal/solve"
)

// Settings of an exec path.
const (
	keyAuth    = "auth"
	keyCleanup = "cleanup"
	keyTimeout = "timeout"
)

// Spec declares the exec path kind. The hooks are looked at (present,
// executable, safe) by the solver's Check, before each order, not by
// the configuration check, which may run on another host.
var Spec = solve.Spec{
	Kind:       Kind,
	Summary:    "runs your own executables to publish and remove each answer (an http-01 file or a dns-01 TXT record); certbot manual hooks run unchanged",
	For:        "no other path fits (a CDN or bucket serves the files, a DNS provider has only a CLI): a script that publishes the answer",
	Challenges: []string{solve.HTTP01, solve.DNS01},
	Settings: []solve.Setting{
		{Key: keyAuth, Type: solve.TypePath, Required: true, Example: "/etc/detour/hooks/publish", Check: checkCommandName,
			Missing: "auth is missing; kind \"exec\" needs it: the absolute path of the executable that publishes each answer",
			Doc: "absolute path of the executable that publishes each answer, run without a shell or arguments; it gets DETOUR_CHALLENGE, DETOUR_DOMAIN, " +
				"DETOUR_TOKEN (http-01), DETOUR_VALIDATION (the key authorization to serve, or the TXT value), DETOUR_RECORD (dns-01), " +
				"DETOUR_REMAINING_CHALLENGES, DETOUR_ALL_DOMAINS, and certbot's CERTBOT_DOMAIN, CERTBOT_VALIDATION, CERTBOT_TOKEN, " +
				"CERTBOT_REMAINING_CHALLENGES, CERTBOT_ALL_DOMAINS"},
		{Key: keyCleanup, Type: solve.TypePath, Example: "/etc/detour/hooks/unpublish", Check: checkCommandName,
			Doc: "absolute path of the executable that removes each answer once the CA has looked, run like auth with the same variables " +
				"and CERTBOT_AUTH_OUTPUT (what auth printed); unset: nothing is removed"},
		{Key: keyTimeout, Type: solve.TypeDuration, Default: "2m",
			Doc: "how long one run of a hook may take before it is stopped and fails"},
		propagationTimeout(),
	},
	Build: func(_ context.Context, s solve.Settings, env solve.Env) (solve.Solver, error) {
		return New(Options{
			Logger:             env.Logger,
			Challenge:          s.Challenge(),
			Auth:               s.Get(keyAuth),
			Cleanup:            s.Get(keyCleanup),
			Timeout:            s.Duration(keyTimeout),
			Resolver:           env.Resolver,
			PropagationTimeout: s.Duration(solve.PropagationTimeout.Key),
		})
	},
	Example: "script",
}

// propagationTimeout is solve.PropagationTimeout, which only a dns-01
// path uses.
func propagationTimeout() solve.Setting {
	st := solve.PropagationTimeout
	st.Doc = "dns-01: " + st.Doc
	return st
}
