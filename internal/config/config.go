package config

import (
	"github.com/detour-acme/detour/internal/suggest"

	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/ident"
)

// Defaults for values the file may leave out.
const (
	// DefaultFile is where Load looks when given no path.
	DefaultFile = "/etc/detour/detour.toml"
	// DefaultStateDir holds accounts, certificates and locks.
	DefaultStateDir = "/var/lib/detour"
)

// Config is a loaded, defaulted and validated configuration file.
type Config struct {
	// File is the name the configuration was read from.
	File string
	// StateDir is the absolute directory for accounts, certificates and
	// locks.
	StateDir string
	// Email is the default ACME account contact.
	Email string
	// CA is the default CA reference for certificates: a shortcut, a key
	// of CAs, or a directory URL. Resolve it with ResolveCA.
	CA string
	// KeyType is the default certificate key type.
	KeyType acme.KeyType
	// AgreeTOS records that the user accepts the CA's terms of service.
	AgreeTOS bool
	// CAs holds the [ca.NAME] tables, by NAME.
	CAs map[string]CA
	// Paths holds the [path.NAME] tables, by NAME. The built-in paths are
	// not in it; use Config.Path to look up either.
	Paths map[string]Path
	// Certificates lists the [[certificate]] entries in file order.
	Certificates []Certificate
	// Router is the [router] table for `detour router`.
	Router Router
	// Store is the [store] table: the state directory (kind "fs"), or
	// etcd shared by a fleet.
	Store Store
	// Agent holds the settings of `detour run` (metrics, notifications).
	Agent Agent
	// Warnings are settings that are valid but probably not meant: a
	// private key other users can read, metrics served beyond this host.
	// They are sorted by line; nil when there are none.
	Warnings []*Error
}

// Certificate is one [[certificate]] entry with defaults applied.
type Certificate struct {
	// Name identifies the certificate in storage and on the command line.
	Name string
	// Domains are the names as written in the file.
	Domains []string
	// Identifiers are Domains parsed and normalised, in the same order.
	Identifiers []ident.Identifier
	// CA is the CA reference (resolve it with ResolveCA); KeyType is an
	// acme.KeyType name; Profile is an ACME profile name or "";
	// PreferredChain is an issuer common name or "".
	CA, KeyType, Profile, PreferredChain string
	// Paths are path names in order of preference.
	Paths []string
	// SelfCheck, true unless self_check = false, makes Detour fetch each
	// http-01 and tls-alpn-01 answer itself, the way the CA will, before
	// asking the CA. Turn it off for hosts behind NAT without hairpin.
	SelfCheck bool
	// DeployHook is a shell command run after each new version is live.
	DeployHook string
	// Deploy holds the other deploy settings: reloads, extra outputs,
	// the hook's timeout.
	Deploy Deploy
	// FallbackCA lists CA references tried in order after AfterFailures
	// consecutive failures on the CA before (fallback_ca).
	FallbackCA []string
	// AfterFailures is the number of consecutive failures on one CA
	// before the next is tried (after_failures, default 3).
	AfterFailures int
	// Line is where the entry starts in the file.
	Line int
}

// Error is one problem in a configuration file. Parse and Load return every
// Error found, joined with errors.Join and sorted by line; use errors.As to
// inspect the first. Config.Warnings has the same shape.
type Error struct {
	// File is the configuration file name.
	File string
	// Line is the 1-based line of the offending key; 0 when the problem
	// concerns a value the file left out.
	Line int
	// Key is the key path, e.g. "certificate[0].domains" (array entries
	// are numbered from 0); "" for syntax errors.
	Key string
	// Msg says what is wrong and what to change.
	Msg string
}

// Error formats the problem as "file:line: key: message".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// LogValue logs the problem as its parts: file, line, key and message.
func (e *Error) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("file", e.File)}
	if e.Line > 0 {
		attrs = append(attrs, slog.Int("line", e.Line))
	}
	if e.Key != "" {
		attrs = append(attrs, slog.String("key", e.Key))
	}
	return slog.GroupValue(append(attrs, slog.String("message", e.Msg))...)
}

// Default returns the configuration of an empty file: defaults only, no
// certificates. Use it for one-off commands run without a file.
func Default() *Config {
	c, err := Parse("", nil)
	if err != nil {
		panic("config: defaults do not validate: " + err.Error())
	}
	return c
}

// Load reads, parses, defaults and validates the configuration file at path
// (DefaultFile when path is ""). A missing file is reported with what to do
// instead and wraps fs.ErrNotExist.
func Load(path string) (*Config, error) {
	if path == "" {
		path = DefaultFile
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading config: %s does not exist; for a one-off certificate run `detour issue -d NAME`, "+
			"or create the file (`detour config example` prints a commented example to start from): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, data)
}

// Parse parses, defaults and validates a configuration. filename is used in
// error messages and as the base for relative file paths in the document
// (root_bundle, eab_hmac_key_file). All problems are reported together, one
// *Error per line of the joined error, sorted by line.
func Parse(filename string, data []byte) (*Config, error) {
	var tree map[string]any
	if err := toml.Unmarshal(data, &tree); err != nil {
		return nil, syntaxError(filename, err)
	}
	errs := &errList{file: filename, idx: buildIndex(data), bad: map[string]bool{}}
	f := decode(errs, tree)
	applyDefaults(f, filename)
	cfg := validate(errs, f, filename)
	if err := errs.join(); err != nil {
		return nil, err
	}
	cfg.Warnings = errs.warnings()
	return cfg, nil
}

// syntaxError converts a go-toml error into an *Error with a line.
func syntaxError(filename string, err error) error {
	var de *toml.DecodeError
	if !errors.As(err, &de) {
		return &Error{File: filename, Msg: fmt.Sprintf("parsing TOML: %v", err)}
	}
	line, col := de.Position()
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	if k := de.Key(); len(k) > 0 && k[0] == keyCA && strings.Contains(msg, "already") {
		msg += `; a top-level ca = "NAME" cannot be combined with [ca.NAME] tables: write default_ca = "NAME" instead`
	}
	return &Error{File: filename, Line: line, Msg: fmt.Sprintf("invalid TOML at column %d: %s", col, msg)}
}

// errList collects the problems of one Parse.
type errList struct {
	file string
	idx  lineIndex
	// bad holds key paths whose value had the wrong type; later errors
	// about them or anything under them would only repeat the problem.
	bad   map[string]bool
	errs  []*Error
	warns []*Error
}

// add records a problem at key, located through the line index.
func (l *errList) add(key, format string, args ...any) {
	l.addAt(key, key, format, args...)
}

// addAt records a problem about key on the line of lineKey, e.g. the
// domains key on the line of the offending list entry.
func (l *errList) addAt(key, lineKey, format string, args ...any) {
	for p := lineKey; p != ""; p = parentKey(p) {
		if l.bad[p] {
			return
		}
	}
	l.errs = append(l.errs, &Error{File: l.file, Line: l.idx.line(lineKey), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// warn records a warning at key: a valid setting that is probably a
// mistake.
func (l *errList) warn(key, format string, args ...any) {
	l.warns = append(l.warns, &Error{File: l.file, Line: l.idx.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// warnings returns the collected warnings sorted by line, or nil.
func (l *errList) warnings() []*Error {
	sort.SliceStable(l.warns, func(i, j int) bool { return l.warns[i].Line < l.warns[j].Line })
	return l.warns
}

// typeErr records a wrong type at key and suppresses follow-on errors.
func (l *errList) typeErr(key, format string, args ...any) {
	l.add(key, format, args...)
	l.bad[key] = true
}

// parentKey strips the last segment of a key path.
func parentKey(p string) string {
	if i := strings.LastIndexAny(p, ".["); i >= 0 {
		return p[:i]
	}
	return ""
}

// join returns the collected problems sorted by line, or nil.
func (l *errList) join() error {
	if len(l.errs) == 0 {
		return nil
	}
	sort.SliceStable(l.errs, func(i, j int) bool { return l.errs[i].Line < l.errs[j].Line })
	errs := make([]error, len(l.errs))
	for i, e := range l.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// Certificate returns the certificate called name.
func (c *Config) Certificate(name string) (Certificate, error) {
	names := make([]string, 0, len(c.Certificates))
	for _, cert := range c.Certificates {
		if cert.Name == name {
			return cert, nil
		}
		names = append(names, cert.Name)
	}
	return Certificate{}, fmt.Errorf("no certificate named %q in %s%s; configured: %s",
		name, c.File, suggest.DidYouMean(name, names), suggest.QuoteList(names))
}
