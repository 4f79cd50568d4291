// Package hetzner is the Hetzner Cloud firewall provider of package cloud:
// it opens a window by adding one inbound rule to a Hetzner Cloud firewall
// and closes it by removing exactly that rule, over the Cloud API
// (https://docs.hetzner.cloud/reference/cloud#firewalls) through
// github.com/hetznercloud/hcloud-go/v2/hcloud.
//
// A Hetzner firewall has no call that adds or removes one rule: its rules
// are replaced as a whole (POST /v1/firewalls/{id}/actions/set_rules),
// and the change reaches the servers through actions that are polled
// until they finish. Add and Remove therefore read the list, change one
// entry and write the list back; see Add for what that costs.
package hetzner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
	"github.com/hetznercloud/hcloud-go/v2/hcloud/schema"

	"github.com/detour-acme/detour/internal/firewall/cloud"
)

// Name is the provider's configuration name: firewall = "hetzner".
const Name = "hetzner"

// httpTimeout bounds one API request when Config.HTTPClient is nil.
const httpTimeout = 30 * time.Second

// tokenHelp says what token to give and where, for the errors about it.
const tokenHelp = `a Hetzner Cloud project API token with Read & Write permission ` +
	`(Hetzner Console: the firewall's project > Security > API tokens)`

// API is a Hetzner Cloud firewall. It is safe for concurrent use.
type API struct {
	client *hcloud.Client
	log    *slog.Logger

	// firewallID is the configured firewall; 0 when it is looked up from
	// serverID.
	firewallID, serverID int64

	mu     sync.Mutex // guards target
	target *target    // resolved once, on first use

	// write serialises Add and Remove, each a read-modify-write of the
	// whole rule list, so that two windows opened at once by this process
	// do not overwrite each other's rule.
	write sync.Mutex
}

type target struct {
	id   int64
	name string
}

var _ cloud.API = (*API)(nil)

// New returns the Hetzner firewall cfg names: cfg.FirewallID, or the
// firewall applied to the server cfg.Instance. The token comes from the
// file cfg.Credentials, else from HCLOUD_TOKEN through cfg.Getenv. New
// makes no API call; the firewall is resolved on first use.
func New(cfg cloud.Config) (*API, error) {
	token, err := loadToken(cfg)
	if err != nil {
		return nil, err
	}
	a := &API{log: cfg.Logger}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.FirewallID != "":
		if a.firewallID, err = parseID("firewall_id", cfg.FirewallID, "the firewall's ID", "hcloud firewall list"); err != nil {
			return nil, err
		}
	case cfg.Instance != "":
		if a.serverID, err = parseID("firewall_instance", cfg.Instance, "this server's ID", "hcloud server list"); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("no Hetzner firewall given: set firewall_id to the firewall's ID (`hcloud firewall list`), " +
			"or firewall_instance to this server's ID (`hcloud server list`) to use the firewall applied to it")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: httpTimeout}
	}
	opts := []hcloud.ClientOption{
		hcloud.WithToken(token),
		hcloud.WithHTTPClient(hc),
		hcloud.WithApplication("detour", ""),
		// cloud.Retry is the one place that retries: hcloud-go's own
		// retries (5 by default, on conflict, rate limit, 502, 504 and
		// timeouts) are turned off.
		hcloud.WithRetryOpts(hcloud.RetryOpts{MaxRetries: 0}),
		// How often an action is polled while waiting for it to finish.
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(cfg.Poll())}),
	}
	if cfg.Endpoint != "" {
		opts = append(opts, hcloud.WithEndpoint(cfg.Endpoint))
	}
	a.client = hcloud.NewClient(opts...)
	return a, nil
}

// loadToken reads the API token from cfg.Credentials, else HCLOUD_TOKEN.
func loadToken(cfg cloud.Config) (string, error) {
	if path := cfg.Credentials; path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("reading the Hetzner API token from firewall_credentials: %w; the file should hold %s, on one line", err, tokenHelp)
		}
		tok := strings.TrimSpace(string(data))
		switch {
		case tok == "":
			return "", fmt.Errorf("the Hetzner API token file %s (firewall_credentials) is empty; put %s in it, on one line", path, tokenHelp)
		case strings.ContainsAny(tok, "\r\n"):
			return "", fmt.Errorf("the Hetzner API token file %s (firewall_credentials) holds more than one line; put only the token in it", path)
		case !tokenChars(tok):
			return "", fmt.Errorf("the Hetzner API token in %s (firewall_credentials) has spaces, control or non-ASCII characters, which a token cannot have; put only the token in the file", path)
		}
		return tok, nil
	}
	if tok := strings.TrimSpace(cfg.Env("HCLOUD_TOKEN")); tok != "" {
		if !tokenChars(tok) {
			return "", errors.New("HCLOUD_TOKEN has spaces, control or non-ASCII characters, which a Hetzner API token cannot have")
		}
		return tok, nil
	}
	return "", fmt.Errorf(`no Hetzner Cloud API token: set firewall_credentials = "/path/to/token" (a file holding the token on one line) `+
		`or the HCLOUD_TOKEN environment variable; the token is %s`, tokenHelp)
}

// tokenChars reports whether tok is printable ASCII without spaces, as
// an Authorization header value must be.
func tokenChars(tok string) bool {
	for i := range len(tok) {
		if tok[i] <= ' ' || tok[i] > '~' {
			return false
		}
	}
	return true
}

func parseID(setting, v, what, list string) (int64, error) {
	id, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%s = %q is not a Hetzner ID: set it to %s, a number (`%s` lists them)", setting, v, what, list)
	}
	return id, nil
}

// Provider returns "hetzner".
func (a *API) Provider() string { return Name }

// Target resolves the firewall: cfg.FirewallID, or the one applied to the
// server cfg.Instance. The result is cached; a failure is not.
func (a *API) Target(ctx context.Context) (cloud.Target, error) {
	t, err := a.resolve(ctx)
	if err != nil {
		return cloud.Target{}, err
	}
	return cloud.Target{ID: strconv.FormatInt(t.id, 10), Name: t.name}, nil
}

func (a *API) resolve(ctx context.Context) (target, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.target != nil {
		return *a.target, nil
	}
	id := a.firewallID
	if id == 0 {
		var err error
		if id, err = a.discover(ctx); err != nil {
			return target{}, err
		}
	}
	fw, err := a.readFirewall(ctx, id)
	if err != nil {
		return target{}, err
	}
	a.target = &target{id: id, name: fw.Name}
	return *a.target, nil
}

// discover returns the firewall applied to a.serverID. Hetzner filters a
// server's traffic by the union of the rules of all the firewalls applied
// to it, so a rule added to any one of them opens the port: Detour takes
// the one with the lowest ID, so that every run picks the same.
func (a *API) discover(ctx context.Context) (int64, error) {
	var body struct {
		Server struct {
			Name      string `json:"name"`
			PublicNet struct {
				Firewalls []schema.ServerFirewall `json:"firewalls"`
			} `json:"public_net"`
		} `json:"server"`
	}
	op := fmt.Sprintf("reading server %d", a.serverID)
	notFound := fmt.Sprintf("server %d was not found in the token's project (`hcloud server list` lists them); check firewall_instance and the token", a.serverID)
	if err := a.call(ctx, op, notFound, http.MethodGet, fmt.Sprintf("/servers/%d", a.serverID), nil, &body); err != nil {
		return 0, err
	}
	var ids []int64
	for _, f := range body.Server.PublicNet.Firewalls {
		ids = append(ids, f.ID)
	}
	if len(ids) == 0 {
		return 0, fmt.Errorf("%w: no Hetzner Cloud firewall is applied to server %d (%s), so none filters its inbound traffic "+
			"and a cloud window is not needed: remove firewall = %q from the path, or apply a firewall to the server "+
			"(`hcloud firewall apply-to-resource`) and run again", cloud.ErrNotFound, a.serverID, body.Server.Name, Name)
	}
	id := slices.Min(ids)
	if len(ids) > 1 {
		a.log.InfoContext(ctx, "several Hetzner firewalls apply to the server; Hetzner applies the rules of all of them, so Detour adds its rule to the one with the lowest ID",
			"server", a.serverID, "firewalls", ids, "firewall", id)
	} else {
		a.log.InfoContext(ctx, "found the Hetzner firewall applied to the server", "server", a.serverID, "firewall", id)
	}
	return id, nil
}

// firewall is what Detour reads of GET /v1/firewalls/{id}. The rules are
// kept in hcloud-go's wire schema, strings as Hetzner sent them: the
// typed hcloud.FirewallRule parses source_ips into net.IPNet and would
// write back what it could not parse as "<nil>".
type firewall struct {
	ID    int64                 `json:"id"`
	Name  string                `json:"name"`
	Rules []schema.FirewallRule `json:"rules"`
}

func (a *API) readFirewall(ctx context.Context, id int64) (firewall, error) {
	var body struct {
		Firewall firewall `json:"firewall"`
	}
	err := a.call(ctx, fmt.Sprintf("reading firewall %d", id), a.firewallNotFound(id),
		http.MethodGet, fmt.Sprintf("/firewalls/%d", id), nil, &body)
	return body.Firewall, err
}

func (a *API) firewallNotFound(id int64) string {
	s := fmt.Sprintf("firewall %d was not found in the token's project (`hcloud firewall list` lists them)", id)
	if a.firewallID != 0 {
		return s + "; check firewall_id and the token"
	}
	return s + "; it was applied to server " + strconv.FormatInt(a.serverID, 10) + " and may have just been deleted"
}

// Rules returns the firewall's inbound TCP rules from 0.0.0.0/0 or ::/0
// (one cloud.Rule per family); port "any" is 1-65535. Hetzner firewalls
// have no rule for every protocol, so only "tcp" rules count.
func (a *API) Rules(ctx context.Context) ([]cloud.Rule, error) {
	t, err := a.resolve(ctx)
	if err != nil {
		return nil, err
	}
	fw, err := a.readFirewall(ctx, t.id)
	if err != nil {
		return nil, err
	}
	var out []cloud.Rule
	for _, fr := range fw.Rules {
		if fr.Direction != string(hcloud.FirewallRuleDirectionIn) || fr.Protocol != string(hcloud.FirewallRuleProtocolTCP) || fr.Port == nil {
			continue
		}
		from, to, ok := parsePort(*fr.Port)
		if !ok {
			continue
		}
		var v4, v6 bool
		for _, s := range fr.SourceIPs {
			switch everyAddress(s) {
			case family4:
				v4 = true
			case family6:
				v6 = true
			}
		}
		desc := deref(fr.Description)
		if v4 {
			out = append(out, cloud.Rule{FromPort: from, ToPort: to, Description: desc})
		}
		if v6 {
			out = append(out, cloud.Rule{FromPort: from, ToPort: to, IPv6: true, Description: desc})
		}
	}
	return out, nil
}

// Add appends one rule to the firewall — inbound, TCP, r's port, from
// r.Source(), described r.Description — and waits until Hetzner reports
// it applied to the firewall's servers.
//
// Hetzner has no call that adds one rule and no conditional update (no
// version or ETag to send with set_rules), so this is a read-modify-write
// of the whole list: a change made to the firewall by anyone else between
// the read and the write (in the Console, by Terraform, by Detour on
// another host) is lost, overwritten by the list read before it. The gap
// is one API round trip. Within this process, Add and Remove are
// serialised. Every other rule is written back as read, field for field.
func (a *API) Add(ctx context.Context, r cloud.Rule) (cloud.Rule, error) {
	r, port, err := normalise(r)
	if err != nil {
		return cloud.Rule{}, err
	}
	t, err := a.resolve(ctx)
	if err != nil {
		return cloud.Rule{}, err
	}
	a.write.Lock()
	defer a.write.Unlock()
	err = a.rewrite(ctx, t.id, func(current []schema.FirewallRule) ([]schema.FirewallRuleRequest, string, bool) {
		rules := requestRules(current)
		add := schema.FirewallRuleRequest{
			Direction: string(hcloud.FirewallRuleDirectionIn),
			Protocol:  string(hcloud.FirewallRuleProtocolTCP),
			Port:      &port,
			SourceIPs: []string{r.Source()},
		}
		if r.Description != "" {
			add.Description = &r.Description
		}
		return append(rules, add), fmt.Sprintf("adding rule %s to firewall %d", r, t.id), true
	})
	if err != nil {
		return cloud.Rule{}, err
	}
	a.log.InfoContext(ctx, "added a rule to the Hetzner firewall", "firewall", t.id, "rule", r.String(), "description", r.Description)
	return r, nil
}

// Remove removes the one rule that is r — inbound, TCP, r's port, from
// r.Source() alone, with r.Description — and waits until Hetzner reports
// the change applied. When no rule is r, it succeeds without a change.
// The read-modify-write caveat of Add applies.
func (a *API) Remove(ctx context.Context, r cloud.Rule) error {
	r, _, err := normalise(r)
	if err != nil {
		return err
	}
	t, err := a.resolve(ctx)
	if err != nil {
		return err
	}
	a.write.Lock()
	defer a.write.Unlock()
	changed := false
	err = a.rewrite(ctx, t.id, func(current []schema.FirewallRule) ([]schema.FirewallRuleRequest, string, bool) {
		i := slices.IndexFunc(current, func(fr schema.FirewallRule) bool { return isRule(fr, r) })
		if i < 0 {
			return nil, "", false
		}
		changed = true
		return requestRules(slices.Delete(current, i, i+1)), fmt.Sprintf("removing rule %s from firewall %d", r, t.id), true
	})
	if err != nil {
		return err
	}
	if !changed {
		a.log.DebugContext(ctx, "the rule is already gone from the Hetzner firewall", "firewall", t.id, "rule", r.String())
		return nil
	}
	a.log.InfoContext(ctx, "removed a rule from the Hetzner firewall", "firewall", t.id, "rule", r.String(), "description", r.Description)
	return nil
}

// normalise checks r's ports and returns r with ToPort set and the port
// as Hetzner writes it.
func normalise(r cloud.Rule) (cloud.Rule, string, error) {
	if r.ToPort == 0 {
		r.ToPort = r.FromPort
	}
	if r.FromPort < 1 || r.ToPort > 65535 || r.FromPort > r.ToPort {
		return r, "", fmt.Errorf("hetzner: rule ports %d-%d are not a port range", r.FromPort, r.ToPort)
	}
	port := strconv.Itoa(r.FromPort)
	if r.ToPort != r.FromPort {
		port += "-" + strconv.Itoa(r.ToPort)
	}
	return r, port, nil
}

// rewrite reads firewall id's rules, asks change for the new list (ok
// false: nothing to write), writes it with set_rules and waits for the
// actions that apply it. A transient failure (rate limit, 5xx, a
// conflict with another change) retries the whole read-modify-write, so
// that a list read before someone else's change is never written again.
func (a *API) rewrite(ctx context.Context, id int64, change func([]schema.FirewallRule) ([]schema.FirewallRuleRequest, string, bool)) error {
	var written bool
	var op string
	err := cloud.Retry(ctx, a.log, func(ctx context.Context) error {
		var body struct {
			Firewall firewall `json:"firewall"`
		}
		if err := a.callOnce(ctx, fmt.Sprintf("reading firewall %d", id), http.MethodGet, fmt.Sprintf("/firewalls/%d", id), nil, &body); err != nil {
			return err
		}
		rules, what, ok := change(body.Firewall.Rules)
		if !ok {
			return nil
		}
		op = what
		var resp schema.FirewallActionSetRulesResponse
		if err := a.callOnce(ctx, op, http.MethodPost, fmt.Sprintf("/firewalls/%d/actions/set_rules", id),
			schema.FirewallActionSetRulesRequest{Rules: rules}, &resp); err != nil {
			return err
		}
		written = true
		return a.waitActions(ctx, op, resp)
	})
	if err != nil && !written {
		return a.hint(err, a.firewallNotFound(id))
	}
	return a.hint(err, "")
}

// waitActions waits for the actions of a set_rules call.
func (a *API) waitActions(ctx context.Context, op string, resp schema.FirewallActionSetRulesResponse) error {
	actions := hcloud.ActionsFromSchema(resp.Actions)
	// WaitFor polls GET /v1/actions?id=… every Config.PollInterval until
	// each action is "success", or returns the first one's "error" as an
	// hcloud.ActionError. A poll that fails transiently restarts the wait
	// through cloud.Retry.
	wop := op + ": waiting for Hetzner to apply the rules"
	for {
		err := a.client.Action.WaitFor(ctx, actions...)
		if err == nil {
			return nil
		}
		werr := apiError(ctx, wop, nil, err, time.Now())
		// A poll that failed transiently polls again: the rules are set,
		// and writing them again is what must not happen.
		if !errors.Is(werr, cloud.ErrUnavailable) && !errors.Is(werr, cloud.ErrRateLimited) || ctx.Err() != nil {
			return werr
		}
		a.log.WarnContext(ctx, "polling Hetzner's actions failed; polling again", "error", werr)
		select {
		case <-ctx.Done():
			return errors.Join(werr, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// call makes one API request, method path relative to the endpoint, with
// in as its JSON body when not nil and the response decoded into out,
// through cloud.Retry. notFound is what a 404 means.
func (a *API) call(ctx context.Context, op, notFound, method, path string, in, out any) error {
	err := cloud.Retry(ctx, a.log, func(ctx context.Context) error { return a.callOnce(ctx, op, method, path, in, out) })
	return a.hint(err, notFound)
}

// callOnce makes one API request, without retrying it.
func (a *API) callOnce(ctx context.Context, op, method, path string, in, out any) error {
	var rd io.Reader
	if in != nil {
		body, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("hetzner: %s: encoding the request: %w", op, err)
		}
		rd = bytes.NewReader(body)
	}
	req, err := a.client.NewRequest(ctx, method, path, rd)
	if err != nil {
		return fmt.Errorf("hetzner: %s: %w", op, err)
	}
	resp, err := a.client.Do(req, out)
	if err != nil {
		return apiError(ctx, op, resp, err, time.Now())
	}
	return nil
}

// hint adds to an API error what to change, for the errors a user fixes:
// the token, its permission, the firewall's or server's ID.
func (a *API) hint(err error, notFound string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cloud.ErrAuth):
		return fmt.Errorf("%w; check the API token (firewall_credentials or HCLOUD_TOKEN): Hetzner refused it, so it is mistyped, revoked or deleted; it should be %s", err, tokenHelp)
	case errors.Is(err, cloud.ErrForbidden):
		return fmt.Errorf("%w; the API token is Read only: changing a firewall takes %s", err, tokenHelp)
	case errors.Is(err, cloud.ErrNotFound) && notFound != "":
		return fmt.Errorf("%w; %s", err, notFound)
	}
	return err
}

// apiError turns a failed hcloud-go call into a *cloud.Error. A cancelled
// or expired ctx is returned as is (wrapped with op), not as a provider
// failure, so that cloud.Retry stops at once.
func apiError(ctx context.Context, op string, resp *hcloud.Response, err error, now time.Time) error {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("hetzner: %s: %w", op, err)
	}
	e := &cloud.Error{Provider: Name, Op: op, Err: err}
	var he hcloud.Error
	var ae hcloud.ActionError
	switch {
	case errors.As(err, &he):
		e.Code, e.Message = string(he.Code), he.Message
		if resp == nil {
			resp = he.Response()
		}
	case errors.As(err, &ae):
		e.Code, e.Message, e.Kind = ae.Code, ae.Message, cloud.ErrRejected
	}
	if resp != nil && resp.Response != nil {
		e.Status = resp.StatusCode
		e.RetryAfter = retryAfter(resp.Header, e.Status, now)
	}
	if e.Kind == nil {
		e.Kind = kindOf(e.Code, e.Status)
	}
	return e
}

// kindOf returns the sentinel for a Hetzner error code, else for the HTTP
// status; a failure with no status (no response, an unreadable one) is
// ErrUnavailable.
func kindOf(code string, status int) error {
	switch hcloud.ErrorCode(code) {
	case hcloud.ErrorCodeUnauthorized:
		return cloud.ErrAuth
	case hcloud.ErrorCodeForbidden:
		return cloud.ErrForbidden
	case hcloud.ErrorCodeNotFound:
		return cloud.ErrNotFound
	case hcloud.ErrorCodeRateLimitExceeded:
		return cloud.ErrRateLimited
	case hcloud.ErrorCodeServiceError, hcloud.ErrorCodeServerError, hcloud.ErrorCodeBadGateway, hcloud.ErrorCodeTimeout,
		hcloud.ErrorCodeMaintenance, hcloud.ErrorCodeConflict, hcloud.ErrorCodeLocked, hcloud.ErrorCodeRobotUnavailable:
		// conflict ("the resource has changed during the request") and
		// locked ("another action is running") pass when tried again.
		return cloud.ErrUnavailable
	case hcloud.ErrorCodeInvalidInput, hcloud.ErrorCodeJSONError, hcloud.ErrorCodeUniquenessError,
		hcloud.ErrorCodeResourceLimitExceeded, hcloud.ErrorCodeProtected:
		return cloud.ErrRejected
	}
	if k := cloud.KindOfStatus(status); k != nil {
		return k
	}
	return cloud.ErrUnavailable
}

// retryAfter is how long Hetzner asks to wait: Retry-After, else on a 429
// the time until the next request is allowed by the RateLimit-* headers.
//
// RateLimit-Reset (unix seconds) is when the whole budget is back, and
// Hetzner refills it steadily (3600 requests an hour: one a second), so
// with RateLimit-Limit given the next request is possible after
// (reset-now)/(limit-remaining), not after the hour; without it, after
// reset-now.
func retryAfter(h http.Header, status int, now time.Time) time.Duration {
	if d := cloud.ParseRetryAfter(h, now); d > 0 {
		return d
	}
	if status != http.StatusTooManyRequests {
		return 0
	}
	reset, err := strconv.ParseInt(strings.TrimSpace(h.Get("RateLimit-Reset")), 10, 64)
	if err != nil {
		return 0
	}
	until := time.Unix(reset, 0).Sub(now)
	if until <= 0 {
		return 0
	}
	limit, err := strconv.Atoi(strings.TrimSpace(h.Get("RateLimit-Limit")))
	if err != nil {
		return until
	}
	remaining, _ := strconv.Atoi(strings.TrimSpace(h.Get("RateLimit-Remaining")))
	if missing := limit - max(remaining, 0); missing > 1 {
		until /= time.Duration(missing)
	}
	return until
}

// requestRules returns rules as set_rules takes them, every field as read.
func requestRules(rules []schema.FirewallRule) []schema.FirewallRuleRequest {
	out := make([]schema.FirewallRuleRequest, 0, len(rules)+1)
	for _, fr := range rules {
		out = append(out, schema.FirewallRuleRequest{
			Direction:      fr.Direction,
			SourceIPs:      fr.SourceIPs,
			DestinationIPs: fr.DestinationIPs,
			Protocol:       fr.Protocol,
			Port:           fr.Port,
			Description:    fr.Description,
		})
	}
	return out
}

// isRule reports whether fr is exactly the rule Add writes for r.
func isRule(fr schema.FirewallRule, r cloud.Rule) bool {
	if fr.Direction != string(hcloud.FirewallRuleDirectionIn) || fr.Protocol != string(hcloud.FirewallRuleProtocolTCP) ||
		fr.Port == nil || len(fr.SourceIPs) != 1 || len(fr.DestinationIPs) != 0 || deref(fr.Description) != r.Description {
		return false
	}
	from, to, ok := parsePort(*fr.Port)
	want := family4
	if r.IPv6 {
		want = family6
	}
	return ok && from == r.FromPort && to == r.ToPort && everyAddress(fr.SourceIPs[0]) == want
}

type family int

const (
	familyNone family = iota
	family4
	family6
)

// everyAddress returns the family whose every address the CIDR s holds
// (0.0.0.0/0, ::/0), or familyNone.
func everyAddress(s string) family {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	switch {
	case err != nil || p.Bits() != 0:
		return familyNone
	case p.Addr().Is4():
		return family4
	}
	return family6
}

// parsePort reads a Hetzner rule's port: "80", "8000-9000", or "any".
func parsePort(s string) (from, to int, ok bool) { return cloud.ParsePorts(s, "any") }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
