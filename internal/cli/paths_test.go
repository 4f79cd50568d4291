package cli_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/solve/kinds"
)

// knownKinds are the path kinds Detour has, in the order `detour paths`
// lists them.
var knownKinds = []string{
	"standalone", "webroot", "side-port", "stateless", "alpn-forward", "front-door",
	"dns-embedded", "rfc2136", "acme-dns", "dns-provider", "persist", "exec",
}

// pathsDoc is what `detour paths --json` prints of a kind.
type pathsDoc struct {
	Kind       string   `json:"kind"`
	Summary    string   `json:"summary"`
	Challenges []string `json:"challenges"`
	Settings   []struct {
		Key      string   `json:"key"`
		Type     string   `json:"type"`
		Default  string   `json:"default"`
		Values   []string `json:"values"`
		Required bool     `json:"required"`
		Secret   bool     `json:"secret"`
		Doc      string   `json:"doc"`
	} `json:"settings"`
}

func (d pathsDoc) keys() []string {
	var out []string
	for _, s := range d.Settings {
		out = append(out, s.Key)
	}
	return out
}

// pathsJSON runs `detour paths --json` and decodes it.
func pathsJSON(t *testing.T, args ...string) []pathsDoc {
	t.Helper()
	r := mustRun(t, append([]string{"paths", "--json"}, args...)...)
	var docs []pathsDoc
	if err := json.Unmarshal([]byte(r.stdout), &docs); err != nil {
		t.Fatalf("detour paths --json: %v\n%s", err, r.stdout)
	}
	return docs
}

// testValue returns a value valid for a setting of type typ (the first of
// values for an enum).
func testValue(key, typ string, values []string) string {
	switch key {
	case "tsig_secret":
		return base64.StdEncoding.EncodeToString([]byte("detour test secret"))
	case "zone", "tsig_key":
		return "example.com"
	case "firewall":
		return "aws-sg, nftables"
	}
	switch typ {
	case "enum":
		if len(values) > 0 {
			return values[0]
		}
	case "listen":
		return "127.0.0.1:8499"
	case "address":
		return "192.0.2.53:53"
	case "path":
		return "/etc/detour/" + key
	case "duration":
		return "3m"
	case "port":
		return "8080"
	case "url":
		return "https://auth.example.net"
	case "date":
		return "2099-01-31"
	case "list":
		return "192.0.2.0/24, 2001:db8::/32"
	}
	return "example"
}

// needs lists, for settings that are only valid with others, what those
// others must be.
var needs = map[string]map[string]string{
	"firewall_timeout":     {"firewall": "nftables"},
	"firewall_port":        {"firewall": "nftables"},
	"firewall_open":        {"firewall": "exec", "firewall_close": "/usr/local/bin/close-port"},
	"firewall_close":       {"firewall": "exec", "firewall_open": "/usr/local/bin/open-port"},
	"firewall":             {"firewall_id": "sg-1"},
	"firewall_id":          {"firewall": "digitalocean"},
	"firewall_instance":    {"firewall": "hetzner"},
	"firewall_credentials": {"firewall": "digitalocean", "firewall_id": "1"},
	"firewall_endpoint":    {"firewall": "hetzner", "firewall_id": "1"},
	"firewall_profile":     {"firewall": "aws-sg", "firewall_id": "sg-1"},
	"firewall_region":      {"firewall": "aws-sg", "firewall_id": "sg-1"},
	"tsig_key":             {"tsig_secret_file": "/etc/detour/tsig.secret"},
	"tsig_secret":          {"tsig_key": "detour-key"},
	"tsig_secret_file":     {"tsig_key": "detour-key"},
}

// kindNeeds lists settings a kind needs in every table although `detour
// paths` does not mark them required (its spec checks them in Check).
var kindNeeds = map[string]map[string]string{
	"dns-provider": {"credentials_file": "/etc/detour/dns.credentials"},
}

// pathTable renders a [path.x] table of kind d with its required settings
// (and those kindNeeds names) and extra.
func pathTable(d pathsDoc, extra map[string]string) string {
	set := map[string]string{}
	for _, s := range d.Settings {
		if s.Required {
			set[s.Key] = testValue(s.Key, s.Type, s.Values)
		}
	}
	maps.Copy(set, kindNeeds[d.Kind])
	maps.Copy(set, extra)
	var b strings.Builder
	fmt.Fprintf(&b, "[path.x]\nkind = %q\n", d.Kind)
	for _, k := range slices.Sorted(maps.Keys(set)) {
		fmt.Fprintf(&b, "%s = %q\n", k, set[k])
	}
	return b.String()
}

// TestPathsListsWhatConfigAccepts: `detour paths --json` lists every kind,
// each with exactly the settings its spec declares; `detour config check`
// accepts every listed setting in a table of its kind, and rejects a
// setting listed only for other kinds as not applying to it.
func TestPathsListsWhatConfigAccepts(t *testing.T) {
	t.Parallel()
	docs := pathsJSON(t)
	var names []string
	for _, d := range docs {
		names = append(names, d.Kind)
	}
	if !slices.Equal(names, knownKinds) {
		t.Fatalf("detour paths --json lists kinds %v, want %v", names, knownKinds)
	}
	accepted := map[string][]string{} // key -> kinds listing it
	for _, d := range docs {
		for _, k := range d.keys() {
			accepted[k] = append(accepted[k], d.Kind)
		}
	}
	for _, d := range docs {
		t.Run(d.Kind, func(t *testing.T) {
			t.Parallel()
			if d.Summary == "" || len(d.Challenges) == 0 {
				t.Errorf("kind %s has summary %q, challenges %v", d.Kind, d.Summary, d.Challenges)
			}
			// The listing is complete: what the spec accepts is listed.
			sp, ok := kinds.Lookup(d.Kind)
			if !ok {
				t.Fatalf("kind %s is not in the registry", d.Kind)
			}
			if got, want := d.keys(), sp.Keys(); !slices.Equal(got, want) {
				t.Errorf("listed settings %v, want the spec's %v", got, want)
			}
			// A kind answering on port 80/443 of this host takes a
			// firewall window; no other kind does.
			for _, k := range []string{"firewall", "firewall_timeout", "firewall_port", "firewall_open", "firewall_close"} {
				if listed := slices.Contains(d.keys(), k); listed != (sp.Window != nil) {
					t.Errorf("kind %s (window %v) lists %s: %v", d.Kind, sp.Window != nil, k, listed)
				}
			}
			for _, s := range d.Settings {
				if s.Type == "" || s.Doc == "" {
					t.Errorf("setting %s has type %q, doc %q", s.Key, s.Type, s.Doc)
				}
				if s.Type == "enum" && len(s.Values) == 0 {
					t.Errorf("enum setting %s lists no values", s.Key)
				}
				extra := maps.Clone(needs[s.Key])
				if extra == nil {
					extra = map[string]string{}
				}
				extra[s.Key] = testValue(s.Key, s.Type, s.Values)
				cfg := writeFile(t, "detour.toml", pathTable(d, extra))
				r := run(t, "--config", cfg, "config", "check")
				if r.code != 0 {
					t.Errorf("setting %s = %q of kind %s is listed but config check refuses it: %v", s.Key, extra[s.Key], d.Kind, r)
					continue
				}
				wantIn(t, "config check output", r.stdout, "ok", "1 paths")
			}
			// A key of another kind does not apply to this one.
			foreign := ""
			for _, k := range slices.Sorted(maps.Keys(accepted)) {
				if !slices.Contains(accepted[k], d.Kind) {
					foreign = k
					break
				}
			}
			if foreign == "" {
				t.Fatalf("every listed key applies to %s", d.Kind)
			}
			other := accepted[foreign][0]
			var ov string
			for _, od := range docs {
				if od.Kind == other {
					for _, s := range od.Settings {
						if s.Key == foreign {
							ov = testValue(s.Key, s.Type, s.Values)
						}
					}
				}
			}
			cfg := writeFile(t, "detour.toml", pathTable(d, map[string]string{foreign: ov}))
			r := run(t, "--config", cfg, "config", "check")
			if r.code == 0 {
				t.Fatalf("config check accepts %s (a setting of %s) in a %s table: %v", foreign, other, d.Kind, r)
			}
			wantIn(t, "config check error", r.stderr, foreign, "does not apply to kind", fmt.Sprintf("%q", d.Kind))
		})
	}
}

// TestPathsKind: `detour paths KIND` shows every setting of the kind and
// says which is secret; the JSON of one kind is that kind alone.
func TestPathsKind(t *testing.T) {
	t.Parallel()
	docs := pathsJSON(t, "rfc2136")
	if len(docs) != 1 || docs[0].Kind != "rfc2136" {
		t.Fatalf("detour paths --json rfc2136 = %+v, want rfc2136 alone", docs)
	}
	keys := docs[0].keys()
	for _, k := range []string{"challenge", "server", "zone", "tsig_key", "tsig_algorithm", "tsig_secret", "tsig_secret_file", "propagation_timeout"} {
		if !slices.Contains(keys, k) {
			t.Errorf("detour paths --json rfc2136 does not list %s (lists %v)", k, keys)
		}
	}
	for _, s := range docs[0].Settings {
		if want := s.Key == "tsig_secret"; s.Secret != want {
			t.Errorf("setting %s: secret %v, want %v", s.Key, s.Secret, want)
		}
	}
	r := mustRun(t, "paths", "rfc2136")
	wantIn(t, "detour paths rfc2136", r.stdout, "rfc2136", "dns-01", "secret", "[path.", `kind = "rfc2136"`)
	// Each setting has a line of its own, starting with its key (a key
	// named in another setting's doc does not count); the secret marker is
	// on tsig_secret's line, not tsig_secret_file's.
	var rows []string
	for line := range strings.Lines(r.stdout) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		rows = append(rows, f[0])
		switch f[0] {
		case "tsig_secret":
			wantIn(t, "tsig_secret's line", line, "[secret")
		case "tsig_secret_file":
			if strings.Contains(line, "[secret") {
				t.Errorf("tsig_secret_file is marked secret: %s", line)
			}
		}
	}
	for _, k := range keys {
		if !slices.Contains(rows, k) {
			t.Errorf("detour paths rfc2136 has no line for setting %s:\n%s", k, r.stdout)
		}
	}

	r = mustRun(t, "paths")
	wantIn(t, "detour paths", r.stdout, knownKinds...)
}

// TestPathsUnknownKind: an unknown kind is a usage error listing the
// kinds, with a suggestion for a near miss.
func TestPathsUnknownKind(t *testing.T) {
	t.Parallel()
	r := run(t, "paths", "webrot")
	if r.code != 2 {
		t.Fatalf("detour paths webrot: %v; want exit 2", r)
	}
	wantIn(t, "detour paths webrot", r.stderr, `"webrot"`, `did you mean "webroot"?`, "rfc2136", "dns-provider")

	r = run(t, "paths", "nosuch")
	if r.code != 2 {
		t.Fatalf("detour paths nosuch: %v; want exit 2", r)
	}
	wantIn(t, "detour paths nosuch", r.stderr, append([]string{`"nosuch"`}, knownKinds...)...)
	if strings.Contains(r.stderr, "did you mean") {
		t.Errorf("detour paths nosuch suggests a kind: %s", r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("detour paths nosuch prints on stdout: %s", r.stdout)
	}
}

// TestConfigExampleChecks: the example configuration validates as it
// stands (the files it names, such as /etc/detour/tsig.secret, are read
// only when a path is built) and shows a table of every kind.
func TestConfigExampleChecks(t *testing.T) {
	t.Parallel()
	ex := mustRun(t, "config", "example").stdout
	for _, k := range knownKinds {
		wantIn(t, "detour config example", ex, fmt.Sprintf("kind = %q", k))
	}
	cfg := writeFile(t, "detour.toml", ex)
	r := mustRun(t, "--config", cfg, "config", "check")
	wantIn(t, "config check of the example", r.stdout, cfg, "ok")
}
