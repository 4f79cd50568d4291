package dnsprovider

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Credentials are the key/value pairs of one credentials file. A Factory
// reads them with Need (a key the provider cannot work without) and Get (an
// optional key); the Solver then reports every missing key at once, naming
// the key and the file.
type Credentials struct {
	file    string
	vals    map[string]string
	missing []string
}

// NewCredentials returns credentials holding vals, as if read from file
// (used in messages). It is meant for tests and for callers that hold
// credentials elsewhere.
func NewCredentials(file string, vals map[string]string) *Credentials {
	return &Credentials{file: file, vals: vals}
}

// Get returns the value of key, or "" when the file does not set it.
func (c *Credentials) Get(key string) string { return c.vals[key] }

// GetOr returns the value of key, or def when the file does not set it.
func (c *Credentials) GetOr(key, def string) string {
	if v, ok := c.vals[key]; ok {
		return v
	}
	return def
}

// Has reports whether the file sets key.
func (c *Credentials) Has(key string) bool {
	_, ok := c.vals[key]
	return ok
}

// Need returns the value of key and records it as missing when the file
// does not set it.
func (c *Credentials) Need(key string) string {
	v, ok := c.vals[key]
	if !ok && !slices.Contains(c.missing, key) {
		c.missing = append(c.missing, key)
	}
	return v
}

// Missing lists the keys Need asked for that the file does not set.
func (c *Credentials) Missing() []string { return slices.Clone(c.missing) }

// File is the file the credentials were read from.
func (c *Credentials) File() string { return c.file }

// readCredentials reads a credentials file: one "key = value" per line.
//
// The value is either bare (the rest of the line, trimmed) or quoted: a
// "double-quoted" string with Go/TOML escapes, or a 'single-quoted' literal.
// Blank lines and lines starting with # are ignored. The format is thus both
// a flat TOML table of strings and the INI-like "key = value" files certbot
// and others use. Keys are lower case letters, digits and underscores; a
// key set twice or set to an empty value is an error.
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
	vals := map[string]string{}
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
		if _, dup := vals[key]; dup {
			return nil, fmt.Errorf("%s:%d: %s is set twice; keep one", file, n, key)
		}
		vals[key] = val
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading credentials from %s: %w", file, err)
	}
	return &Credentials{file: file, vals: vals}, nil
}

// parseLine splits one "key = value" line.
func parseLine(line string) (key, val string, err error) {
	key, raw, ok := strings.Cut(line, "=")
	if !ok {
		return "", "", errors.New(`expected "key = value"`)
	}
	key = strings.TrimSpace(key)
	if !validKey(key) {
		return "", "", fmt.Errorf("key %q: use lower case letters, digits and underscores (e.g. api_token)", key)
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
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' {
			return false
		}
	}
	return true
}
