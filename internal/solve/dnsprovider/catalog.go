package dnsprovider

//go:generate go run ./gen

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/suggest"
)

// The catalog: every provider a dns-provider path can name. Three sources,
// merged once, the first that has a name winning:
//
//   - providers (registry.go): Detour's own factories, in every build;
//   - handWritten (handwritten.go): factories for lego providers whose
//     constructors the generator cannot read (SDK credential chains,
//     alternative logins), left out of the slim build;
//   - generated (zz_generated.go, `go generate`): one factory for each
//     other lego provider, left out of the slim build (-tags detour_slim).
//
// generatedAliases gives other names of generated providers; notGenerated
// says why each other lego provider is missing.
var catalog, catalogAliases = func() (map[string]Factory, map[string]string) {
	all := maps.Clone(generated)
	maps.Copy(all, handWritten)
	maps.Copy(all, providers)
	aliases := map[string]string{}
	for a, to := range generatedAliases {
		if _, ok := all[a]; !ok {
			aliases[a] = to
		}
	}
	for name, f := range all {
		// A hand-written factory is also known by lego's code.
		for _, a := range append(slices.Clone(f.Aliases), f.Lego) {
			if _, ok := all[a]; !ok && a != "" && a != NoLego && a != name {
				aliases[a] = name
			}
		}
	}
	return all, aliases
}()

// lookup returns the factory of name (a provider's name or an alias) and
// the provider's name.
func lookup(name string) (Factory, string, bool) {
	if to, ok := catalogAliases[name]; ok {
		name = to
	}
	f, ok := catalog[name]
	return f, name, ok
}

// Names returns every name provider = "..." accepts, aliases included,
// sorted.
func Names() []string {
	return slices.Sorted(func(yield func(string) bool) {
		for n := range catalog {
			if !yield(n) {
				return
			}
		}
		for n := range catalogAliases {
			if !yield(n) {
				return
			}
		}
	})
}

// Keys returns the credential keys provider reads (nil for an unknown one).
func Keys(provider string) []string {
	f, _, ok := lookup(provider)
	if !ok {
		return nil
	}
	out := make([]string, len(f.Keys))
	for i, k := range f.Keys {
		out[i] = k.Name
	}
	return out
}

// Provider documents one provider, for `detour paths dns-provider`.
type Provider struct {
	// Name is the name provider = "..." takes.
	Name string
	// Aliases are other names accepted for it.
	Aliases []string
	// Title and URL name the provider for people.
	Title, URL string
	// Lego is the code of the lego provider package it drives; empty for
	// a provider Detour talks to with its own client.
	Lego string
	// Generated reports a factory generated from lego's source, rather
	// than one written for Detour.
	Generated bool
	// Timeout is its default propagation timeout.
	Timeout time.Duration
	// Keys are the keys of its credentials file.
	Keys []Key
	// Help says which keys it needs.
	Help string
}

// Providers returns every provider, sorted by name.
func Providers() []Provider {
	out := make([]Provider, 0, len(catalog))
	for _, n := range slices.Sorted(maps.Keys(catalog)) {
		out = append(out, describe(n))
	}
	return out
}

// Describe returns the provider called name (or an alias of it). An
// unknown name's error offers the closest known one and, for a lego
// provider Detour leaves out, says why.
func Describe(name string) (Provider, error) {
	if _, n, ok := lookup(name); ok {
		return describe(n), nil
	}
	return Provider{}, unknownProvider(name)
}

func describe(name string) Provider {
	f := catalog[name]
	p := Provider{Name: name, Title: f.Title, URL: f.URL, Lego: cmp.Or(f.Lego, name), Timeout: effectiveTimeout(f),
		Keys: slices.Clone(f.Keys), Help: f.help()}
	if f.Lego == NoLego {
		p.Lego = ""
	}
	_, p.Generated = generated[name]
	if _, ok := providers[name]; ok {
		p.Generated = false
	}
	if _, ok := handWritten[name]; ok {
		p.Generated = false
	}
	for a, to := range catalogAliases {
		if to == name {
			p.Aliases = append(p.Aliases, a)
		}
	}
	slices.Sort(p.Aliases)
	return p
}

// effectiveTimeout is f's default propagation timeout.
func effectiveTimeout(f Factory) time.Duration { return max(f.Timeout, DefaultPropagationTimeout) }

// help says which keys f needs: its Help, else its required keys with
// their docs, and its optional keys' names.
func (f Factory) help() string {
	if f.Help != "" {
		return f.Help
	}
	var req, opt []string
	for _, k := range f.Keys {
		if k.Required {
			if k.Doc != "" {
				req = append(req, fmt.Sprintf("%s (%s)", k.Name, strings.TrimSuffix(k.Doc, ".")))
			} else {
				req = append(req, k.Name)
			}
		} else {
			opt = append(opt, k.Name)
		}
	}
	s := strings.Join(req, ", ")
	if len(opt) > 0 {
		if s != "" {
			s += "; "
		}
		s += "optional " + strings.Join(opt, ", ")
	}
	if s == "" {
		s = "no keys"
	}
	return s
}

// unknownProvider is the error for a provider name not in the catalog.
func unknownProvider(name string) error {
	msg := fmt.Sprintf("unknown DNS provider %q%s", name, suggest.DidYouMean(name, Names()))
	switch why, ok := notGenerated[name]; {
	case ok:
		msg += fmt.Sprintf(" (lego's %s provider is not in Detour: %s)", name, why)
	case slimBuild:
		msg += " (this binary was built with -tags detour_slim, without the providers generated from lego)"
	}
	return fmt.Errorf("%s; %s", msg, knownProviders())
}

// knownProviders names the providers for a message: all of them when
// they are few, else the way to list them.
func knownProviders() string {
	names := slices.Sorted(maps.Keys(catalog))
	if len(names) <= 12 {
		return "known providers: " + strings.Join(names, ", ")
	}
	return fmt.Sprintf("'detour paths dns-provider' lists the %d known providers", len(names))
}
