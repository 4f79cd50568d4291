// Package script implements the "exec" validation path, the escape hatch:
// Detour runs the user's own executables to publish each answer and to
// remove it again, for hosts no other path fits (a CDN or object store
// that serves the files, a DNS provider with only a command-line tool, a
// cloud firewall to open first).
//
// A path answers http-01 (RFC 8555 §8.3, the default) or dns-01 (RFC 8555
// §8.4). For http-01 the auth hook makes http://<name>/.well-known/acme-challenge/<token>
// answer the key authorization; Detour's self-check then fetches it the
// way the CA will, before the CA is asked, so a hook that did not publish
// the file fails on this host and costs no failed validation. For dns-01
// the path is the generic solve.TXT solver over a Records backend whose
// SetTXT runs the auth hook and DeleteTXT the cleanup hook, so the record
// is named by package solve and the wait is the one every DNS path has:
// until every authoritative server of the zone answers the value.
//
// tls-alpn-01 (RFC 8737) is not offered: its answer is a self-signed
// certificate with the critical acmeIdentifier extension, served on port
// 443 only to connections that ask for ALPN acme-tls/1, while every other
// connection keeps reaching the site. A script cannot put that in place in
// a web server; the front-door and alpn-forward paths do it. certbot's
// manual authenticator offers no tls-alpn-01 either.
//
// # Running the hooks
//
// auth (required) and cleanup (optional) are absolute paths of
// executables, run without a shell and without arguments (like the exec
// firewall backend), with standard input empty and Detour's environment
// plus the variables below. Each run may take timeout (default 2m); then
// it is killed with the processes it started (its process group). What
// they print goes to the log, trimmed and bounded. An auth hook that exits
// non-zero fails Present with its exit code and standard error (certbot
// only warns; Detour does not ask the CA to validate an answer the hook
// says it did not publish). The cleanup hook runs after every Present,
// failed ones included (the orchestrator calls CleanUp for each); its
// failure is logged and returned by CleanUp, and never replaces the auth
// hook's result. For http-01 the hooks also run once per name for
// Detour's own probe before the order (a random token with the account's
// real key authorization), so a hook must answer any token it is given.
//
// # Environment
//
//	DETOUR_ACTION                "auth" or "cleanup"
//	DETOUR_CHALLENGE             "http-01" or "dns-01"
//	DETOUR_DOMAIN                the identifier, as Detour names it ("*.example.com" for a wildcard; an IP address)
//	DETOUR_TOKEN                 http-01: the token, the file name under /.well-known/acme-challenge/
//	DETOUR_VALIDATION            http-01: the key authorization to serve; dns-01: the TXT value
//	DETOUR_RECORD                dns-01: the TXT record's full name, without the trailing dot (_acme-challenge.example.com)
//	DETOUR_REMAINING_CHALLENGES  how many names this path answers after this one (0: the last)
//	DETOUR_ALL_DOMAINS           the names this path answers for the certificate, comma-separated
//
// and, so that a hook written for certbot's manual authenticator
// (--manual-auth-hook, --manual-cleanup-hook) runs unchanged, certbot's:
//
//	CERTBOT_DOMAIN                the name without "*." (certbot's achall.domain)
//	CERTBOT_VALIDATION            as DETOUR_VALIDATION
//	CERTBOT_TOKEN                 http-01 only, as DETOUR_TOKEN
//	CERTBOT_REMAINING_CHALLENGES  as DETOUR_REMAINING_CHALLENGES
//	CERTBOT_ALL_DOMAINS           the names without "*.", comma-separated
//	CERTBOT_AUTH_OUTPUT           cleanup only: what the auth hook printed on standard output, trimmed
//
// A variable that does not apply (DETOUR_TOKEN and CERTBOT_TOKEN for dns-01)
// is removed from the inherited environment rather than passed on. The
// cleanup hook gets the auth hook's variables. For dns-01, a wildcard and
// its base name share one record name: the auth hook must add its value
// next to any other, and the cleanup hook remove only its own.
//
// DETOUR_REMAINING_CHALLENGES and DETOUR_ALL_DOMAINS are counted from the
// names this path was checked for before the order: a name whose
// authorization is still valid from an earlier order, or that another path
// answers first, is listed but never presented.
//
// # Checks before the order
//
// Check finds each hook and refuses one that is missing, not a regular
// file, not executable, or writable by group or others (or in a directory
// they may write without the sticky bit): whoever can change the script
// runs commands as Detour. When Detour runs as root, a hook owned by
// another user is logged as a warning.
package script

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// Kind is the kind of a path answered by the user's own executables.
const Kind = "exec"

// DefaultTimeout bounds one run of a hook.
const DefaultTimeout = 2 * time.Minute

// Environment variables the hooks receive (see the package documentation).
const (
	EnvAction     = "DETOUR_ACTION"
	EnvChallenge  = "DETOUR_CHALLENGE"
	EnvDomain     = "DETOUR_DOMAIN"
	EnvToken      = "DETOUR_TOKEN"
	EnvValidation = "DETOUR_VALIDATION"
	EnvRecord     = "DETOUR_RECORD"
	EnvRemaining  = "DETOUR_REMAINING_CHALLENGES"
	EnvAllDomains = "DETOUR_ALL_DOMAINS"

	EnvCertbotDomain     = "CERTBOT_DOMAIN"
	EnvCertbotValidation = "CERTBOT_VALIDATION"
	EnvCertbotToken      = "CERTBOT_TOKEN"
	EnvCertbotRemaining  = "CERTBOT_REMAINING_CHALLENGES"
	EnvCertbotAllDomains = "CERTBOT_ALL_DOMAINS"
	EnvCertbotAuthOutput = "CERTBOT_AUTH_OUTPUT"
)

// envNames are every variable Detour sets; none of them is inherited.
var envNames = []string{
	EnvAction, EnvChallenge, EnvDomain, EnvToken, EnvValidation, EnvRecord, EnvRemaining, EnvAllDomains,
	EnvCertbotDomain, EnvCertbotValidation, EnvCertbotToken, EnvCertbotRemaining, EnvCertbotAllDomains, EnvCertbotAuthOutput,
}

// Hook roles, as DETOUR_ACTION names them and messages say.
const (
	roleAuth    = "auth"
	roleCleanup = "cleanup"
)

// Options configure a solver of an exec path.
type Options struct {
	// Logger receives each run of a hook with its output; nil discards.
	Logger *slog.Logger
	// Challenge is solve.HTTP01 (the default) or solve.DNS01.
	Challenge string
	// Auth is the absolute path of the executable that publishes an
	// answer. Required.
	Auth string
	// Cleanup is the absolute path of the executable that removes it; ""
	// runs nothing.
	Cleanup string
	// Timeout bounds each run of a hook; 0 means DefaultTimeout.
	Timeout time.Duration
	// Resolver is the host:port the dns-01 propagation check asks about
	// names; "" means the first nameserver of /etc/resolv.conf. Ignored
	// when DNS is set.
	Resolver string
	// DNS is the client the dns-01 propagation check uses; nil means one
	// on Resolver.
	DNS *dns.Client
	// PropagationTimeout bounds the dns-01 wait; 0 means
	// dns.DefaultPropagationTimeout.
	PropagationTimeout time.Duration
	// Environ returns the environment the hooks inherit (Detour's own
	// variables are added and replace any inherited ones); nil means
	// os.Environ.
	Environ func() []string
}

// New returns the solver of an exec path: an *HTTPSolver for http-01, a
// *DNSSolver for dns-01. It runs and contacts nothing.
func New(opts Options) (solve.Solver, error) {
	h, err := newHooks(opts)
	if err != nil {
		return nil, err
	}
	switch opts.Challenge {
	case "", solve.HTTP01:
		return &HTTPSolver{hooks: h}, nil
	case solve.DNS01:
		s, err := newDNS(h, opts)
		if err != nil {
			return nil, err // not a nil *DNSSolver in a non-nil interface
		}
		return s, nil
	}
	return nil, fmt.Errorf("an exec path cannot answer %s; use http-01 or dns-01", opts.Challenge)
}

// hooks runs the auth and cleanup executables, and keeps what the
// environment of each run needs: the names the path was checked for, the
// answers in place, and each auth run's environment and output for its
// cleanup.
type hooks struct {
	log           *slog.Logger
	auth, cleanup string
	timeout       time.Duration
	environ       func() []string

	mu      sync.Mutex
	ids     []ident.Identifier  // checked for, in order
	live    map[string]int      // identifier -> answers in place
	answers map[string][]string // answer key -> the auth run's variables
	outputs map[string]string   // answer key -> the auth run's standard output
	warned  map[string]bool     // hook -> ownership warning logged
}

func newHooks(opts Options) (*hooks, error) {
	if opts.Auth == "" {
		return nil, errors.New("an exec path needs auth: the absolute path of the executable that publishes each answer")
	}
	for _, c := range []struct{ key, path string }{{keyAuth, opts.Auth}, {keyCleanup, opts.Cleanup}} {
		if c.path == "" {
			continue
		}
		if err := checkCommandName(c.path); err != nil {
			return nil, fmt.Errorf("%s %w", c.key, err)
		}
	}
	h := &hooks{log: opts.Logger, auth: opts.Auth, cleanup: opts.Cleanup, timeout: opts.Timeout, environ: opts.Environ,
		live: map[string]int{}, answers: map[string][]string{}, outputs: map[string]string{}, warned: map[string]bool{}}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.timeout <= 0 {
		h.timeout = DefaultTimeout
	}
	return h, nil
}

// checkCommandName validates a hook's setting: an absolute file name, not
// a shell command line (the hook runs without a shell).
func checkCommandName(v string) error {
	if strings.ContainsAny(v, "|&;<>$`\"'\n") {
		return fmt.Errorf("%q looks like a shell command line; the hook runs without a shell and takes no arguments: put the command in an executable script and give the script's absolute path", v)
	}
	if !filepath.IsAbs(v) {
		return fmt.Errorf("%q must be the absolute path of an executable, e.g. \"/etc/detour/hooks/auth\"", v)
	}
	return nil
}

// check finds both hooks and refuses one that others could change; see
// checkExecutable.
func (h *hooks) check(ctx context.Context) error {
	var errs []error
	for _, c := range []struct{ role, path string }{{roleAuth, h.auth}, {roleCleanup, h.cleanup}} {
		if c.path == "" {
			continue
		}
		warning, err := checkExecutable(c.role, c.path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if warning != "" {
			h.mu.Lock()
			first := !h.warned[c.path]
			h.warned[c.path] = true
			h.mu.Unlock()
			if first {
				h.log.WarnContext(ctx, warning, "hook", c.role, "command", c.path)
			}
		}
	}
	return errors.Join(errs...)
}

// noteChecked records that the path was checked for id: the names it
// answers, for DETOUR_ALL_DOMAINS and DETOUR_REMAINING_CHALLENGES.
func (h *hooks) noteChecked(id ident.Identifier) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addLocked(id)
}

func (h *hooks) addLocked(id ident.Identifier) {
	for _, x := range h.ids {
		if x == id {
			return
		}
	}
	h.ids = append(h.ids, id)
}

// challengeVars are what one run of a hook is told about its answer.
type challengeVars struct {
	ch         solve.Challenge
	validation string
	record     string // dns-01: the TXT record's name, with its trailing dot
}

// key names an answer across Present and CleanUp.
func (v challengeVars) key() string {
	return v.ch.Type + " " + v.ch.Identifier.Value + " " + v.ch.Token + " " + v.validation
}

// begin marks v's answer in place and returns the variables of its auth
// run.
func (h *hooks) begin(v challengeVars) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addLocked(v.ch.Identifier)
	h.live[v.ch.Identifier.Value]++
	vars := h.varsLocked(v)
	h.answers[v.key()] = vars
	return vars
}

// end forgets v's answer and returns the variables of its cleanup run:
// those of its auth run with the auth run's output, or, for an answer this
// solver did not present (a cleanup after a crash), fresh ones.
func (h *hooks) end(v challengeVars) []string {
	k, id := v.key(), v.ch.Identifier.Value
	h.mu.Lock()
	defer h.mu.Unlock()
	vars, ok := h.answers[k]
	out := h.outputs[k]
	delete(h.answers, k)
	delete(h.outputs, k)
	if ok {
		if h.live[id]--; h.live[id] <= 0 {
			delete(h.live, id)
		}
	} else {
		h.addLocked(v.ch.Identifier)
		vars = h.varsLocked(v)
	}
	return append(slices.Clip(vars), EnvCertbotAuthOutput+"="+out)
}

// varsLocked returns the variables of a run for v: among them the names
// the path answers, and how many of them have no answer in place.
func (h *hooks) varsLocked(v challengeVars) []string {
	remaining := 0
	all := make([]string, len(h.ids))
	bases := make([]string, len(h.ids))
	for i, id := range h.ids {
		all[i], bases[i] = id.Value, id.Base()
		if h.live[id.Value] == 0 && id != v.ch.Identifier {
			remaining++
		}
	}
	id := v.ch.Identifier
	vars := []string{
		EnvChallenge + "=" + v.ch.Type,
		EnvDomain + "=" + id.Value,
		EnvValidation + "=" + v.validation,
		EnvRemaining + "=" + strconv.Itoa(remaining),
		EnvAllDomains + "=" + strings.Join(all, ","),
		EnvCertbotDomain + "=" + id.Base(),
		EnvCertbotValidation + "=" + v.validation,
		EnvCertbotRemaining + "=" + strconv.Itoa(remaining),
		EnvCertbotAllDomains + "=" + strings.Join(bases, ","),
	}
	if v.ch.Type == solve.HTTP01 {
		vars = append(vars, EnvToken+"="+v.ch.Token, EnvCertbotToken+"="+v.ch.Token)
	}
	if v.record != "" {
		vars = append(vars, EnvRecord+"="+strings.TrimSuffix(v.record, "."))
	}
	return vars
}

// present runs the auth hook for v.
func (h *hooks) present(ctx context.Context, v challengeVars) error {
	vars := h.begin(v)
	out, err := h.run(ctx, roleAuth, h.auth, append(vars, EnvAction+"="+roleAuth), v.ch)
	h.mu.Lock()
	h.outputs[v.key()] = out
	h.mu.Unlock()
	return err
}

// cleanUp runs the cleanup hook for v, if there is one. A failure is
// logged (by run) and returned.
func (h *hooks) cleanUp(ctx context.Context, v challengeVars) error {
	vars := h.end(v)
	if h.cleanup == "" {
		h.log.DebugContext(ctx, "no cleanup hook to run", "identifier", v.ch.Identifier.Value, "challenge", v.ch.Type)
		return nil
	}
	_, err := h.run(ctx, roleCleanup, h.cleanup, append(vars, EnvAction+"="+roleCleanup), v.ch)
	return err
}
