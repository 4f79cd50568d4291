package config

import (
	"github.com/detour-acme/detour/internal/suggest"

	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
)

// ACME challenge types (RFC 8555 §8.3, §8.4; RFC 8737).
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
	ChallengeDNS01     = "dns-01"
	// ChallengeDNSPersist01 is draft-ietf-acme-dns-persist.
	ChallengeDNSPersist01 = "dns-persist-01"
)

// Path kinds.
const (
	// KindStandalone binds :80 (http-01) or :443 (tls-alpn-01) itself.
	KindStandalone = "standalone"
	// KindDNSEmbedded answers dns-01 through Detour's own authoritative
	// responder for a delegated _acme-challenge zone.
	KindDNSEmbedded = "dns-embedded"
	// KindWebroot writes http-01 tokens into the docroot the running web
	// server serves.
	KindWebroot = "webroot"
	// KindSidePort serves http-01 tokens on a side address (default
	// 127.0.0.1:8402, or a unix socket) that the web server forwards
	// /.well-known/acme-challenge/ to.
	KindSidePort = "side-port"
	// KindStateless relies on the web server answering
	// <token>.<account thumbprint> itself.
	KindStateless = "stateless"
	// KindALPNForward answers tls-alpn-01 on a side address (default
	// 127.0.0.1:8403) that an nginx stream or HAProxy rule sends acme-tls/1
	// connections to.
	KindALPNForward = "alpn-forward"
	// KindFrontDoor answers tls-alpn-01 through a running `detour router`
	// that owns :443 and passes other connections to the web server.
	KindFrontDoor = "front-door"
	// KindRFC2136 sets dns-01 TXT records with RFC 2136 dynamic updates
	// (TSIG-signed) on the zone's primary server.
	KindRFC2136 = "rfc2136"
	// KindACMEDNS updates dns-01 TXT records through an acme-dns API
	// (any acme-dns server, or `detour dns-server`) after a one-time CNAME.
	KindACMEDNS = "acme-dns"
	// KindDNSProvider sets dns-01 TXT records through a DNS provider's API.
	KindDNSProvider = "dns-provider"
	// KindPersist relies on a standing _validation-persist TXT record
	// (dns-persist-01): no DNS change at renewal.
	KindPersist = "persist"
)

// Names of the built-in paths, usable in a certificate's paths without a
// [path.NAME] table.
const (
	BuiltinStandaloneHTTP    = "standalone-http"
	BuiltinStandaloneTLSALPN = "standalone-tls-alpn"
	BuiltinDNSEmbedded       = "dns-embedded"
	BuiltinSidePort          = "side-port"
	BuiltinStateless         = "stateless"
	BuiltinALPNForward       = "alpn-forward"
	BuiltinFrontDoor         = "front-door"
)

// DefaultPaths is the paths list of a certificate that does not set one.
var DefaultPaths = []string{BuiltinStandaloneHTTP}

// Keys of a [path.NAME] table. Every kind accepts keyKind; the others are
// settings a kind lists in kindSpec.settings.
const (
	keyKind      = "kind"
	keyChallenge = "challenge"
	keyListen    = "listen"
	keyRoot      = "root"
	keyRouter    = "router"
)

// kindSpec describes one path kind. Adding a kind is one entry in kinds
// (plus a Path field and a decoder in pathSettings if it brings a new
// setting).
type kindSpec struct {
	// challenges lists the challenge types the kind can answer; the first
	// is the default.
	challenges []string
	// listen is the default listen address for each challenge type; a
	// challenge without an entry has no listener.
	listen map[string]string
	// settings lists the table keys, besides kind, the kind accepts.
	settings []string
	// required lists the settings that must be set.
	required []string
	// defaults gives defaults of settings other than listen.
	defaults map[string]string
	// check, when set, validates the kind's settings after defaults; each
	// problem names the setting (a key of the table) and what to change.
	check func(p Path) []SettingProblem
}

// SettingProblem is one invalid setting of a path.
type SettingProblem struct {
	Key string // the setting, e.g. "tsig_secret"
	Msg string // what is wrong and what to change
}

// kinds is the table of path kinds.
var kinds = map[string]kindSpec{
	KindStandalone: {
		challenges: []string{ChallengeHTTP01, ChallengeTLSALPN01},
		listen:     map[string]string{ChallengeHTTP01: ":80", ChallengeTLSALPN01: ":443"},
		settings:   []string{keyChallenge, keyListen},
	},
	KindDNSEmbedded: {
		challenges: []string{ChallengeDNS01},
		listen:     map[string]string{ChallengeDNS01: ":53"},
		settings:   []string{keyChallenge, keyListen},
	},
	KindWebroot: {
		challenges: []string{ChallengeHTTP01},
		settings:   []string{keyChallenge, keyRoot},
		required:   []string{keyRoot},
	},
	KindSidePort: {
		challenges: []string{ChallengeHTTP01},
		listen:     map[string]string{ChallengeHTTP01: "127.0.0.1:8402"},
		settings:   []string{keyChallenge, keyListen},
	},
	KindStateless: {
		challenges: []string{ChallengeHTTP01},
		settings:   []string{keyChallenge},
	},
	KindALPNForward: {
		challenges: []string{ChallengeTLSALPN01},
		listen:     map[string]string{ChallengeTLSALPN01: "127.0.0.1:8403"},
		settings:   []string{keyChallenge, keyListen},
	},
	KindFrontDoor: {
		challenges: []string{ChallengeTLSALPN01},
		settings:   []string{keyChallenge, keyRouter},
		defaults:   map[string]string{keyRouter: "127.0.0.1:443"},
	},
	KindRFC2136: {
		challenges: []string{ChallengeDNS01},
		settings: []string{keyChallenge, "server", "zone", "tsig_key", "tsig_algorithm", "tsig_secret", "tsig_secret_file",
			"propagation_timeout"},
		defaults: map[string]string{"tsig_algorithm": "hmac-sha256"},
	},
	KindACMEDNS: {
		challenges: []string{ChallengeDNS01},
		settings:   []string{keyChallenge, "server", "credentials_file", "allow_from", "propagation_timeout"},
		required:   []string{"server"},
	},
	KindDNSProvider: {
		challenges: []string{ChallengeDNS01},
		settings:   []string{keyChallenge, "provider", "credentials_file", "propagation_timeout"},
		required:   []string{"provider"},
	},
	KindPersist: {
		challenges: []string{ChallengeDNSPersist01},
		settings:   []string{keyChallenge, "policy", "persist_until"},
	},
}

// Settings that wrap a path in a firewall window (open the port only while
// the CA validates): accepted by every kind that binds or serves port 80/443.
const (
	keyFirewall        = "firewall"
	keyFirewallTimeout = "firewall_timeout"
)

func init() {
	for _, k := range []string{KindStandalone, KindSidePort, KindWebroot} {
		spec := kinds[k]
		spec.settings = append(spec.settings, keyFirewall, keyFirewallTimeout)
		kinds[k] = spec
	}
}

// pathSettings decodes every setting any kind accepts into a Path. A key
// missing here is an unknown key; a key here but not in the kind's settings
// is reported as not applying to that kind.
var pathSettings = map[string]func(p *Path) *string{
	keyChallenge: func(p *Path) *string { return &p.Challenge },
	keyListen:    func(p *Path) *string { return &p.Listen },
	keyRoot:      func(p *Path) *string { return &p.Root },
	keyRouter:    func(p *Path) *string { return &p.Router },
}

// builtinPaths are the paths usable by name without a [path.NAME] table.
var builtinPaths = map[string]Path{
	BuiltinStandaloneHTTP:    {Name: BuiltinStandaloneHTTP, Kind: KindStandalone, Challenge: ChallengeHTTP01, Listen: ":80"},
	BuiltinStandaloneTLSALPN: {Name: BuiltinStandaloneTLSALPN, Kind: KindStandalone, Challenge: ChallengeTLSALPN01, Listen: ":443"},
	BuiltinDNSEmbedded:       {Name: BuiltinDNSEmbedded, Kind: KindDNSEmbedded, Challenge: ChallengeDNS01, Listen: ":53"},
	BuiltinSidePort:          {Name: BuiltinSidePort, Kind: KindSidePort, Challenge: ChallengeHTTP01, Listen: "127.0.0.1:8402"},
	BuiltinStateless:         {Name: BuiltinStateless, Kind: KindStateless, Challenge: ChallengeHTTP01},
	BuiltinALPNForward:       {Name: BuiltinALPNForward, Kind: KindALPNForward, Challenge: ChallengeTLSALPN01, Listen: "127.0.0.1:8403"},
	BuiltinFrontDoor:         {Name: BuiltinFrontDoor, Kind: KindFrontDoor, Challenge: ChallengeTLSALPN01, Router: "127.0.0.1:443"},
}

// Kinds returns the names of the supported path kinds, sorted.
func Kinds() []string {
	return slices.Sorted(maps.Keys(kinds))
}

// ChallengeOf returns the ACME challenge type p answers: "http-01",
// "tls-alpn-01" or "dns-01". A path without an explicit challenge answers
// its kind's default; an unknown kind yields "".
func ChallengeOf(p Path) string {
	if p.Challenge != "" {
		return p.Challenge
	}
	if k, ok := kinds[p.Kind]; ok {
		return k.challenges[0]
	}
	return ""
}

// defaultPath fills a path's unset challenge and listen address from its
// kind. Unknown kinds are left alone for validation to report.
func defaultPath(p *Path) {
	k, ok := kinds[p.Kind]
	if !ok {
		return
	}
	if p.Challenge == "" {
		p.Challenge = k.challenges[0]
	}
	if p.Listen == "" {
		p.Listen = k.listen[p.Challenge]
	}
	for key, def := range k.defaults {
		if get, ok := pathSettings[key]; ok {
			if v := get(p); *v == "" {
				*v = def
			}
			continue
		}
		if p.Settings[key] == "" {
			if p.Settings == nil {
				p.Settings = map[string]string{}
			}
			p.Settings[key] = def
		}
	}
}

// extraSettings lists, sorted, the settings some kind accepts that have no
// field of their own in Path: they are kept in Path.Settings.
func extraSettings() []string {
	seen := map[string]bool{}
	for _, k := range kinds {
		for _, s := range k.settings {
			if _, ok := pathSettings[s]; !ok {
				seen[s] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// Setting returns a kind-specific setting of p ("" when unset).
func (p Path) Setting(key string) string { return p.Settings[key] }

// checkListen validates a host:port listen address with a numeric port in
// 1-65535. The host may be empty (all addresses).
func checkListen(addr string) error {
	if rest, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !strings.HasPrefix(rest, "/") {
			return fmt.Errorf("%q: a unix socket path must be absolute, e.g. \"unix:/run/detour/http.sock\"", addr)
		}
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (%v); write e.g. \":80\" or \"192.0.2.1:80\"", addr, stripAddrErr(err, addr))
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q must be a number from 1 to 65535", addr, port)
	}
	return nil
}

// stripAddrErr returns the reason from a net.AddrError without repeating the
// address.
func stripAddrErr(err error, addr string) string {
	if ae, ok := err.(*net.AddrError); ok {
		return ae.Err
	}
	return err.Error()
}

// pathNames returns the configured and built-in path names.
func (c *Config) pathNames() []string {
	names := slices.Collect(maps.Keys(builtinPaths))
	if c == nil {
		return names
	}
	for n := range c.Paths {
		names = append(names, n)
	}
	return names
}

// Path returns the path called name: a [path.NAME] table or a built-in. A
// nil Config knows only the built-ins.
func (c *Config) Path(name string) (Path, error) {
	if c != nil {
		if p, ok := c.Paths[name]; ok {
			return p, nil
		}
	}
	if p, ok := builtinPaths[name]; ok {
		return p, nil
	}
	names := c.pathNames()
	return Path{}, fmt.Errorf("unknown path %q%s; known paths: %s (add a [path.%s] table to define it)",
		name, suggest.DidYouMean(name, names), suggest.QuoteList(names), name)
}
