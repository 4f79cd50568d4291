// Package kinds is the one list of Detour's path kinds. Each kind declares
// its spec in its own package (challenges, settings, validation, build);
// this package names them, in the order `detour paths` and the example
// configuration show them, and composes them: a kind that answers on port
// 80/443 of this host gets the firewall window settings, and every http-01
// and tls-alpn-01 path without a window the firewall preflight (package
// firewall). Adding a kind is one package with a Spec, plus one line here.
package kinds

import (
	"net"
	"slices"
	"strings"

	"github.com/detour-acme/detour/internal/firewall"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/acmedns"
	"github.com/detour-acme/detour/internal/solve/alpnforward"
	"github.com/detour-acme/detour/internal/solve/dnsembed"
	"github.com/detour-acme/detour/internal/solve/dnsprovider"
	"github.com/detour-acme/detour/internal/solve/frontdoor"
	"github.com/detour-acme/detour/internal/solve/persist"
	"github.com/detour-acme/detour/internal/solve/rfc2136"
	"github.com/detour-acme/detour/internal/solve/script"
	"github.com/detour-acme/detour/internal/solve/sideport"
	"github.com/detour-acme/detour/internal/solve/standalone"
	"github.com/detour-acme/detour/internal/solve/stateless"
	"github.com/detour-acme/detour/internal/solve/webroot"
)

// specs is the list, each composed once.
var specs = compose(
	standalone.Spec,
	webroot.Spec,
	sideport.Spec,
	stateless.Spec,
	alpnforward.Spec,
	frontdoor.Spec,
	dnsembed.Spec,
	rfc2136.Spec,
	acmedns.Spec,
	dnsprovider.Spec,
	persist.Spec,
	script.Spec,
)

func compose(list ...solve.Spec) []solve.Spec {
	out := make([]solve.Spec, len(list))
	for i, sp := range list {
		out[i] = firewall.WithPreflight(firewall.WithWindow(sp))
	}
	return out
}

// All returns every kind's spec, in the list's order.
func All() []solve.Spec { return slices.Clone(specs) }

// Lookup returns the spec of kind.
func Lookup(kind string) (solve.Spec, bool) {
	for _, sp := range specs {
		if sp.Kind == kind {
			return sp, true
		}
	}
	return solve.Spec{}, false
}

// Names returns the kinds, in the list's order.
func Names() []string {
	out := make([]string, len(specs))
	for i, sp := range specs {
		out[i] = sp.Kind
	}
	return out
}

// Answering returns the kinds that can answer challenge type typ.
func Answering(typ string) []string {
	var out []string
	for _, sp := range specs {
		if slices.Contains(sp.Challenges, typ) {
			out = append(out, sp.Kind)
		}
	}
	return out
}

// DNS returns the kinds that answer a DNS challenge (solve.IsDNS).
func DNS() []string {
	var out []string
	for _, sp := range specs {
		if slices.ContainsFunc(sp.Challenges, solve.IsDNS) {
			out = append(out, sp.Kind)
		}
	}
	return out
}

// Builtin is a path that needs no [path.NAME] table.
type Builtin struct {
	Name     string
	Kind     string
	Settings map[string]string // with the kind's defaults applied
}

// Builtins returns every built-in path, in the list's order.
func Builtins() []Builtin {
	var out []Builtin
	for _, sp := range specs {
		for _, b := range sp.Builtins {
			out = append(out, Builtin{Name: b.Name, Kind: sp.Kind, Settings: sp.WithDefaults(b.Settings)})
		}
	}
	return out
}

// Binds returns what a path of spec sp with settings values binds while it
// answers (its listen settings), as keys two renewals must not hold at
// once: a TCP/UDP address is keyed by its port alone (":80" clashes with
// "0.0.0.0:80" and "[::]:80"; two paths on different addresses of one port
// wait for each other, which costs little), a unix socket by its path.
func Binds(sp solve.Spec, values map[string]string) []string {
	var out []string
	for _, s := range sp.Settings {
		v := values[s.Key]
		if s.Type != solve.TypeListen || v == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(v); err == nil && !strings.HasPrefix(v, "unix:") {
			v = ":" + port
		}
		out = append(out, v)
	}
	return out
}
