package rfc2136

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/solve"
)

// Kind is the kind of a path answered by RFC 2136 dynamic updates.
const Kind = "rfc2136"

// tsigAlgorithms are the TSIG algorithms a path accepts (RFC 8945 §6), in
// any case and with an optional trailing dot.
var tsigAlgorithms = []string{"hmac-sha256", "hmac-sha384", "hmac-sha512"}

// Spec declares the rfc2136 path kind.
var Spec = solve.Spec{
	Kind:       Kind,
	Summary:    "sets the TXT record with RFC 2136 dynamic updates to the zone's primary, signed with a TSIG key",
	For:        "the DNS server takes dynamic updates (BIND, Knot, PowerDNS): a TSIG key allowed to update the zone",
	Challenges: solve.TXTChallenges(),
	Settings: []solve.Setting{
		{Key: "server", Type: solve.TypeAddress, Check: checkServer,
			Doc: "host:port the updates are sent to (default: the primary named by the zone's SOA record, port 53)"},
		{Key: "zone", Type: solve.TypeString, Check: checkZone,
			Doc: "the zone updated, e.g. \"example.com\" (default: found from the SOA records of the record's name and its parents)"},
		{Key: "tsig_key", Type: solve.TypeString, Check: checkTSIGKey, Example: "detour-key",
			Doc: "name of the TSIG key that signs the updates, as in the server's configuration (unset: unsigned updates)"},
		{Key: "tsig_algorithm", Type: solve.TypeEnum, Values: tsigAlgorithms, Default: "hmac-sha256", Check: checkTSIGAlgorithm,
			Example: "hmac-sha256", Doc: "algorithm of the TSIG key (any case)"},
		{Key: "tsig_secret", Type: solve.TypeString, Secret: true, Check: checkTSIGSecret,
			Doc: "the TSIG key's secret in base64, as printed by tsig-keygen (tsig_secret_file keeps it out of the configuration)"},
		{Key: "tsig_secret_file", Type: solve.TypePath, Check: checkSecretFile, Example: "/etc/detour/tsig.secret",
			Doc: "file holding the TSIG key's base64 secret, or a BIND key file (tsig-keygen's output) with the key tsig_key names; read when the path is built"},
		solve.PropagationTimeout,
	},
	Check:   check,
	Build:   build,
	Example: "bind",
}

// checkServer requires the update server's host:port.
func checkServer(v string) error {
	if err := solve.CheckListen(v); err != nil || strings.HasPrefix(v, "unix:") || strings.HasPrefix(v, ":") {
		return fmt.Errorf("%q must be the update server's host:port, e.g. \"192.0.2.53:53\" or \"ns1.example.com:53\"", v)
	}
	return nil
}

// checkZone requires a DNS name.
func checkZone(v string) error {
	if _, ok := mdns.IsDomainName(v); !ok || strings.Contains(v, " ") {
		return fmt.Errorf("%q is not a DNS name; write the zone's apex, e.g. \"example.com\"", v)
	}
	return nil
}

// checkTSIGKey requires a key name, which is a DNS name.
func checkTSIGKey(v string) error {
	if _, ok := mdns.IsDomainName(v); !ok || strings.Contains(v, " ") {
		return fmt.Errorf("%q is not a valid key name; use the name of the key statement in named.conf, e.g. \"detour-key\"", v)
	}
	return nil
}

// checkTSIGAlgorithm accepts the algorithms of tsigAlgorithms in any case,
// with an optional trailing dot, as the updater does.
func checkTSIGAlgorithm(v string) error {
	a := strings.TrimSuffix(v, ".")
	for _, ok := range tsigAlgorithms {
		if strings.EqualFold(ok, a) {
			return nil
		}
	}
	q := make([]string, len(tsigAlgorithms))
	for i, a := range tsigAlgorithms {
		q[i] = strconv.Quote(a)
	}
	return fmt.Errorf("%q is not supported; use %s", v, strings.Join(q, ", "))
}

// checkTSIGSecret requires base64.
func checkTSIGSecret(v string) error {
	if _, err := base64.StdEncoding.DecodeString(v); err != nil {
		return fmt.Errorf("the secret is not valid base64 (%v); copy the secret string of the key statement (as printed by tsig-keygen)", err)
	}
	return nil
}

// checkSecretFile requires an absolute file name. The file is read when
// the path is built, not here.
func checkSecretFile(v string) error {
	if !strings.HasPrefix(v, "/") {
		return fmt.Errorf("%q must be an absolute path", v)
	}
	return nil
}

// check validates the TSIG settings together: a key needs exactly one
// secret, a secret needs a key.
func check(s solve.Settings) []solve.Problem {
	key, secret, file := s.Get("tsig_key"), s.Get("tsig_secret"), s.Get("tsig_secret_file")
	switch {
	case secret != "" && file != "":
		return []solve.Problem{{Key: "tsig_secret", Msg: "tsig_secret and tsig_secret_file are both set; keep one (tsig_secret_file keeps the secret out of this file)"}}
	case key != "" && secret == "" && file == "":
		return []solve.Problem{{Key: "tsig_key", Msg: "tsig_key is set without a secret; add tsig_secret_file = \"/etc/detour/tsig.secret\" (or tsig_secret)"}}
	case key == "" && (secret != "" || file != ""):
		return []solve.Problem{{Key: "tsig_key", Msg: "a TSIG secret is set without tsig_key; add tsig_key = the key's name in named.conf"}}
	}
	return nil
}

// build returns the solver of an rfc2136 path, reading the TSIG secret
// from tsig_secret_file when set.
func build(_ context.Context, s solve.Settings, env solve.Env) (solve.Solver, error) {
	opts := Options{
		Logger:             env.Logger,
		Server:             s.Get("server"),
		Zone:               s.Get("zone"),
		TSIGKey:            s.Get("tsig_key"),
		TSIGAlgorithm:      s.Get("tsig_algorithm"),
		TSIGSecret:         s.Get("tsig_secret"),
		Resolver:           env.Resolver,
		PropagationTimeout: s.Duration(solve.PropagationTimeout.Key),
		Challenge:          s.Challenge(),
		AccountURL:         env.AccountURL(Kind),
	}
	if f := s.Get("tsig_secret_file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading tsig_secret_file: %w; check the path and that detour may read it", err)
		}
		if opts.TSIGSecret, err = SecretFromFile(f, string(b), opts.TSIGKey); err != nil {
			return nil, err
		}
	}
	sv, err := New(opts)
	if err != nil {
		return nil, err // not a nil *Solver in a non-nil solve.Solver
	}
	return sv, nil
}
