package kinds_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/detour-acme/detour/internal/firewall"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/kinds"
)

// TestSpecsComplete: every kind of the registry declares what config,
// `detour paths`, the example and the planner rely on, and its example
// settings pass its own validation.
func TestSpecsComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, sp := range kinds.All() {
		t.Run(sp.Kind, func(t *testing.T) {
			if sp.Kind == "" || seen[sp.Kind] {
				t.Fatalf("kind %q is empty or listed twice", sp.Kind)
			}
			seen[sp.Kind] = true
			if sp.Summary == "" || sp.For == "" || sp.Build == nil {
				t.Errorf("summary %q, for %q, build set %v: each is needed", sp.Summary, sp.For, sp.Build != nil)
			}
			if len(sp.Challenges) == 0 {
				t.Fatal("no challenge")
			}
			for _, c := range sp.Challenges {
				if !slices.Contains(solve.Types(), c) {
					t.Errorf("challenge %q is not one of %v", c, solve.Types())
				}
			}
			keys := map[string]bool{}
			example := map[string]string{}
			for _, s := range sp.AllSettings() {
				if keys[s.Key] {
					t.Errorf("setting %s declared twice", s.Key)
				}
				keys[s.Key] = true
				if s.Doc == "" || s.Type == "" {
					t.Errorf("setting %s: doc %q, type %q: both are needed", s.Key, s.Doc, s.Type)
				}
				if s.Type == solve.TypeEnum && len(s.Values) == 0 {
					t.Errorf("setting %s is an enum without values", s.Key)
				}
				if s.Example != "" && s.Key != firewall.KeyFirewall && s.Key != firewall.KeyTimeout {
					example[s.Key] = s.Example
				}
			}
			for _, k := range firewall.WindowSettings() {
				if keys[k.Key] != (sp.Window != nil) {
					t.Errorf("window setting %s listed %v, but the kind has a window: %v", k.Key, keys[k.Key], sp.Window != nil)
				}
			}
			if sp.Example != "" {
				if probs := sp.Validate("example", sp.WithDefaults(example)); len(probs) > 0 {
					t.Errorf("the example settings %v do not validate: %v", example, probs)
				}
			}
			for _, c := range sp.Challenges {
				if probs := sp.Validate("x", sp.WithDefaults(map[string]string{solve.KeyChallenge: c})); slices.ContainsFunc(probs, func(p solve.Problem) bool { return p.Key == solve.KeyChallenge }) {
					t.Errorf("challenge %s refused: %v", c, probs)
				}
			}
		})
	}
	if got := kinds.Names(); !slices.Equal(slices.Sorted(maps.Keys(seen)), slices.Sorted(slices.Values(got))) {
		t.Errorf("Names() = %v, specs %v", got, slices.Sorted(maps.Keys(seen)))
	}
}

// TestBuiltins: built-in paths have distinct names, known kinds and
// settings their kind accepts.
func TestBuiltins(t *testing.T) {
	names := map[string]bool{}
	for _, b := range kinds.Builtins() {
		if names[b.Name] {
			t.Errorf("built-in %s listed twice", b.Name)
		}
		names[b.Name] = true
		sp, ok := kinds.Lookup(b.Kind)
		if !ok {
			t.Fatalf("built-in %s has unknown kind %s", b.Name, b.Kind)
		}
		if probs := sp.Validate(b.Name, b.Settings); len(probs) > 0 {
			t.Errorf("built-in %s: %v", b.Name, probs)
		}
	}
	for _, want := range []string{"standalone-http", "standalone-tls-alpn", "side-port", "stateless", "alpn-forward", "front-door", "dns-embedded"} {
		if !names[want] {
			t.Errorf("built-in %s missing", want)
		}
	}
}

// TestTXTKindsAnswerEveryTXTChallenge: the DNS kinds that set records
// themselves answer every TXT challenge type, so a new one (as
// dns-account-01 was) reaches them without touching them.
func TestTXTKindsAnswerEveryTXTChallenge(t *testing.T) {
	for _, k := range []string{"dns-embedded", "rfc2136", "acme-dns"} {
		sp, _ := kinds.Lookup(k)
		if !slices.Equal(sp.Challenges, solve.TXTChallenges()) {
			t.Errorf("%s answers %v, want %v", k, sp.Challenges, solve.TXTChallenges())
		}
		if !slices.Contains(kinds.Answering(solve.DNSAccount01), k) {
			t.Errorf("Answering(dns-account-01) lacks %s", k)
		}
	}
	if slices.Contains(kinds.DNS(), "standalone") || !slices.Contains(kinds.DNS(), "persist") {
		t.Errorf("DNS() = %v", kinds.DNS())
	}
}

// TestBinds: the addresses a path binds are its listen settings.
func TestBinds(t *testing.T) {
	sp, _ := kinds.Lookup("standalone")
	for listen, want := range map[string]string{":80": ":80", "0.0.0.0:80": ":80", "[::]:80": ":80", "192.0.2.1:80": ":80", "unix:/run/d.sock": "unix:/run/d.sock"} {
		if got := kinds.Binds(sp, map[string]string{"listen": listen}); !slices.Equal(got, []string{want}) {
			t.Errorf("standalone on %s binds %v, want [%s]", listen, got, want)
		}
	}
	door, _ := kinds.Lookup("front-door")
	if got := kinds.Binds(door, map[string]string{"router": "127.0.0.1:443"}); len(got) != 0 {
		t.Errorf("front-door binds %v; the router, not the path, binds its address", got)
	}
}
