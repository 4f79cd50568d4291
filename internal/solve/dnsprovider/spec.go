package dnsprovider

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/suggest"
)

// Kind is the kind of a path answered through a DNS provider's API.
const Kind = "dns-provider"

// Settings of a dns-provider path.
const (
	// keyProvider names the provider API, one of Names().
	keyProvider = "provider"
	// keyCredentials is the absolute name of the file holding the
	// provider's credentials ("key = value" lines, mode 0600).
	keyCredentials = "credentials_file"
)

// Spec declares the dns-provider path kind. dns-01, and dns-account-01 for
// the providers whose client Detour writes itself (lego's providers write
// _acme-challenge.<name> and no other record).
var Spec = solve.Spec{
	Kind:       Kind,
	Summary:    "sets dns-01 TXT records through a DNS provider's API (lego's provider clients)",
	For:        "the DNS provider has an API: a credentials file",
	Challenges: []string{solve.DNS01, solve.DNSAccount01},
	Settings: []solve.Setting{
		{Key: keyProvider, Type: solve.TypeEnum, Required: true, Values: Names(), Example: "cloudflare",
			Doc: "the DNS provider whose API sets the records", Check: checkProvider},
		// The credentials are read when the path is built, so that a
		// configuration check never needs the secrets. Spec.Check checks
		// the name, as its message names the provider.
		{Key: keyCredentials, Type: solve.TypePath, Required: true, Example: "/etc/detour/cloudflare.ini",
			Missing: "credentials_file is missing; set it to a file (mode 0600) holding the provider's API credentials as key = value lines",
			Doc:     "file (mode 0600) holding the provider's API credentials as key = value lines", Check: func(string) error { return nil }},
		propagationTimeout(),
	},
	Check: func(s solve.Settings) []solve.Problem {
		if f, name, ok := lookup(s.Get(keyProvider)); ok {
			if err := checkChallenge(name, f, s.Challenge()); err != nil {
				return []solve.Problem{{Key: solve.KeyChallenge, Msg: err.Error()}}
			}
		}
		switch f := s.Get(keyCredentials); {
		case f != "" && !filepath.IsAbs(f):
			return []solve.Problem{{Key: keyCredentials,
				Msg: fmt.Sprintf("%q must be an absolute path, e.g. \"/etc/detour/%s.credentials\"", f, s.Get(keyProvider))}}
		}
		return nil
	},
	Build: func(_ context.Context, s solve.Settings, env solve.Env) (solve.Solver, error) {
		sol, err := buildPath(s, env)
		if err != nil {
			return nil, err // not a nil *Solver in a non-nil interface
		}
		return sol, nil
	},
	Example: "cloud",
}

// propagationTimeout is solve.PropagationTimeout with this kind's message
// and the providers' defaults (Factory.Timeout) in its Doc.
func propagationTimeout() solve.Setting {
	st := solve.PropagationTimeout
	st.Check = checkTimeout
	// The defaults of Detour's own factories are named; the generated
	// ones' (lego's defaults) are too many for one line.
	def := []string{shortDuration(DefaultPropagationTimeout)}
	for _, n := range slices.Sorted(maps.Keys(providers)) {
		if t := providers[n].Timeout; t > DefaultPropagationTimeout {
			def = append(def, shortDuration(t)+" for "+n)
		}
	}
	more := ""
	if len(catalog) > len(providers) {
		more = "; 'detour paths dns-provider NAME' gives each provider's"
	}
	st.Doc = fmt.Sprintf("how long to wait until every authoritative server answers the record (default %s%s)", strings.Join(def, ", "), more)
	return st
}

// shortDuration renders d as "2m" rather than "2m0s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// checkProvider requires one of Names().
func checkProvider(v string) error {
	names := Names()
	if slices.Contains(names, v) {
		return nil
	}
	msg := fmt.Sprintf("%q is not a supported DNS provider%s", v, suggest.DidYouMean(v, names))
	if why, ok := notGenerated[v]; ok {
		msg += fmt.Sprintf(" (lego's %s provider is not in Detour: %s)", v, why)
	}
	if len(names) <= 12 {
		return fmt.Errorf("%s; use one of %s", msg, suggest.QuoteList(names))
	}
	// Too many to list: name Detour's own, which every build has.
	return fmt.Errorf("%s; use one of the %d that 'detour paths dns-provider' lists, such as %s", msg, len(catalog),
		suggest.QuoteList(slices.Collect(maps.Keys(providers))))
}

// checkTimeout requires a positive duration.
func checkTimeout(v string) error {
	if d, err := time.ParseDuration(v); err != nil || d <= 0 {
		return fmt.Errorf("%q is not a positive duration; write e.g. \"5m\" or \"90s\"", v)
	}
	return nil
}

// buildPath builds the solver of a dns-provider path: the provider's API
// client from its credentials_file, and Detour's own propagation check on
// env.Resolver. Settings that Validate refuses fail here too.
func buildPath(s solve.Settings, env solve.Env) (*Solver, error) {
	opts := Options{
		Logger:          env.Logger,
		Provider:        s.Get(keyProvider),
		CredentialsFile: s.Get(keyCredentials),
		Resolver:        env.Resolver,
		Challenge:       s.Challenge(),
		AccountURL:      env.AccountURL(Kind),
	}
	if v := s.Get(solve.PropagationTimeout.Key); v != "" {
		if err := checkTimeout(v); err != nil {
			return nil, fmt.Errorf("%s %w", solve.PropagationTimeout.Key, err)
		}
		opts.PropagationTimeout = s.Duration(solve.PropagationTimeout.Key)
	}
	sol, err := New(opts)
	if err != nil {
		return nil, err
	}
	if env.Resolver != "" {
		// The resolver applies to the whole process, as lego's zone
		// lookups do.
		SetNameservers(env.Resolver)
	}
	return sol, nil
}
