package dnsprovider

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Credentials are the key/value pairs of one credentials file. Keys are
// matched case-insensitively: LINODE_TOKEN, as lego's documentation spells
// it, and linode_token are one key. A Factory reads them with Need (a key
// the provider cannot work without) and Get (an optional key), or the
// typed readers (Int, Bool, Seconds, URL, Pairs); the Solver then reports
// every missing or malformed key at once, naming the key and the file.
type Credentials struct {
	file    string
	vals    map[string]string // by lower-case key
	spelled map[string]string // lower-case key -> as the file writes it
	missing []string
	invalid []string
}

// NewCredentials returns credentials holding vals, as if read from file
// (used in messages). It is meant for tests and for callers that hold
// credentials elsewhere. Two keys of vals that differ only in case are
// one; which value wins is unspecified.
func NewCredentials(file string, vals map[string]string) *Credentials {
	c := &Credentials{file: file, vals: map[string]string{}, spelled: map[string]string{}}
	for k, v := range vals {
		c.vals[strings.ToLower(k)] = v
		c.spelled[strings.ToLower(k)] = k
	}
	return c
}

func (c *Credentials) lookup(key string) (string, bool) {
	v, ok := c.vals[strings.ToLower(key)]
	return v, ok
}

// Get returns the value of key, or "" when the file does not set it.
func (c *Credentials) Get(key string) string {
	v, _ := c.lookup(key)
	return v
}

// GetOr returns the value of key, or def when the file does not set it.
func (c *Credentials) GetOr(key, def string) string {
	if v, ok := c.lookup(key); ok {
		return v
	}
	return def
}

// Has reports whether the file sets key.
func (c *Credentials) Has(key string) bool {
	_, ok := c.lookup(key)
	return ok
}

// Need returns the value of key and records it as missing when the file
// does not set it.
func (c *Credentials) Need(key string) string {
	v, ok := c.lookup(key)
	if !ok && !slices.Contains(c.missing, key) {
		c.missing = append(c.missing, key)
	}
	return v
}

// Missing lists the keys Need asked for that the file does not set.
func (c *Credentials) Missing() []string { return slices.Clone(c.missing) }

// failed reports whether a key was missing or malformed: the factory
// returns before building the provider (which may call its API).
func (c *Credentials) failed() bool { return len(c.missing)+len(c.invalid) > 0 }

// Invalid lists the keys whose values a typed reader refused, each with
// what is wrong.
func (c *Credentials) Invalid() []string { return slices.Clone(c.invalid) }

// bad records that key's value v is not what the reader expects.
func (c *Credentials) bad(key, v, want string) {
	c.invalid = append(c.invalid, fmt.Sprintf("%s = %q is not %s", key, v, want))
}

// Int returns key as a whole number, or def when the file does not set it.
func (c *Credentials) Int(key string, def int) int {
	v, ok := c.lookup(key)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		c.bad(key, v, "a whole number")
	}
	return n
}

// NeedInt is Int for a key the provider cannot work without.
func (c *Credentials) NeedInt(key string) int {
	if !c.Has(key) {
		c.Need(key)
		return 0
	}
	return c.Int(key, 0)
}

// Bool returns key as true or false (also 1 or 0), or def when the file
// does not set it.
func (c *Credentials) Bool(key string, def bool) bool {
	v, ok := c.lookup(key)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		c.bad(key, v, "true or false")
	}
	return b
}

// Seconds returns key as a duration, or def when the file does not set
// it. The value is a number of seconds, as lego reads it ("120"), or a
// duration ("2m").
func (c *Credentials) Seconds(key string, def time.Duration) time.Duration {
	v, ok := c.lookup(key)
	if !ok {
		return def
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		c.bad(key, v, `a number of seconds or a duration such as "90s"`)
	}
	return d
}

// URL returns key parsed as a URL, or def parsed when the file does not
// set it.
func (c *Credentials) URL(key, def string) *url.URL {
	v, ok := c.lookup(key)
	if !ok {
		return parseURL(def)
	}
	u, err := url.Parse(v)
	if err != nil {
		c.bad(key, v, "a URL")
		return parseURL(def)
	}
	return u
}

// NeedURL is URL for a key the provider cannot work without.
func (c *Credentials) NeedURL(key string) *url.URL {
	if !c.Has(key) {
		c.Need(key)
		return nil
	}
	return c.URL(key, "")
}

// parseURL parses s, known to be valid (the generator checks its
// constants), or returns an empty URL.
func parseURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		return &url.URL{}
	}
	return u
}

// Pairs returns key as a map written "name:value,name:value" (lego's
// format for per-domain tokens), or nil when the file does not set it.
func (c *Credentials) Pairs(key string) map[string]string {
	v, ok := c.lookup(key)
	if !ok {
		return nil
	}
	m := map[string]string{}
	for _, item := range strings.Split(strings.TrimSuffix(v, ","), ",") {
		name, value, ok := strings.Cut(item, ":")
		if !ok || strings.Contains(value, ":") {
			c.bad(key, v, `a list of name:value pairs separated by commas, such as "example.com:token1,example.org:token2"`)
			return nil
		}
		m[strings.TrimSpace(name)] = strings.TrimSpace(value)
	}
	return m
}

// NeedPairs is Pairs for a key the provider cannot work without.
func (c *Credentials) NeedPairs(key string) map[string]string {
	if !c.Has(key) {
		c.Need(key)
		return nil
	}
	return c.Pairs(key)
}

// File is the file the credentials were read from.
func (c *Credentials) File() string { return c.file }

// readCredentials reads a credentials file: one "key = value" per line.
//
// The value is either bare (the rest of the line, trimmed) or quoted: a
// "double-quoted" string with Go/TOML escapes, or a 'single-quoted' literal.
// Blank lines and lines starting with # are ignored. The format is thus both
// a flat TOML table of strings and the INI-like "key = value" files certbot
// and others use. Keys are letters, digits and underscores, in either case
// (api_token, LINODE_TOKEN); a key set twice (in any case) or set to an
// empty value is an error.
//
// A file that its group or other users can access is read, with a warning:
// it holds API secrets, so it should be mode 0600 (or 0400).
func readCredentials(file string, log *slog.Logger) (*Credentials, error) {
	f, err := os.Open(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading credentials: %w; create it (mode 0600) with the provider's keys, or fix credentials_file", err)
		}
		return nil, fmt.Errorf("reading credentials: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading credentials: %w", err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("reading credentials: %s is a directory; credentials_file must name a file", file)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		log.Warn("credentials file is accessible by other users; restrict it with chmod 600",
			"file", file, "mode", fmt.Sprintf("%04o", perm))
	}
	vals, spelled := map[string]string{}, map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, n, err)
		}
		lower := strings.ToLower(key)
		if first, dup := spelled[lower]; dup {
			if first == key {
				return nil, fmt.Errorf("%s:%d: %s is set twice; keep one", file, n, key)
			}
			return nil, fmt.Errorf("%s:%d: %s is set twice (also as %s; keys ignore case); keep one", file, n, key, first)
		}
		vals[lower], spelled[lower] = val, key
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading credentials from %s: %w", file, err)
	}
	return &Credentials{file: file, vals: vals, spelled: spelled}, nil
}

// parseLine splits one "key = value" line.
func parseLine(line string) (key, val string, err error) {
	key, raw, ok := strings.Cut(line, "=")
	if !ok {
		return "", "", errors.New(`expected "key = value"`)
	}
	key = strings.TrimSpace(key)
	if !validKey(key) {
		return "", "", fmt.Errorf("key %q: use letters, digits and underscores (e.g. api_token or LINODE_TOKEN)", key)
	}
	raw = strings.TrimSpace(raw)
	switch {
	case strings.HasPrefix(raw, `"`):
		if val, err = strconv.Unquote(raw); err != nil {
			return "", "", fmt.Errorf("%s: the quoted value %s is not a valid string; check the closing quote and escapes", key, raw)
		}
	case strings.HasPrefix(raw, "'"):
		if len(raw) < 2 || !strings.HasSuffix(raw, "'") || strings.Contains(raw[1:len(raw)-1], "'") {
			return "", "", fmt.Errorf("%s: the value %s lacks its closing single quote", key, raw)
		}
		val = raw[1 : len(raw)-1]
	default:
		val = raw
	}
	if val == "" {
		return "", "", fmt.Errorf("%s is empty; set it or remove the line", key)
	}
	return key, val, nil
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '_' {
			return false
		}
	}
	return true
}
