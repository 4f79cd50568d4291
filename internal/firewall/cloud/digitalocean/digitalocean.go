// Package digitalocean is the DigitalOcean Cloud Firewall provider of a
// cloud firewall window, over github.com/digitalocean/godo.
//
// A DigitalOcean Cloud Firewall is an allow-list applied to the droplets
// it names by ID or by tag; a droplet with several firewalls accepts the
// union of their inbound rules, so a window is one inbound rule added to
// any one of them: TCP on the validation port from 0.0.0.0/0 or ::/0. The
// API calls used are those of the DigitalOcean API v2 reference, "Firewalls"
// and "Droplets": GET /v2/firewalls, GET /v2/firewalls/{id}, POST and
// DELETE /v2/firewalls/{id}/rules, GET /v2/droplets/{id}.
//
// DigitalOcean rules carry no description, so nothing on the firewall
// marks a rule as Detour's: the firewall package's journal is what tells
// Detour's rules from the user's.
package digitalocean

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
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/digitalocean/godo"

	"github.com/detour-acme/detour/internal/firewall/cloud"
)

// Name is the provider's configuration name (firewall = "digitalocean").
const Name = "digitalocean"

const (
	// tokenHelp says what a token needs, for the errors about it.
	tokenHelp = "a DigitalOcean API token with the custom scopes firewall:read and firewall:update " +
		"(and droplet:read when the firewall is found from firewall_instance)"
	// Statuses of a firewall and of its pending changes.
	statusSucceeded = "succeeded"
	statusFailed    = "failed"
	statusWaiting   = "waiting"
	// perPage is the page size of the firewall list, DigitalOcean's
	// maximum; maxPages bounds the pages read.
	perPage  = 200
	maxPages = 100
	// maxErrorBody bounds how much of an error response is kept.
	maxErrorBody = 64 << 10
)

// API is a DigitalOcean Cloud Firewall as a window needs it. It is safe
// for concurrent use.
type API struct {
	client     *godo.Client
	log        *slog.Logger
	firewallID string
	dropletID  int // when firewallID is empty
	poll       time.Duration

	// sem guards target: held while the target is resolved, so that
	// concurrent callers resolve it once; a channel so that a waiting
	// caller's ctx still counts.
	sem    chan struct{}
	target *cloud.Target
}

var _ cloud.API = (*API)(nil)

// New returns the provider for cfg. It makes no API call: the firewall is
// resolved by the first method that needs it.
func New(cfg cloud.Config) (*API, error) {
	token, err := readToken(cfg)
	if err != nil {
		return nil, err
	}
	a := &API{
		log:        cfg.Logger,
		firewallID: strings.TrimSpace(cfg.FirewallID),
		poll:       cfg.Poll(),
		sem:        make(chan struct{}, 1),
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.firewallID == "" {
		inst := strings.TrimSpace(cfg.Instance)
		if inst == "" {
			return nil, errors.New("digitalocean: no firewall to change: set firewall_id to the Cloud Firewall's ID " +
				"(`doctl compute firewall list` shows them) or firewall_instance to this droplet's ID")
		}
		id, err := strconv.Atoi(inst)
		if err != nil || id < 1 {
			return nil, fmt.Errorf("digitalocean: firewall_instance %q is not a droplet ID: it is a number "+
				"(`doctl compute droplet list` shows them)", inst)
		}
		a.dropletID = id
	}

	base := "https://api.digitalocean.com/"
	if cfg.Endpoint != "" {
		base = cfg.Endpoint
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("digitalocean: endpoint %q is not an http(s) URL", base)
	}
	if u.Path != "" && u.Path != "/" {
		// godo's request paths are absolute (/v2/...): a base path would
		// be dropped, not prefixed.
		return nil, fmt.Errorf("digitalocean: endpoint %q has a path: give the scheme and host only", base)
	}

	hc := &http.Client{Timeout: 30 * time.Second}
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient
		hc = &c
	}
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	hc.Transport = &transport{base: rt, token: token, scheme: u.Scheme, host: u.Host}

	// RetryConfig is left unset: godo's own retries stay off, cloud.Retry
	// is the one place that retries.
	a.client, err = godo.New(hc, godo.SetBaseURL(base), godo.SetUserAgent("detour"))
	if err != nil {
		return nil, fmt.Errorf("digitalocean: creating the API client: %w", err)
	}
	return a, nil
}

// readToken finds the API token: cfg.Credentials, else DIGITALOCEAN_TOKEN,
// else DIGITALOCEAN_ACCESS_TOKEN.
func readToken(cfg cloud.Config) (string, error) {
	if path := cfg.Credentials; path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("digitalocean: reading the token file %s (firewall_credentials): %w; "+
				"the file must hold %s, on one line", path, err, tokenHelp)
		}
		tok := strings.TrimSpace(string(data))
		switch {
		case tok == "":
			return "", fmt.Errorf("digitalocean: the token file %s (firewall_credentials) is empty: "+
				"put %s in it, on one line", path, tokenHelp)
		case strings.ContainsAny(tok, " \t\r\n"):
			return "", fmt.Errorf("digitalocean: the token file %s (firewall_credentials) holds more than a token: "+
				"it must hold %s alone, on one line", path, tokenHelp)
		}
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			if log := cfg.Logger; log != nil {
				log.Warn("the DigitalOcean token file can be read by other users; chmod 600 it",
					"path", path, "mode", fi.Mode().Perm().String())
			}
		}
		return tok, nil
	}
	for _, key := range []string{"DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN"} {
		if tok := strings.TrimSpace(cfg.Env(key)); tok != "" {
			if strings.ContainsAny(tok, " \t\r\n") {
				return "", fmt.Errorf("digitalocean: %s holds more than a token", key)
			}
			return tok, nil
		}
	}
	return "", fmt.Errorf("digitalocean: no API token: set firewall_credentials = \"/path/to/token-file\" "+
		"(a file holding the token on one line) or DIGITALOCEAN_TOKEN in Detour's environment; "+
		"it must be %s", tokenHelp)
}

// Provider returns Name.
func (a *API) Provider() string { return Name }

// Target resolves the firewall once: the one firewall_id names, or the
// lowest-ID firewall that applies to the droplet (by droplet ID or tag).
func (a *API) Target(ctx context.Context) (cloud.Target, error) {
	select {
	case a.sem <- struct{}{}:
	case <-ctx.Done():
		return cloud.Target{}, ctx.Err()
	}
	defer func() { <-a.sem }()
	if a.target != nil {
		return *a.target, nil
	}
	var (
		t   cloud.Target
		err error
	)
	if a.firewallID != "" {
		var fw *godo.Firewall
		fw, err = a.getFirewall(ctx, a.firewallID)
		if fw != nil {
			t = cloud.Target{ID: fw.ID, Name: fw.Name}
		}
	} else {
		t, err = a.discover(ctx)
	}
	if err != nil {
		return cloud.Target{}, err
	}
	a.target = &t
	return t, nil
}

// discover finds the firewalls that apply to the droplet and picks the
// lowest ID.
func (a *API) discover(ctx context.Context) (cloud.Target, error) {
	var d *godo.Droplet
	err := a.call(ctx, fmt.Sprintf("getting droplet %d", a.dropletID), func(ctx context.Context) (*godo.Response, error) {
		var resp *godo.Response
		var err error
		d, resp, err = a.client.Droplets.Get(ctx, a.dropletID)
		return resp, err
	})
	if err != nil {
		return cloud.Target{}, a.hint(err, fmt.Sprintf("droplet %d not found: check firewall_instance "+
			"(`doctl compute droplet list` shows the IDs)", a.dropletID))
	}
	if d == nil {
		return cloud.Target{}, &cloud.Error{Provider: Name, Op: fmt.Sprintf("getting droplet %d", a.dropletID),
			Kind: cloud.ErrUnavailable, Message: "the response holds no droplet"}
	}

	var all []godo.Firewall
	for page := 1; page <= maxPages; page++ {
		var fws []godo.Firewall
		var resp *godo.Response
		err := a.call(ctx, "listing firewalls", func(ctx context.Context) (*godo.Response, error) {
			var err error
			fws, resp, err = a.client.Firewalls.List(ctx, &godo.ListOptions{Page: page, PerPage: perPage})
			return resp, err
		})
		if err != nil {
			return cloud.Target{}, a.hint(err, "")
		}
		all = append(all, fws...)
		if len(fws) == 0 || resp == nil || resp.Links == nil || resp.Links.IsLastPage() {
			break
		}
	}

	var match []godo.Firewall
	for _, fw := range all {
		if slices.Contains(fw.DropletIDs, d.ID) || slices.ContainsFunc(fw.Tags, func(t string) bool {
			return slices.Contains(d.Tags, t)
		}) {
			match = append(match, fw)
		}
	}
	if len(match) == 0 {
		return cloud.Target{}, fmt.Errorf("digitalocean: no Cloud Firewall applies to droplet %d (by its ID or its tags), "+
			"so DigitalOcean filters nothing for it and the cloud window is not needed: remove "+
			"firewall = \"digitalocean\" from the path, or attach a firewall to the droplet: %w", d.ID, cloud.ErrNotFound)
	}
	slices.SortFunc(match, func(x, y godo.Firewall) int { return strings.Compare(x.ID, y.ID) })
	fw := match[0]
	others := make([]string, 0, len(match)-1)
	for _, o := range match[1:] {
		others = append(others, o.ID)
	}
	a.log.InfoContext(ctx, "using the DigitalOcean Cloud Firewall that applies to the droplet (the lowest ID; "+
		"DigitalOcean applies the union of all their rules)",
		"firewall", fw.ID, "firewall_name", fw.Name, "droplet", d.ID, "other_firewalls", others)
	return cloud.Target{ID: fw.ID, Name: fw.Name}, nil
}

// Rules lists the target's inbound TCP rules from 0.0.0.0/0 or ::/0.
func (a *API) Rules(ctx context.Context) ([]cloud.Rule, error) {
	t, err := a.Target(ctx)
	if err != nil {
		return nil, err
	}
	fw, err := a.getFirewall(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	return rulesOf(fw), nil
}

// Add adds r to the target and waits until DigitalOcean reports it
// applied. DigitalOcean keeps no description: the returned Rule has none.
func (a *API) Add(ctx context.Context, r cloud.Rule) (cloud.Rule, error) {
	if err := checkRule(r); err != nil {
		return cloud.Rule{}, err
	}
	t, err := a.Target(ctx)
	if err != nil {
		return cloud.Rule{}, err
	}
	r.Description, r.ID = "", ""
	op := fmt.Sprintf("adding rule %s to firewall %s", r, t.ID)
	a.log.InfoContext(ctx, "adding a DigitalOcean Cloud Firewall rule", "firewall", t.ID, "rule", r.String())
	err = a.call(ctx, op, func(ctx context.Context) (*godo.Response, error) {
		return a.client.Firewalls.AddRules(ctx, t.ID, rulesRequest(r))
	})
	if err != nil {
		return cloud.Rule{}, a.hint(err, notFoundHint(t.ID))
	}
	if err := a.waitApplied(ctx, t.ID, op); err != nil {
		return cloud.Rule{}, err
	}
	return r, nil
}

// Remove removes exactly r from the target and waits until DigitalOcean
// reports the change applied. A rule already gone is success.
func (a *API) Remove(ctx context.Context, r cloud.Rule) error {
	if err := checkRule(r); err != nil {
		return err
	}
	t, err := a.Target(ctx)
	if err != nil {
		return err
	}
	present, err := a.hasRule(ctx, t.ID, r)
	if err != nil {
		return err
	}
	if !present {
		a.log.DebugContext(ctx, "the DigitalOcean Cloud Firewall rule is already gone", "firewall", t.ID, "rule", r.String())
		return nil
	}
	op := fmt.Sprintf("removing rule %s from firewall %s", r, t.ID)
	a.log.InfoContext(ctx, "removing a DigitalOcean Cloud Firewall rule", "firewall", t.ID, "rule", r.String())
	err = a.call(ctx, op, func(ctx context.Context) (*godo.Response, error) {
		return a.client.Firewalls.RemoveRules(ctx, t.ID, rulesRequest(r))
	})
	if errors.Is(err, cloud.ErrNotFound) {
		// A 404 on the rules of a firewall: if the firewall still exists
		// and no longer lists the rule, the rule went meanwhile.
		present, gerr := a.hasRule(ctx, t.ID, r)
		switch {
		case gerr != nil:
			return gerr // the firewall is gone: its own not-found error
		case !present:
			return nil
		}
		return fmt.Errorf("digitalocean: firewall %s still lists rule %s, yet removing it was answered 404: %w", t.ID, r, err)
	}
	if err != nil {
		return a.hint(err, notFoundHint(t.ID))
	}
	return a.waitApplied(ctx, t.ID, op)
}

// hasRule reports whether the firewall lists r.
func (a *API) hasRule(ctx context.Context, id string, r cloud.Rule) (bool, error) {
	fw, err := a.getFirewall(ctx, id)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(rulesOf(fw), func(x cloud.Rule) bool {
		return x.FromPort == r.FromPort && x.ToPort == r.ToPort && x.IPv6 == r.IPv6
	}), nil
}

// waitApplied polls the firewall until it reports the last change applied
// to every droplet (status "succeeded", no pending change waiting), or
// failed, or ctx ends.
func (a *API) waitApplied(ctx context.Context, id, op string) error {
	for i := 0; ; i++ {
		fw, err := a.getFirewall(ctx, id)
		if err != nil {
			if ctx.Err() != nil { // the GET was cut short: the wait's end, not the API's fault
				return fmt.Errorf("digitalocean: %s: waiting for firewall %s to apply the change: %w", op, id, ctx.Err())
			}
			return fmt.Errorf("waiting for firewall %s to apply the change: %w", id, err)
		}
		waiting := slices.ContainsFunc(fw.PendingChanges, func(p godo.PendingChange) bool {
			return p.Status == statusWaiting
		})
		switch {
		case fw.Status == statusFailed:
			return &cloud.Error{Provider: Name, Op: op, Kind: cloud.ErrRejected,
				Message: fmt.Sprintf("firewall %s reports status %q: the change was not applied to its droplets", id, fw.Status)}
		case fw.Status == statusSucceeded && !waiting:
			a.log.InfoContext(ctx, "the DigitalOcean Cloud Firewall applied the change", "firewall", id, "polls", i+1)
			return nil
		}
		a.log.DebugContext(ctx, "waiting for the DigitalOcean Cloud Firewall to apply the change",
			"firewall", id, "status", fw.Status, "pending_changes", len(fw.PendingChanges))
		t := time.NewTimer(a.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("digitalocean: %s: waiting for firewall %s to apply the change (status %q): %w",
				op, id, fw.Status, ctx.Err())
		case <-t.C:
		}
	}
}

// getFirewall gets the firewall by ID.
func (a *API) getFirewall(ctx context.Context, id string) (*godo.Firewall, error) {
	var fw *godo.Firewall
	err := a.call(ctx, "getting firewall "+id, func(ctx context.Context) (*godo.Response, error) {
		var resp *godo.Response
		var err error
		fw, resp, err = a.client.Firewalls.Get(ctx, id)
		return resp, err
	})
	if err != nil {
		return nil, a.hint(err, notFoundHint(id))
	}
	if fw == nil {
		return nil, &cloud.Error{Provider: Name, Op: "getting firewall " + id, Kind: cloud.ErrUnavailable,
			Message: "the response holds no firewall"}
	}
	return fw, nil
}

func notFoundHint(id string) string {
	return fmt.Sprintf("firewall %s not found: check firewall_id (`doctl compute firewall list` shows the IDs)", id)
}

// call runs f through cloud.Retry, turning its failures into *cloud.Error.
func (a *API) call(ctx context.Context, op string, f func(ctx context.Context) (*godo.Response, error)) error {
	return cloud.Retry(ctx, a.log, func(ctx context.Context) error {
		c := new(errorCapture)
		resp, err := f(context.WithValue(ctx, errorCaptureKey{}, c))
		if err == nil {
			return nil
		}
		return apiError(op, resp, err, c.body, time.Now())
	})
}

// hint prefixes err with what to change, by its kind; notFound is the
// hint for a 404 ("" for none).
func (a *API) hint(err error, notFound string) error {
	switch {
	case errors.Is(err, cloud.ErrAuth):
		return fmt.Errorf("DigitalOcean refused the token: check it (firewall_credentials or DIGITALOCEAN_TOKEN); "+
			"it may be mistyped, expired or revoked: %w", err)
	case errors.Is(err, cloud.ErrForbidden):
		return fmt.Errorf("the DigitalOcean token may not do this: it needs write access to firewalls: use %s: %w", tokenHelp, err)
	case errors.Is(err, cloud.ErrNotFound) && notFound != "":
		return fmt.Errorf("%s: %w", notFound, err)
	}
	return err
}

// doError is DigitalOcean's error body.
type doError struct {
	ID      string `json:"id"`
	Message string `json:"message"`
}

// apiError makes the *cloud.Error of a failed call; body is the error
// response's body, if any.
func apiError(op string, resp *godo.Response, err error, body []byte, now time.Time) *cloud.Error {
	e := &cloud.Error{Provider: Name, Op: op, Kind: cloud.ErrUnavailable, Err: err}
	var hr *http.Response
	if resp != nil {
		hr = resp.Response
	}
	var er *godo.ErrorResponse
	if errors.As(err, &er) {
		if er.Response != nil {
			hr = er.Response
		}
		e.Message = er.Message
	}
	if hr == nil {
		return e // no response: the network, a timeout, a cancelled ctx
	}
	e.Status = hr.StatusCode
	if k := cloud.KindOfStatus(hr.StatusCode); k != nil {
		e.Kind = k
	} // else a 2xx whose body could not be read: ErrUnavailable
	if len(body) > 0 {
		var d doError
		if json.Unmarshal(body, &d) == nil {
			e.Code = d.ID
			if d.Message != "" {
				e.Message = d.Message
			}
		}
	}
	if len(e.Message) > 300 {
		e.Message = e.Message[:300] + "…"
	}
	e.RetryAfter = cloud.ParseRetryAfter(hr.Header, now)
	if e.RetryAfter == 0 && hr.StatusCode == http.StatusTooManyRequests {
		if v, perr := strconv.ParseInt(strings.TrimSpace(hr.Header.Get("RateLimit-Reset")), 10, 64); perr == nil {
			if d := time.Unix(v, 0).Sub(now); d > 0 {
				e.RetryAfter = d
			}
		}
	}
	return e
}

// rulesRequest is the request body for exactly one inbound rule.
func rulesRequest(r cloud.Rule) *godo.FirewallRulesRequest {
	return &godo.FirewallRulesRequest{InboundRules: []godo.InboundRule{{
		Protocol:  "tcp",
		PortRange: portsOf(r),
		Sources:   &godo.Sources{Addresses: []string{r.Source()}},
	}}}
}

func portsOf(r cloud.Rule) string {
	if r.FromPort == r.ToPort {
		return strconv.Itoa(r.FromPort)
	}
	return strconv.Itoa(r.FromPort) + "-" + strconv.Itoa(r.ToPort)
}

func checkRule(r cloud.Rule) error {
	if r.FromPort < 1 || r.ToPort > 65535 || r.FromPort > r.ToPort {
		return fmt.Errorf("digitalocean: rule %s: ports out of range", r)
	}
	return nil
}

// rulesOf returns fw's inbound rules accepting TCP from every address of
// a family, one Rule per family.
func rulesOf(fw *godo.Firewall) []cloud.Rule {
	var out []cloud.Rule
	for _, in := range fw.InboundRules {
		if !strings.EqualFold(in.Protocol, "tcp") || in.Sources == nil ||
			(in.Action != "" && in.Action != godo.FirewallRuleActionAllow) {
			continue
		}
		from, to, ok := parsePorts(in.PortRange)
		if !ok {
			continue
		}
		var v4, v6 bool
		for _, s := range in.Sources.Addresses {
			p, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil || p.Bits() != 0 {
				continue
			}
			if p.Addr().Is4() {
				v4 = true
			} else {
				v6 = true
			}
		}
		if v4 {
			out = append(out, cloud.Rule{FromPort: from, ToPort: to})
		}
		if v6 {
			out = append(out, cloud.Rule{FromPort: from, ToPort: to, IPv6: true})
		}
	}
	return out
}

// parsePorts reads a DigitalOcean port field: "80", "8000-9000", or "0"
// or "all" for every port.
func parsePorts(s string) (from, to int, ok bool) { return cloud.ParsePorts(s, "0", "all") }

// transport adds the bearer token to the requests to the API's host only
// (never to where a redirect leads) and keeps the body of an error response
// in the request's errorCapture, so that DigitalOcean's error "id", which
// godo does not keep, can be read.
type transport struct {
	base         http.RoundTripper
	token        string
	scheme, host string
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == t.scheme && req.URL.Host == t.host {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.StatusCode < 400 {
		return resp, err
	}
	c, ok := req.Context().Value(errorCaptureKey{}).(*errorCapture)
	if !ok {
		return resp, nil
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(data))
	c.body = data
	return resp, nil
}

// errorCapture receives the body of a call's error response; one per
// attempt, in the request's context under errorCaptureKey.
type errorCapture struct{ body []byte }

type errorCaptureKey struct{}
