// Package cloud is what Detour needs of a cloud provider's firewall API
// to open a firewall window there: a DigitalOcean Cloud Firewall, an AWS
// security group, a Hetzner Cloud firewall. Those firewalls sit outside
// the host, are allow-lists edited through an API, and have no timeout of
// their own: a rule stays until it is removed.
//
// Each provider lives in its own package under this one and implements
// API over the provider's SDK; package firewall turns an API into a
// firewall Backend (the window, Detour's journal of the rules it added,
// the sweep of rules left by a killed run). This package imports nothing
// of Detour's so that the providers do not either.
//
// A window is one inbound rule accepting TCP on the validation port from
// every address of one family (0.0.0.0/0 or ::/0): the CA's validation
// addresses are not published and change, so a narrower rule would be a
// guess. Rules of the user's are never changed.
package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Rule is one inbound rule accepting TCP from every address of one
// family, on a port or a range of ports.
type Rule struct {
	// FromPort and ToPort are the ports accepted, inclusive; equal for a
	// single port. A rule accepting every port has 1 and 65535.
	FromPort, ToPort int
	// IPv6 is true for a rule from ::/0, false for 0.0.0.0/0.
	IPv6 bool
	// Description is the rule's description where the provider keeps one
	// (AWS, Hetzner); Detour marks its own rules there. Empty where the
	// provider has none (DigitalOcean).
	Description string
	// ID is the provider's identifier of the rule where it has one (AWS
	// security group rule IDs, sgr-...); empty otherwise.
	ID string
}

// Covers reports whether r accepts TCP on port from every address of the
// family ipv6 names.
func (r Rule) Covers(port int, ipv6 bool) bool {
	return r.IPv6 == ipv6 && r.FromPort <= port && port <= r.ToPort
}

// Source returns the rule's source prefix: "0.0.0.0/0" or "::/0".
func (r Rule) Source() string {
	if r.IPv6 {
		return "::/0"
	}
	return "0.0.0.0/0"
}

func (r Rule) String() string {
	ports := strconv.Itoa(r.FromPort)
	if r.ToPort != r.FromPort {
		ports += "-" + strconv.Itoa(r.ToPort)
	}
	s := "tcp/" + ports + " from " + r.Source()
	if r.ID != "" {
		s += " (" + r.ID + ")"
	}
	return s
}

// ParsePorts reads a provider's port field: "80", "8000-9000", or one of
// every (the provider's words for all ports, e.g. "all", "any", "0"),
// compared without case. Anything else is not read as accepting a port.
func ParsePorts(s string, every ...string) (from, to int, ok bool) {
	s = strings.TrimSpace(s)
	for _, w := range every {
		if strings.EqualFold(s, w) {
			return 1, 65535, true
		}
	}
	lo, hi, isRange := strings.Cut(s, "-")
	from, err := strconv.Atoi(lo)
	if err != nil {
		return 0, 0, false
	}
	to = from
	if isRange {
		if to, err = strconv.Atoi(hi); err != nil {
			return 0, 0, false
		}
	}
	if from < 1 || to > 65535 || from > to {
		return 0, 0, false
	}
	return from, to, true
}

// Target is the firewall a provider changes.
type Target struct {
	// ID is the provider's identifier: a DigitalOcean firewall UUID, an
	// AWS security group ID (sg-...), a Hetzner firewall number.
	ID string
	// Name is its name where it has one, for messages.
	Name string
}

// API is one provider's firewall, as a window needs it. Implementations
// resolve the firewall once (from its ID, or from the instance given in
// Config) and MUST be safe for concurrent use.
//
// Every method returns an *Error for a failed API call, so that callers
// can tell a refused token from a missing firewall from a provider that
// is down; Retry retries the transient ones. SDK-level retries are
// turned off so that this is the one place that retries.
type API interface {
	// Provider is the backend's configuration name, e.g. "digitalocean".
	Provider() string
	// Target resolves the firewall the rules go to.
	Target(ctx context.Context) (Target, error)
	// Rules lists the target's inbound rules that accept TCP (or every
	// protocol) from every address of a family: 0.0.0.0/0 or ::/0
	// among their sources. A provider rule with both sources is returned
	// as two Rules. Rules from narrower sources do not matter to a
	// window and are left out.
	Rules(ctx context.Context) ([]Rule, error)
	// Add adds r, a single port from one family's every address, with
	// r.Description where the provider keeps one, and returns once the
	// provider reports the change applied to the machines the firewall
	// protects. The returned Rule carries the provider's ID, if any.
	Add(ctx context.Context, r Rule) (Rule, error)
	// Remove removes exactly r (by ID when it has one), leaving every
	// other rule as it is, and returns once the provider reports the
	// change applied. Removing a rule that is already gone succeeds.
	Remove(ctx context.Context, r Rule) error
}

// WriteChecker is implemented by an API that can tell, changing nothing,
// whether the credentials may add and remove r (AWS's DryRun). The
// window's check, before anything is ordered, calls it: a policy that
// may open a window but not close it is refused then, not found out with
// a hole left open.
type WriteChecker interface {
	CheckWrite(ctx context.Context, r Rule) error
}

// Config is what a provider's constructor takes: the window settings of
// a path, resolved by the plan layer.
type Config struct {
	// Credentials is a file holding the API credentials: the token for
	// DigitalOcean and Hetzner (one line), an AWS shared credentials file
	// for AWS. Empty means the provider's usual environment variables
	// (through Getenv) or credential chain.
	Credentials string
	// Profile is the AWS profile in Credentials; empty means "default".
	Profile string
	// Region is the AWS region; empty means the SDK's chain (AWS_REGION,
	// the shared config file).
	Region string
	// FirewallID is the firewall to change: a DigitalOcean firewall ID, an
	// AWS security group ID, a Hetzner firewall ID.
	FirewallID string
	// Instance, when FirewallID is empty, is this machine's ID at the
	// provider (droplet ID, EC2 instance ID, Hetzner server ID): the
	// firewall is the one (the first, by ID) that applies to it.
	Instance string
	// Endpoint replaces the provider's API base URL (a VPC endpoint, a
	// proxy, the tests' fake).
	Endpoint string
	// Getenv reads the environment for the provider's usual variables
	// (DIGITALOCEAN_TOKEN, DIGITALOCEAN_ACCESS_TOKEN, HCLOUD_TOKEN). Nil
	// means no environment: a library never reads it on its own. The one
	// exception is AWS without Credentials: the SDK's default credential
	// chain reads AWS_* itself, which is what its users expect.
	Getenv func(string) string
	// HTTPClient makes the API calls; nil means a client with a 30 s
	// timeout.
	HTTPClient *http.Client
	// Logger receives what is changed. Nil discards.
	Logger *slog.Logger
	// PollInterval is how often a provider is asked whether a change is
	// applied; zero means 2 s (tests make it shorter).
	PollInterval time.Duration
}

// Env returns the variable named key through c.Getenv, "" when unset
// or when c has no environment.
func (c Config) Env(key string) string {
	if c.Getenv == nil {
		return ""
	}
	return c.Getenv(key)
}

// Poll returns c.PollInterval or its default.
func (c Config) Poll() time.Duration {
	if c.PollInterval > 0 {
		return c.PollInterval
	}
	return 2 * time.Second
}

// Sentinel errors an *Error wraps, by what the caller does about them.
var (
	// ErrAuth: the credentials are refused (HTTP 401, AWS AuthFailure):
	// wrong, expired or revoked.
	ErrAuth = errors.New("the provider refused the credentials")
	// ErrForbidden: the credentials are valid but may not do this (HTTP
	// 403, AWS UnauthorizedOperation): a read-only token, a missing IAM
	// action.
	ErrForbidden = errors.New("the credentials are not allowed to change the firewall")
	// ErrNotFound: the firewall (or the instance it was looked up by) does
	// not exist for these credentials (HTTP 404, AWS
	// InvalidGroup.NotFound).
	ErrNotFound = errors.New("the firewall was not found")
	// ErrRateLimited: too many requests (HTTP 429, AWS RequestLimitExceeded).
	ErrRateLimited = errors.New("the provider's rate limit was reached")
	// ErrUnavailable: the provider failed (HTTP 5xx) or could not be
	// reached.
	ErrUnavailable = errors.New("the provider's API is unavailable")
	// ErrRejected: the provider refused the request itself (HTTP 400/422,
	// a rule limit reached).
	ErrRejected = errors.New("the provider rejected the change")
)

// Error is a failed API call.
type Error struct {
	Provider string // e.g. "digitalocean"
	Op       string // what was being done, e.g. "adding rule tcp/80 from 0.0.0.0/0"
	// Kind is one of the sentinel errors above.
	Kind error
	// Status is the HTTP status; 0 when there was no response.
	Status int
	// Code and Message are the provider's error code and message.
	Code, Message string
	// RetryAfter is how long the provider asked to wait (429, 503).
	RetryAfter time.Duration
	// Err is the SDK's error.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", e.Provider, e.Op)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	switch {
	case e.Message != "":
		fmt.Fprintf(&b, ": %s", e.Message)
	case e.Err != nil:
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrAuth) and the like work.
func (e *Error) Is(target error) bool { return e.Kind == target }

// Unwrap returns the SDK's error.
func (e *Error) Unwrap() error { return e.Err }

// LogValue implements slog.LogValuer.
func (e *Error) LogValue() slog.Value {
	return slog.GroupValue(slog.String("provider", e.Provider), slog.String("op", e.Op),
		slog.Int("status", e.Status), slog.String("code", e.Code), slog.String("message", e.Message))
}

// KindOfStatus returns the sentinel for an HTTP status: 401 ErrAuth, 403
// ErrForbidden, 404 ErrNotFound, 429 ErrRateLimited, 5xx ErrUnavailable,
// other 4xx ErrRejected; nil for a success.
func KindOfStatus(status int) error {
	switch {
	case status == http.StatusUnauthorized:
		return ErrAuth
	case status == http.StatusForbidden:
		return ErrForbidden
	case status == http.StatusNotFound:
		return ErrNotFound
	case status == http.StatusTooManyRequests:
		return ErrRateLimited
	case status >= 500:
		return ErrUnavailable
	case status >= 400:
		return ErrRejected
	}
	return nil
}

// ParseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date; 0 when absent or unreadable.
func ParseRetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// Retry policy: transient failures (429, 5xx, no response) are retried
// this many times in all, waiting RetryAfter when the provider gave one
// (at most maxWait), else backing off from firstBackoff.
const (
	attempts     = 4
	firstBackoff = time.Second
	maxWait      = 60 * time.Second
)

// Retry runs op, retrying it while it fails with ErrRateLimited or
// ErrUnavailable, honouring the provider's Retry-After. It gives up at
// once on other errors, after the last attempt, or when ctx ends; a wait
// the provider asks for that would outlast ctx's deadline is not waited.
func Retry(ctx context.Context, log *slog.Logger, op func(ctx context.Context) error) error {
	return retry(ctx, log, op, firstBackoff)
}

func retry(ctx context.Context, log *slog.Logger, op func(ctx context.Context) error, backoff time.Duration) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var err error
	for i := range attempts {
		if err = op(ctx); err == nil {
			return nil
		}
		if ctx.Err() != nil || !errors.Is(err, ErrRateLimited) && !errors.Is(err, ErrUnavailable) || i == attempts-1 {
			return err
		}
		wait, asked := backoff<<i, false
		var ce *Error
		if errors.As(err, &ce) && ce.RetryAfter > 0 {
			wait, asked = ce.RetryAfter, true
		}
		if asked && wait > maxWait {
			return fmt.Errorf("%w (the provider asks to wait %v, longer than Detour waits)", err, wait.Round(time.Second))
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			if asked {
				return fmt.Errorf("%w (the provider asks to wait %v, past this run's deadline)", err, wait.Round(time.Second))
			}
			return err
		}
		log.WarnContext(ctx, "cloud firewall API call failed; retrying", "error", err, "wait", wait, "attempt", i+1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
	return err
}
