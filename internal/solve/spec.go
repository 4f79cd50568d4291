package solve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/suggest"
)

// Spec declares one path kind. Everything about a kind lives in its own
// package next to its solver: the challenges it answers, its settings
// (type, default, one-line doc, whether a secret), their validation, and
// how to build the solver. Package solve/kinds lists the specs; the
// configuration validates a [path.NAME] table through its kind's spec,
// certificate records keep only the settings the spec does not mark
// secret, and `detour paths` and `detour config example` print the specs,
// so that documentation cannot drift from what is accepted.
type Spec struct {
	// Kind is the value of kind = "..." in a [path.NAME] table.
	Kind string
	// Summary says in one line what the kind does.
	Summary string
	// For says in one line on which host it is the right path.
	For string
	// Challenges lists the challenge types the kind can answer; the first
	// is the default of the challenge setting.
	Challenges []string
	// Settings lists the keys a table of this kind accepts besides kind
	// and challenge.
	Settings []Setting
	// Builtins are paths of this kind usable by name without a table.
	Builtins []Builtin
	// Window, when set, says the kind answers on port 80 or 443 of this
	// host, so that a firewall window (package firewall) may wrap it.
	Window *Window
	// Check validates the settings together once each has passed its own
	// check; nil checks nothing more. Each problem names its setting.
	Check func(s Settings) []Problem
	// Build returns the solver for a path with settings s (validated,
	// defaults applied). It must not bind or contact anything: that
	// happens in Check and Present.
	Build func(ctx context.Context, s Settings, env Env) (Solver, error)
	// Example names the [path.NAME] table `detour config example` shows
	// for the kind, with the settings that have an Example value; ""
	// leaves the kind out of the example.
	Example string
}

// Window describes how a kind is reached on port 80/443.
type Window struct {
	// Listen names the setting holding the address the CA connects to,
	// for a kind that binds the validation port itself; "" when a web
	// server on port 80/443 passes the CA's request on.
	Listen string
}

// Builtin is a path of a kind that needs no [path.NAME] table.
type Builtin struct {
	// Name is the path's name, e.g. "standalone-http".
	Name string
	// Settings override the kind's defaults, e.g. the challenge.
	Settings map[string]string
}

// Type says what a setting's value is, for validation and documentation.
type Type string

// Setting types.
const (
	// TypeString is free text.
	TypeString Type = "string"
	// TypeListen is an address the solver binds: host:port (the host may
	// be empty) or unix:/absolute/path.
	TypeListen Type = "listen"
	// TypeAddress is a host:port to connect to.
	TypeAddress Type = "address"
	// TypePath is an absolute file or directory name.
	TypePath Type = "path"
	// TypeDuration is a positive Go duration, e.g. "2m".
	TypeDuration Type = "duration"
	// TypePort is a port number from 1 to 65535.
	TypePort Type = "port"
	// TypeEnum is one of the setting's Values.
	TypeEnum Type = "enum"
	// TypeURL is a URL.
	TypeURL Type = "url"
	// TypeDate is an RFC 3339 date or date-time.
	TypeDate Type = "date"
	// TypeList is a comma-separated list.
	TypeList Type = "list"
)

// Setting is one key of a [path.NAME] table.
type Setting struct {
	// Key is the table key, e.g. "tsig_key".
	Key string
	// Type is what the value is.
	Type Type
	// Doc says in one line what the setting does.
	Doc string
	// Default is the value when the table leaves the key out ("": none).
	Default string
	// DefaultByChallenge gives the default per challenge type, for a
	// setting whose default depends on it (standalone's listen).
	DefaultByChallenge map[string]string
	// Required makes a table without the key an error.
	Required bool
	// Missing, when set, is the message for a required setting left out,
	// reported at the setting's key; by default the table is said to lack
	// it.
	Missing string
	// Secret keeps the value out of certificate records
	// (renewal/<name>.json): a renewal takes it from the configuration.
	Secret bool
	// Values lists what a TypeEnum accepts.
	Values []string
	// Example is the value `detour config example` shows ("": the key is
	// left out of the example).
	Example string
	// Check validates a non-empty value; nil uses the check of Type.
	Check func(v string) error
}

// KeyChallenge is the setting, accepted by every kind, that picks the
// challenge type a path answers.
const KeyChallenge = "challenge"

// Problem is one invalid setting of a path.
type Problem struct {
	// Key is the setting; "" means the table as a whole.
	Key string
	// Msg says what is wrong and what to change.
	Msg string
}

// Account is the ACME account an order runs under, as the kinds that
// depend on it see it.
type Account struct {
	URL        string // RFC 8555 §7.3 account URL
	Thumbprint string // RFC 7638 thumbprint of the account key, base64url
}

// CA is the certificate authority an order goes to.
type CA struct {
	Directory  string // ACME directory URL
	RootBundle string // PEM roots trusted for its API, "" for the system's
}

// StateStore is the state a path may keep (acme-dns accounts, the front
// door's answers, firewall leases).
type StateStore interface {
	store.Storage
	store.Locker
}

// Env is what a kind's Build may use besides the path's own settings.
type Env struct {
	// Logger receives the solver's messages, with the path's name.
	Logger *slog.Logger
	// Store is the state directory; nil where none is open.
	Store StateStore
	// Resolver is the DNS server (host:port) names are looked up with;
	// "" means the system's.
	Resolver string
	// Account returns the ACME account of the order; nil where there is
	// none (kinds that need it then fail to build, saying so).
	Account func(ctx context.Context) (Account, error)
	// CA is the CA of the order.
	CA CA
	// WindowOpened, when set, runs once a firewall window is open, before
	// the CA is told to validate (end-to-end tests hold the window there).
	WindowOpened func(ctx context.Context) error
	// Getenv reads the process environment for the credentials a kind may
	// take from its provider's usual variables (a cloud firewall's token);
	// nil means none is read.
	Getenv func(string) string
	// NoSelfCheck is set when the certificate's checks before the CA are
	// off (self_check = false, --no-self-check): kinds then add no checks
	// of how the CA reaches this host (the firewall preflight).
	NoSelfCheck bool
}

// ErrNoAccount is returned (wrapped) by Build when a kind needs the ACME
// account and Env has none.
var ErrNoAccount = errors.New("the ACME account is not available here")

// AccountOf returns env's account, or an error saying kind needs one.
func (env Env) AccountOf(ctx context.Context, kind string) (Account, error) {
	if env.Account == nil {
		return Account{}, fmt.Errorf("the %s path needs the ACME account: %w", kind, ErrNoAccount)
	}
	acct, err := env.Account(ctx)
	if err != nil {
		return Account{}, fmt.Errorf("loading the ACME account: %w", err)
	}
	return acct, nil
}

// AccountURL returns a function giving env's account URL, for solvers
// whose records are named after it.
func (env Env) AccountURL(kind string) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		a, err := env.AccountOf(ctx, kind)
		return a.URL, err
	}
}

// Settings are a path's settings: a [path.NAME] table, a built-in, or
// what a certificate's record kept, with the kind's defaults applied.
type Settings struct {
	// Path is the path's name.
	Path string
	// Kind is its kind.
	Kind   string
	values map[string]string
}

// NewSettings returns the settings of path name of kind with values (a
// copy is kept).
func NewSettings(name, kind string, values map[string]string) Settings {
	return Settings{Path: name, Kind: kind, values: maps.Clone(values)}
}

// Get returns the value of key, "" when unset.
func (s Settings) Get(key string) string { return s.values[key] }

// Challenge returns the challenge type the path answers.
func (s Settings) Challenge() string { return s.values[KeyChallenge] }

// Duration returns the duration setting key; 0 when unset or invalid
// (validation reports invalid values before anything is built).
func (s Settings) Duration(key string) time.Duration {
	d, err := time.ParseDuration(s.values[key])
	if err != nil {
		return 0
	}
	return d
}

// List returns the comma-separated setting key, entries trimmed, empty
// ones dropped.
func (s Settings) List(key string) []string {
	var out []string
	for v := range strings.SplitSeq(s.values[key], ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// Values returns a copy of every value set.
func (s Settings) Values() map[string]string { return maps.Clone(s.values) }

// ChallengeSetting is the challenge setting of spec: an enum of its
// challenges, defaulting to the first.
func (sp Spec) ChallengeSetting() Setting {
	return Setting{Key: KeyChallenge, Type: TypeEnum, Values: sp.Challenges, Default: sp.Challenges[0],
		Doc: "the ACME challenge type the path answers"}
}

// AllSettings returns every setting of spec: challenge first, then its
// own in declaration order.
func (sp Spec) AllSettings() []Setting {
	return append([]Setting{sp.ChallengeSetting()}, sp.Settings...)
}

// Setting returns spec's setting called key.
func (sp Spec) Setting(key string) (Setting, bool) {
	for _, s := range sp.AllSettings() {
		if s.Key == key {
			return s, true
		}
	}
	return Setting{}, false
}

// Keys returns the keys spec accepts besides kind, in declaration order.
func (sp Spec) Keys() []string {
	var out []string
	for _, s := range sp.AllSettings() {
		out = append(out, s.Key)
	}
	return out
}

// WithDefaults returns values (not modified) with every unset setting of
// spec set to its default: the challenge first, so that defaults that
// depend on it see it.
func (sp Spec) WithDefaults(values map[string]string) map[string]string {
	out := maps.Clone(values)
	if out == nil {
		out = map[string]string{}
	}
	if out[KeyChallenge] == "" && len(sp.Challenges) > 0 {
		out[KeyChallenge] = sp.Challenges[0]
	}
	for _, s := range sp.Settings {
		if out[s.Key] != "" {
			continue
		}
		def := s.Default
		if d, ok := s.DefaultByChallenge[out[KeyChallenge]]; ok {
			def = d
		}
		if def != "" {
			out[s.Key] = def
		}
	}
	return out
}

// Validate checks values, the settings of one path with defaults applied
// (see WithDefaults). A challenge the kind cannot answer is the one
// problem reported (the other settings' defaults depend on it); otherwise
// it reports every problem: a required setting
// missing, a value its setting's check refuses, then spec.Check (which
// must therefore tolerate values that failed their own check). Keys that
// spec does not accept are the caller's to report.
func (sp Spec) Validate(name string, values map[string]string) []Problem {
	var probs []Problem
	if c := values[KeyChallenge]; !slices.Contains(sp.Challenges, c) {
		return append(probs, Problem{Key: KeyChallenge, Msg: fmt.Sprintf("%q is not available for kind %q; use %s", c, sp.Kind, quotedOr(sp.Challenges))})
	}
	for _, s := range sp.Settings {
		if v := values[s.Key]; v == "" {
			probs = append(probs, sp.missing(s)...)
		} else if err := s.check(v); err != nil {
			probs = append(probs, Problem{Key: s.Key, Msg: err.Error()})
		}
	}
	if sp.Check != nil {
		probs = append(probs, sp.Check(NewSettings(name, sp.Kind, values))...)
	}
	return probs
}

// Complete checks that values hold everything the kind needs together:
// its required settings and spec.Check, without the checks of each value's
// form. A path rebuilt from a certificate's record, which keeps no
// secrets, is checked so before it is built.
func (sp Spec) Complete(name string, values map[string]string) []Problem {
	var probs []Problem
	for _, s := range sp.Settings {
		if values[s.Key] == "" {
			probs = append(probs, sp.missing(s)...)
		}
	}
	if sp.Check != nil {
		probs = append(probs, sp.Check(NewSettings(name, sp.Kind, values))...)
	}
	return probs
}

// missing reports s, unset, when it is required.
func (sp Spec) missing(s Setting) []Problem {
	switch {
	case s.Required && s.Missing != "":
		return []Problem{{Key: s.Key, Msg: s.Missing}}
	case s.Required:
		return []Problem{{Msg: fmt.Sprintf("%s is missing; kind %q needs it", s.Key, sp.Kind)}}
	}
	return nil
}

// check validates a non-empty value of s.
func (s Setting) check(v string) error {
	if s.Check != nil {
		return s.Check(v)
	}
	switch s.Type {
	case TypeListen:
		return CheckListen(v)
	case TypeAddress:
		return CheckAddress(v)
	case TypePath:
		return CheckAbsolute(v, s.Example)
	case TypeDuration:
		return CheckPositiveDuration(v)
	case TypePort:
		return CheckPort(v)
	case TypeEnum:
		if !slices.Contains(s.Values, v) {
			return fmt.Errorf("%q is not a valid %s%s; use %s", v, s.Key, suggest.DidYouMean(v, s.Values), suggest.QuoteList(s.Values))
		}
	}
	return nil
}

// quotedOr renders ["a", "b"] as `"a" or "b"`.
func quotedOr(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, " or ")
}

// CheckListen validates an address a solver binds: host:port with a
// numeric port from 1 to 65535 (the host may be empty: every address), or
// unix:/absolute/path.
func CheckListen(addr string) error {
	if rest, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !strings.HasPrefix(rest, "/") {
			return fmt.Errorf("%q: a unix socket path must be absolute, e.g. \"unix:/run/detour/http.sock\"", addr)
		}
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		reason := err.Error()
		var ae *net.AddrError
		if errors.As(err, &ae) {
			reason = ae.Err
		}
		return fmt.Errorf("%q is not host:port (%v); write e.g. \":80\" or \"192.0.2.1:80\"", addr, reason)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q must be a number from 1 to 65535", addr, port)
	}
	return nil
}

// CheckAddress validates a server's host:port (the host required).
func CheckAddress(addr string) error {
	if err := CheckListen(addr); err != nil || strings.HasPrefix(addr, "unix:") || strings.HasPrefix(addr, ":") {
		return fmt.Errorf("%q must be a server's host:port, e.g. \"192.0.2.53:53\"", addr)
	}
	return nil
}

// CheckAbsolute requires an absolute file name; example, when set, is
// offered as one.
func CheckAbsolute(name, example string) error {
	if filepath.IsAbs(name) {
		return nil
	}
	if example != "" {
		return fmt.Errorf("%q must be an absolute path, e.g. %q", name, example)
	}
	return fmt.Errorf("%q must be an absolute path", name)
}

// CheckPositiveDuration requires a positive Go duration.
func CheckPositiveDuration(v string) error {
	if d, err := time.ParseDuration(v); err != nil || d <= 0 {
		return fmt.Errorf("%q is not a positive duration; write e.g. \"2m\" or \"90s\"", v)
	}
	return nil
}

// CheckPort requires a port number from 1 to 65535.
func CheckPort(v string) error {
	if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q must be a port number from 1 to 65535", v)
	}
	return nil
}

// PropagationTimeout is the setting of every kind that waits until the
// zone's authoritative servers answer its record.
var PropagationTimeout = Setting{
	Key: "propagation_timeout", Type: TypeDuration,
	Doc: "how long to wait until every authoritative server answers the record (default 2m)",
}

// Built returns what a kind's constructor returned as a Build result: the
// solver, or a nil Solver (never a typed nil) with the error.
func Built[S Solver](s S, err error) (Solver, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}
