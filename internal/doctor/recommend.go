package doctor

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Recommendation is doctor's answer: the configuration to add, or the one
// change to make first.
type Recommendation struct {
	// Ready is true when the configuration works now, with no change.
	Ready bool `json:"ready"`
	// Paths are the chosen paths, by name, in the order the certificate
	// lists them: per name, the best ranked path.
	Paths []ChosenPath `json:"paths"`
	// Changes are the changes to make before the configuration works, one
	// per path that needs one.
	Changes []string `json:"changes,omitempty"`
	// Snippets are the configuration blocks those changes add.
	Snippets []string `json:"snippets,omitempty"`
	// TOML is the configuration to append to detour.toml: the [path.NAME]
	// tables and a [[certificate]] for the names. Empty when no path can
	// work; Blocked then says why.
	TOML    string `json:"toml,omitempty"`
	Blocked string `json:"blocked,omitempty"`
	// Tables are the [path.NAME] tables alone (without the certificate).
	Tables string `json:"-"`
}

// ChosenPath is a path of the recommendation.
type ChosenPath struct {
	// Path is the [path.NAME] name.
	Path string `json:"path"`
	// For are the names it is chosen for.
	For []string `json:"for"`
	Ranked
}

// pathName names the [path.NAME] table of a ranked kind: not a built-in
// path's name, so the table does not shadow one.
func pathName(r Ranked) string {
	var n string
	switch r.Kind {
	case "webroot":
		n = "webroot"
	case "side-port":
		n = "forward"
	case "standalone":
		n = "standalone"
		if r.Challenge == "tls-alpn-01" {
			n = "standalone-tls"
		}
	case "alpn-forward":
		n = "alpn"
	case "front-door":
		n = "front"
	case "acme-dns":
		n = "acmedns"
	case "dns-embedded":
		n = "delegated"
	case "stateless":
		n = "answer"
	case "dns-provider":
		n = "dns"
	default:
		n = r.Kind
	}
	if r.Window != "" {
		n += "-window"
	}
	return n
}

// CertTarget says which [[certificate]] the recommendation is for.
type CertTarget struct {
	// Name is its name (default: the first name).
	Name string
	// Exists: the configuration has it already, so the recommendation
	// says which paths to list in it rather than adding a second one.
	Exists bool
}

// Recommend turns each name's ranking into one configuration: a
// [[certificate]] for names, listing each name's best path. taken are the
// path names the configuration already has: the recommendation's tables
// get other names. Names whose best paths are of one kind with the same
// settings share a table; otherwise each gets its own.
func Recommend(cert CertTarget, ranked map[string][]Ranked, names []string, taken ...string) Recommendation {
	rec := Recommendation{Paths: []ChosenPath{}}
	used := slices.Clone(taken)
	unique := func(n string) string {
		for i, base := 2, n; slices.Contains(used, n); i++ {
			n = fmt.Sprintf("%s-%d", base, i)
		}
		used = append(used, n)
		return n
	}
	var blocked []string
	for _, n := range names {
		best, ok := Best(ranked[n])
		if !ok {
			why := "no path can work"
			if rs := ranked[n]; len(rs) > 0 {
				why = rs[0].Why
			}
			blocked = append(blocked, n+": "+why)
			continue
		}
		if i := slices.IndexFunc(rec.Paths, func(c ChosenPath) bool { return sameTable(c.Ranked, best) }); i >= 0 {
			rec.Paths[i].For = append(rec.Paths[i].For, n)
			continue
		}
		p := best.Existing
		if p == "" {
			p = unique(pathName(best))
		}
		rec.Paths = append(rec.Paths, ChosenPath{Path: p, For: []string{n}, Ranked: best})
	}
	if len(blocked) > 0 {
		rec.Blocked = strings.Join(blocked, "; ")
		return rec
	}
	rec.Ready = true
	var b strings.Builder
	fmt.Fprintf(&b, "# Recommended by `detour doctor` for %s.\n", strings.Join(names, ", "))
	for _, c := range rec.Paths {
		if c.Verdict != Works {
			rec.Ready = false
			rec.Changes = append(rec.Changes, c.Change)
			if c.Snippet != "" {
				rec.Snippets = append(rec.Snippets, c.Snippet)
			}
		}
		if c.Existing != "" {
			fmt.Fprintf(&b, "\n# %s for %s: your [path.%s]: %s\n", c.Kind, strings.Join(c.For, ", "), c.Existing, oneLine(c.Why))
			continue
		}
		fmt.Fprintf(&b, "\n# %s for %s: %s\n", c.Kind, strings.Join(c.For, ", "), oneLine(c.Why))
		if c.Verdict != Works {
			fmt.Fprintf(&b, "# First: %s\n", oneLine(c.Change))
		}
		b.WriteString(pathTable(c))
	}
	rec.Tables = b.String()
	var paths []string
	for _, c := range rec.Paths {
		paths = append(paths, strconv.Quote(c.Path))
	}
	noSelfCheck := slices.ContainsFunc(rec.Paths, func(c ChosenPath) bool { return c.NoSelfCheck })
	name := cmp.Or(cert.Name, names[0])
	if cert.Exists {
		fmt.Fprintf(&b, "\n# In your [[certificate]] named %s, set:\n#   paths = [%s]\n", strconv.Quote(name), strings.Join(paths, ", "))
		if noSelfCheck {
			b.WriteString("#   self_check = false   (NAT: the self-check cannot reach the public address from inside)\n")
		}
		rec.TOML = b.String()
		return rec
	}
	var qnames []string
	for _, n := range names {
		qnames = append(qnames, strconv.Quote(n))
	}
	fmt.Fprintf(&b, "\n[[certificate]]\nname = %s\ndomains = [%s]\npaths = [%s]\n", strconv.Quote(name),
		strings.Join(qnames, ", "), strings.Join(paths, ", "))
	if noSelfCheck {
		b.WriteString("# The name's address is on no interface of this host (NAT): Detour's self-check\n" +
			"# cannot reach it from inside, so it is off; the CA connects from outside.\nself_check = false\n")
	}
	rec.TOML = b.String()
	return rec
}

// sameTable reports whether two ranked paths make the same [path.NAME]
// table (so names can share it).
func sameTable(a, b Ranked) bool {
	return a.Kind == b.Kind && a.Challenge == b.Challenge && a.Window == b.Window && a.Existing == b.Existing &&
		maps.Equal(a.Settings, b.Settings) && a.NoSelfCheck == b.NoSelfCheck
}

// pathTable renders c's [path.NAME] table.
func pathTable(c ChosenPath) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[path.%s]\nkind = %s\n", c.Path, strconv.Quote(c.Kind))
	settings := maps.Clone(c.Settings)
	if settings == nil {
		settings = map[string]string{}
	}
	if _, ok := settings["challenge"]; !ok && c.Kind == "standalone" && c.Challenge != "http-01" {
		settings["challenge"] = c.Challenge
	}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s = %s\n", k, tomlValue(k, settings[k]))
	}
	for _, k := range slices.Sorted(maps.Keys(c.Placeholders)) {
		fmt.Fprintf(&b, "%s = %s   # replace: %s\n", k, strconv.Quote(c.Placeholders[k][0]), c.Placeholders[k][1])
	}
	return b.String()
}

// tomlValue renders a setting's value: lists (firewall) as TOML arrays.
func tomlValue(key, v string) string {
	if key == "firewall" && strings.Contains(v, ",") {
		var q []string
		for _, p := range strings.Split(v, ",") {
			q = append(q, strconv.Quote(strings.TrimSpace(p)))
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	return strconv.Quote(v)
}

// oneLine folds s into one comment line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
