package config

import (
	"github.com/detour-acme/detour/internal/suggest"

	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Top-level and table keys.
const (
	keyStateDir  = "state_dir"
	keyEmail     = "email"
	keyCA        = "ca"
	keyDefaultCA = "default_ca"
	keyKeyType   = "key_type"
	keyAgreeTOS  = "agree_tos"
	keyPath      = "path"
	keyCert      = "certificate"

	keyDirectory      = "directory"
	keyStaging        = "staging"
	keyRootBundle     = "root_bundle"
	keyEABKID         = "eab_kid"
	keyEABHMACKey     = "eab_hmac_key"
	keyEABHMACKeyFile = "eab_hmac_key_file"

	keyName           = "name"
	keyDomains        = "domains"
	keyProfile        = "profile"
	keyPreferredChain = "preferred_chain"
	keyPaths          = "paths"
	keySelfCheck      = "self_check"
	keyDeployHook     = "deploy_hook"
)

// file mirrors the TOML document after decoding, before defaults and
// validation. Every table remembers its key path and which keys it set.
type file struct {
	StateDir, Email, CA, KeyType string
	AgreeTOS                     bool
	// caKey is the key the default CA was written under (default_ca, or
	// its alias ca), for error locations.
	caKey string
	CAs   map[string]*caTable
	Paths map[string]*pathTable
	Certs []*certTable
	// Router is the [router] table.
	Router Router
	// Store is the [store] table; storeHas the keys it set.
	Store    Store
	storeHas map[string]bool
	// Agent holds the agent's keys; agentDays records notify_days was set.
	Agent     Agent
	agentDays bool
}

// caTable is one [ca.NAME] table.
type caTable struct {
	key  string
	has  map[string]bool
	name string

	Directory, Staging, RootBundle, EABKeyID, EABHMACKey, EABHMACKeyFile, Email string
}

// pathTable is one [path.NAME] table.
type pathTable struct {
	key  string
	has  map[string]bool
	path Path
}

// certTable is one [[certificate]] entry.
type certTable struct {
	key  string
	has  map[string]bool
	cert Certificate
}

// field decodes one key of a table.
type field struct {
	key    string
	decode func(l *errList, key string, v any)
}

// str decodes a string.
func str(key string, dst *string) field {
	return field{key, func(l *errList, path string, v any) {
		s, ok := v.(string)
		if !ok {
			l.typeErr(path, "expected a string, got %s; quote the value, e.g. %s = \"...\"", describe(v), key)
			return
		}
		*dst = s
	}}
}

// boolean decodes a boolean.
func boolean(key string, dst *bool) field {
	return field{key, func(l *errList, path string, v any) {
		b, ok := v.(bool)
		if !ok {
			l.typeErr(path, "expected true or false (unquoted), got %s", describe(v))
			return
		}
		*dst = b
	}}
}

// strList decodes a list of strings.
func strList(key string, dst *[]string) field {
	return field{key, func(l *errList, path string, v any) {
		if s, ok := v.(string); ok {
			l.typeErr(path, "expected a list of strings, got a string; write %s = [%q]", key, s)
			return
		}
		list, ok := v.([]any)
		if !ok {
			l.typeErr(path, "expected a list of strings, got %s; write e.g. %s = [\"a\", \"b\"]", describe(v), key)
			return
		}
		out := make([]string, 0, len(list))
		for i, e := range list {
			s, ok := e.(string)
			if !ok {
				l.typeErr(elem(path, i), "expected a string, got %s; quote each entry of %s", describe(e), key)
				l.bad[path] = true
				continue
			}
			out = append(out, s)
		}
		*dst = out
	}}
}

// describe names the TOML type of a decoded value.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("a string (%q)", v)
	case bool:
		return fmt.Sprintf("a boolean (%t)", v)
	case int64:
		return fmt.Sprintf("an integer (%d)", v)
	case float64:
		return fmt.Sprintf("a number (%g)", v)
	case []any:
		return "a list"
	case map[string]any:
		return "a table"
	case time.Time, toml.LocalDate, toml.LocalTime, toml.LocalDateTime:
		return "a date/time"
	}
	return fmt.Sprintf("a %T", v)
}

// table decodes m with fields, reports unknown keys, and returns the set of
// keys present (including those with a wrong type).
func (l *errList) table(path string, m map[string]any, fields []field) map[string]bool {
	byKey := make(map[string]field, len(fields))
	known := make([]string, len(fields))
	for i, f := range fields {
		byKey[f.key] = f
		known[i] = f.key
	}
	has := make(map[string]bool, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		f, ok := byKey[k]
		if !ok {
			l.unknownKey(join(path, k), k, known)
			continue
		}
		has[k] = true
		f.decode(l, join(path, k), m[k])
	}
	return has
}

// unknownKey reports a key no table accepts.
func (l *errList) unknownKey(path, key string, known []string) {
	if s := suggest.Closest(key, known); s != "" {
		l.add(path, "unknown key %q; did you mean %q?", key, s)
		return
	}
	l.add(path, "unknown key %q; known keys here: %s", key, suggest.QuoteList(known))
}

// decode turns the generic TOML tree into a file, reporting unknown keys
// and wrong types. This is the load step: no defaults, no semantic checks.
func decode(l *errList, tree map[string]any) *file {
	f := &file{CAs: map[string]*caTable{}, Paths: map[string]*pathTable{}}
	var defaultCA string
	fields := []field{
		str(keyStateDir, &f.StateDir),
		str(keyEmail, &f.Email),
		str(keyDefaultCA, &defaultCA),
		str(keyKeyType, &f.KeyType),
		boolean(keyAgreeTOS, &f.AgreeTOS),
		{keyCA, func(l *errList, path string, v any) { decodeCAs(l, f, path, v) }},
		{keyPath, func(l *errList, path string, v any) { decodePaths(l, f, path, v) }},
		{keyCert, func(l *errList, path string, v any) { decodeCerts(l, f, path, v) }},
		{keyRouterTable, func(l *errList, path string, v any) { decodeRouter(l, f, path, v) }},
		{keyStoreTable, func(l *errList, path string, v any) { decodeStore(l, f, path, v) }},
	}
	fields = append(fields, agentFields(&f.Agent)...)
	has := l.table("", tree, fields)
	f.agentDays = has[keyNotifyDays]
	if has[keyDefaultCA] {
		if f.CA != "" {
			l.add(keyCA, "the default CA is set twice; remove ca and keep default_ca = %q", defaultCA)
		}
		f.CA, f.caKey = defaultCA, keyDefaultCA
	}
	return f
}

// decodeCAs decodes the top-level ca key: [ca.NAME] tables, or a string
// naming the default CA (an alias of default_ca for files without tables).
func decodeCAs(l *errList, f *file, path string, v any) {
	if s, ok := v.(string); ok {
		f.CA, f.caKey = s, keyCA
		return
	}
	m, ok := v.(map[string]any)
	if !ok {
		l.typeErr(path, "expected [ca.NAME] tables, got %s; name the default CA with default_ca = \"letsencrypt\"", describe(v))
		return
	}
	for _, name := range slices.Sorted(maps.Keys(m)) {
		key := join(path, name)
		tm, ok := m[name].(map[string]any)
		if !ok {
			l.typeErr(key, "expected a [%s] table, got %s", key, describe(m[name]))
			continue
		}
		t := &caTable{key: key, name: name}
		t.has = l.table(key, tm, []field{
			str(keyDirectory, &t.Directory),
			str(keyStaging, &t.Staging),
			str(keyRootBundle, &t.RootBundle),
			str(keyEABKID, &t.EABKeyID),
			str(keyEABHMACKey, &t.EABHMACKey),
			str(keyEABHMACKeyFile, &t.EABHMACKeyFile),
			str(keyEmail, &t.Email),
		})
		f.CAs[name] = t
	}
}

// decodePaths decodes the [path.NAME] tables (see decodePathKeys).
func decodePaths(l *errList, f *file, path string, v any) {
	m, ok := v.(map[string]any)
	if !ok {
		l.typeErr(path, "expected [path.NAME] tables, got %s", describe(v))
		return
	}
	for _, name := range slices.Sorted(maps.Keys(m)) {
		key := join(path, name)
		tm, ok := m[name].(map[string]any)
		if !ok {
			l.typeErr(key, "expected a [%s] table, got %s", key, describe(m[name]))
			continue
		}
		t := decodePathKeys(l, key, tm)
		t.path.Name = name
		f.Paths[name] = t
	}
}

// decodeCerts decodes the [[certificate]] array of tables.
func decodeCerts(l *errList, f *file, path string, v any) {
	if _, ok := v.(map[string]any); ok {
		l.typeErr(path, "expected [[certificate]] entries, got a single [certificate] table; write the header with double brackets: [[certificate]]")
		return
	}
	list, ok := v.([]any)
	if !ok {
		l.typeErr(path, "expected [[certificate]] entries, got %s", describe(v))
		return
	}
	for i, e := range list {
		key := elem(path, i)
		m, ok := e.(map[string]any)
		if !ok {
			l.typeErr(key, "expected a table, got %s", describe(e))
			continue
		}
		t := &certTable{key: key, cert: Certificate{Line: l.idx.line(key), SelfCheck: true}}
		c := &t.cert
		t.has = l.table(key, m, append([]field{
			str(keyName, &c.Name),
			strList(keyDomains, &c.Domains),
			str(keyCA, &c.CA),
			str(keyKeyType, &c.KeyType),
			str(keyProfile, &c.Profile),
			str(keyPreferredChain, &c.PreferredChain),
			strList(keyPaths, &c.Paths),
			boolean(keySelfCheck, &c.SelfCheck),
			str(keyDeployHook, &c.DeployHook),
			strList(keyFallbackCA, &c.FallbackCA),
			integer(keyAfterFailures, &c.AfterFailures),
		}, deployFields(&c.Deploy)...))
		f.Certs = append(f.Certs, t)
	}
}
