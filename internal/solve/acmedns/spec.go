package acmedns

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/detour-acme/detour/internal/solve"
)

// Kind is the kind of a path answered through an acme-dns server.
const Kind = "acme-dns"

// Setting keys of an acme-dns path.
const (
	keyServer          = "server"
	keyCredentialsFile = "credentials_file"
	keyAllowFrom       = "allow_from"
)

// exampleCredentialsFile is the credentials file offered in messages.
const exampleCredentialsFile = "/etc/detour/acme-dns.json"

// Spec declares the acme-dns path kind.
var Spec = solve.Spec{
	Kind:       Kind,
	Summary:    "sets the challenge's TXT value through an acme-dns server's API",
	For:        "the DNS provider has no API, or every change needs a ticket: one CNAME _acme-challenge.<name> -> an acme-dns zone",
	Challenges: solve.TXTChallenges(),
	Settings: []solve.Setting{
		{Key: keyServer, Type: solve.TypeURL, Required: true, Example: "https://auth.example.net", Check: checkServer,
			Doc: "the acme-dns API's URL (https://, or http:// on a loopback address only)"},
		{Key: keyCredentialsFile, Type: solve.TypePath, Check: checkCredentialsFile,
			Doc: "keep the accounts in this JSON file (lego/certbot-dns-acmedns format) instead of the state directory"},
		{Key: keyAllowFrom, Type: solve.TypeList, Check: checkAllowFrom,
			Doc: "comma-separated CIDR ranges a new account may update its record from"},
		solve.PropagationTimeout,
	},
	Build: func(_ context.Context, s solve.Settings, env solve.Env) (solve.Solver, error) {
		opts, err := OptionsFrom(s, env)
		if err != nil {
			return nil, err
		}
		sv, err := New(opts)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return sv, nil
	},
	Example: "delegated",
}

// OptionsFrom returns the Options of an acme-dns path with settings s
// (validated, defaults applied): the accounts go to credentials_file when
// it is set, to env.Store otherwise. `detour acme-dns register` uses it too.
func OptionsFrom(s solve.Settings, env solve.Env) (Options, error) {
	opts := Options{
		Logger:          env.Logger,
		Server:          s.Get(keyServer),
		CredentialsFile: s.Get(keyCredentialsFile),
		AllowFrom:       s.List(keyAllowFrom),
		Resolver:        env.Resolver,
		Challenge:       s.Challenge(),
		AccountURL:      env.AccountURL(Kind),
	}
	path := "the acme-dns path"
	if s.Path != "" {
		path = fmt.Sprintf("path %q", s.Path)
	}
	if t := s.Get(solve.PropagationTimeout.Key); t != "" {
		if err := solve.CheckPositiveDuration(t); err != nil {
			return Options{}, fmt.Errorf("%s: %s %w", path, solve.PropagationTimeout.Key, err)
		}
		opts.PropagationTimeout = s.Duration(solve.PropagationTimeout.Key)
	}
	if env.Store != nil {
		opts.Storage = env.Store
	}
	if opts.Storage == nil && opts.CredentialsFile == "" {
		return Options{}, fmt.Errorf("%s: without %s the acme-dns accounts are kept in the state directory, which is not open here; "+
			"set %s (e.g. %q) to keep them in a file instead", path, keyCredentialsFile, keyCredentialsFile, exampleCredentialsFile)
	}
	return opts, nil
}

// checkServer validates the acme-dns API's URL: https://, or http:// for a
// loopback host only, since the API key travels in a header.
func checkServer(v string) error {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not a URL; write the acme-dns API's address, e.g. \"https://auth.example.net\"", v)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip, err := netip.ParseAddr(host); host == "localhost" || err == nil && ip.IsLoopback() {
			return nil
		}
		return fmt.Errorf("%q uses plain http, which would send the API key in clear; use https:// (http:// is accepted only for a loopback address)", v)
	}
	return fmt.Errorf("%q must start with https://", v)
}

// checkAllowFrom validates a comma-separated list of CIDR ranges (IPv6
// ones may be bracketed), reporting the first entry that is not one.
func checkAllowFrom(v string) error {
	for c := range strings.SplitSeq(v, ",") {
		c = strings.TrimSpace(c)
		if _, err := netip.ParsePrefix(strings.NewReplacer("[", "", "]", "").Replace(c)); err != nil {
			return fmt.Errorf("%q is not a CIDR range; write ranges such as \"192.0.2.0/24, 2001:db8::/32\" (a single host is 192.0.2.7/32)", c)
		}
	}
	return nil
}

// checkCredentialsFile requires an absolute file name.
func checkCredentialsFile(v string) error {
	if !strings.HasPrefix(v, "/") {
		return fmt.Errorf("%q must be an absolute path, e.g. %q", v, exampleCredentialsFile)
	}
	return nil
}
