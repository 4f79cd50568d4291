package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/kinds"
	"github.com/detour-acme/detour/internal/solve/standalone"
	"github.com/detour-acme/detour/internal/suggest"
)

// DefaultPaths is the paths list of a certificate that does not set one.
var DefaultPaths = []string{standalone.BuiltinHTTP}

// keyKind is the key every [path.NAME] table needs; the others are the
// settings of its kind's spec (package solve/kinds).
const keyKind = "kind"

// Path is a validation path: a [path.NAME] table, or a built-in path. Its
// kind's spec (kinds.Lookup) says what its settings mean.
type Path struct {
	// Name is the [path.NAME] key or the built-in name.
	Name string
	// Kind is the path kind, one of kinds.Names().
	Kind string
	// Settings holds every setting of the path by key, the challenge
	// included, with the kind's defaults applied.
	Settings map[string]string
}

// Challenge returns the ACME challenge type the path answers.
func (p Path) Challenge() string { return p.Settings[solve.KeyChallenge] }

// Setting returns the setting key of p ("" when unset).
func (p Path) Setting(key string) string { return p.Settings[key] }

// SolveSettings returns p's settings as its kind's Build takes them.
func (p Path) SolveSettings() solve.Settings { return solve.NewSettings(p.Name, p.Kind, p.Settings) }

// Kinds returns the names of the path kinds.
func Kinds() []string { return kinds.Names() }

// builtinPath returns the built-in path called name.
func builtinPath(name string) (Path, bool) {
	for _, b := range kinds.Builtins() {
		if b.Name == name {
			return Path{Name: b.Name, Kind: b.Kind, Settings: b.Settings}, true
		}
	}
	return Path{}, false
}

// builtinNames returns the names of the built-in paths.
func builtinNames() []string {
	var out []string
	for _, b := range kinds.Builtins() {
		out = append(out, b.Name)
	}
	return out
}

// pathNames returns the configured and built-in path names.
func (c *Config) pathNames() []string {
	names := builtinNames()
	if c == nil {
		return names
	}
	return append(names, slices.Collect(maps.Keys(c.Paths))...)
}

// Path returns the path called name: a [path.NAME] table or a built-in. A
// nil Config knows only the built-ins.
func (c *Config) Path(name string) (Path, error) {
	if c != nil {
		if p, ok := c.Paths[name]; ok {
			return p, nil
		}
	}
	if p, ok := builtinPath(name); ok {
		return p, nil
	}
	names := c.pathNames()
	return Path{}, fmt.Errorf("unknown path %q%s; known paths: %s (add a [path.%s] table to define it)",
		name, suggest.DidYouMean(name, names), suggest.QuoteList(names), name)
}

// decodePathKeys decodes a [path.NAME] table: kind, then every other key
// as its kind's spec accepts it. A key no kind accepts is an unknown key
// (with a suggestion among the kind's keys); a key of another kind is
// reported as not applying to this one.
func decodePathKeys(l *errList, key string, m map[string]any) *pathTable {
	t := &pathTable{key: key, has: map[string]bool{}, path: Path{Settings: map[string]string{}}}
	if v, ok := m[keyKind]; ok {
		t.has[keyKind] = true
		str(keyKind, &t.path.Kind).decode(l, join(key, keyKind), v)
	}
	spec, known := kinds.Lookup(t.path.Kind)
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if k == keyKind {
			continue
		}
		path := join(key, k)
		if known {
			if _, ok := spec.Setting(k); !ok {
				if other := kindsAccepting(k); len(other) > 0 {
					l.add(path, "%s does not apply to kind %q; remove it (settings of this kind: %s)", k, spec.Kind, suggest.QuoteList(spec.Keys()))
				} else {
					l.unknownKey(path, k, append([]string{keyKind}, spec.Keys()...))
				}
				continue
			}
		} else if len(kindsAccepting(k)) == 0 {
			l.unknownKey(path, k, allPathKeys())
			continue
		}
		t.has[k] = true
		var v string
		if list, ok := m[k].([]any); ok && known && isList(spec, k) {
			// A list setting may be a TOML array or a comma list.
			var items []string
			strList(k, &items).decode(l, path, list)
			t.path.Settings[k] = strings.Join(items, ", ")
			continue
		}
		str(k, &v).decode(l, path, m[k])
		t.path.Settings[k] = v
	}
	return t
}

// isList reports whether key is a list setting of spec.
func isList(spec solve.Spec, key string) bool {
	st, _ := spec.Setting(key)
	return st.Type == solve.TypeList
}

// kindsAccepting returns the kinds whose spec accepts key.
func kindsAccepting(key string) []string {
	var out []string
	for _, sp := range kinds.All() {
		if _, ok := sp.Setting(key); ok {
			out = append(out, sp.Kind)
		}
	}
	return out
}

// allPathKeys returns every key some kind accepts, and kind.
func allPathKeys() []string {
	seen := map[string]bool{keyKind: true}
	for _, sp := range kinds.All() {
		for _, k := range sp.Keys() {
			seen[k] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// validatePath checks one [path.NAME] table against its kind's spec and
// applies the kind's defaults. It reports false when the kind or the
// challenge is unusable, so certificates using the path skip the checks
// that depend on its challenge.
func validatePath(l *errList, t *pathTable) bool {
	name := t.path.Name
	if _, ok := builtinPath(name); ok {
		l.add(t.key, "%q is the name of a built-in path; choose another name (built-ins: %s)", name, suggest.QuoteList(builtinNames()))
	} else if !validName.MatchString(name) {
		l.add(t.key, "%q is not a valid path name; %s", name, nameRule)
	}
	if !t.has[keyKind] {
		l.add(t.key, "kind is missing; add kind = %q (kinds: %s)", standalone.Kind, suggest.QuoteList(Kinds()))
		return false
	}
	spec, ok := kinds.Lookup(t.path.Kind)
	if !ok {
		l.add(join(t.key, keyKind), "unknown kind %q%s; kinds: %s", t.path.Kind, suggest.DidYouMean(t.path.Kind, Kinds()), suggest.QuoteList(Kinds()))
		return false
	}
	t.path.Settings = spec.WithDefaults(t.path.Settings)
	ok = true
	for _, prob := range spec.Validate(name, t.path.Settings) {
		key := t.key
		if prob.Key != "" {
			key = join(t.key, prob.Key)
		}
		if prob.Key == solve.KeyChallenge {
			ok = false
		}
		l.add(key, "%s", prob.Msg)
	}
	return ok
}
