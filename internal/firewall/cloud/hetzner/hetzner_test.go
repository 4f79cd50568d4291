package hetzner

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall/cloud"
	"github.com/detour-acme/detour/internal/firewall/cloud/hetzner/hcloudfake"
)

const mark = "detour-window until=1767225600"

func newFake(t *testing.T) *hcloudfake.Server {
	t.Helper()
	f := hcloudfake.New()
	t.Cleanup(f.Close)
	return f
}

// config is a Config for firewall 1 of f, with f's token through Getenv.
func config(t *testing.T, f *hcloudfake.Server) cloud.Config {
	return cloud.Config{
		FirewallID:   "1",
		Endpoint:     f.URL,
		Getenv:       envOf(map[string]string{"HCLOUD_TOKEN": f.Token}),
		PollInterval: time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func newAPI(t *testing.T, cfg cloud.Config) *API {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// count returns how many requests f received with method and path.
func count(f *hcloudfake.Server, method, path string) int {
	n := 0
	for _, r := range f.Requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

func marshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// seedUserRules gives firewall 1 rules of the user's that a window must
// leave alone, one of each kind.
func seedUserRules(f *hcloudfake.Server) {
	f.AddRule(1, hcloudfake.Rule{Direction: "in", Protocol: "tcp", Port: new("22"),
		SourceIPs: []string{"10.0.0.0/8", "2001:DB8:0:0::/48"}, Description: new("ssh from the office")})
	f.AddRule(1, hcloudfake.Rule{Direction: "in", Protocol: "tcp", Port: new("443"),
		SourceIPs: []string{"0.0.0.0/0", "::/0"}})
	f.AddRule(1, hcloudfake.Rule{Direction: "out", Protocol: "tcp", Port: new("any"),
		DestinationIPs: []string{"0.0.0.0/0", "::/0"}, Description: new("all out")})
	f.AddRule(1, hcloudfake.Rule{Direction: "in", Protocol: "icmp",
		SourceIPs: []string{"0.0.0.0/0", "::/0"}, Description: new("")})
}

// TestOpenCloseKeepsOtherRules opens and closes windows for both families
// and checks that the user's rules are written back exactly as they were,
// that Detour's rules have the documented shape, and that Rules sees them.
func TestOpenCloseKeepsOtherRules(t *testing.T) {
	f := newFake(t)
	f.AddFirewall(1, "web", 10)
	seedUserRules(f)
	before := marshal(t, f.Rules(1))
	a := newAPI(t, config(t, f))
	ctx := ctxFor(t, 5*time.Second)

	if tg, err := a.Target(ctx); err != nil || tg != (cloud.Target{ID: "1", Name: "web"}) {
		t.Fatalf("Target = %+v, %v; want 1 web", tg, err)
	}
	r4 := cloud.Rule{FromPort: 80, ToPort: 80, Description: mark}
	r6 := cloud.Rule{FromPort: 80, ToPort: 80, IPv6: true, Description: mark}
	for _, r := range []cloud.Rule{r4, r6} {
		got, err := a.Add(ctx, r)
		if err != nil {
			t.Fatalf("Add(%v): %v", r, err)
		}
		if got != r {
			t.Errorf("Add(%v) returned %+v", r, got)
		}
	}

	rules := f.Rules(1)
	if len(rules) != 6 {
		t.Fatalf("after Add: %d rules, want 6: %s", len(rules), marshal(t, rules))
	}
	if got := marshal(t, rules[:4]); got != before {
		t.Errorf("the user's rules changed:\n got %s\nwant %s", got, before)
	}
	want := []hcloudfake.Rule{
		{Direction: "in", Protocol: "tcp", Port: new("80"), SourceIPs: []string{"0.0.0.0/0"}, DestinationIPs: []string{}, Description: new(mark)},
		{Direction: "in", Protocol: "tcp", Port: new("80"), SourceIPs: []string{"::/0"}, DestinationIPs: []string{}, Description: new(mark)},
	}
	if got, w := marshal(t, rules[4:]), marshal(t, want); got != w {
		t.Errorf("Detour's rules:\n got %s\nwant %s", got, w)
	}

	seen, err := a.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantSeen := []cloud.Rule{
		{FromPort: 443, ToPort: 443}, {FromPort: 443, ToPort: 443, IPv6: true}, r4, r6,
	}
	if !slices.Equal(seen, wantSeen) {
		t.Errorf("Rules = %+v\nwant %+v", seen, wantSeen)
	}

	for _, r := range []cloud.Rule{r4, r6} {
		if err := a.Remove(ctx, r); err != nil {
			t.Fatalf("Remove(%v): %v", r, err)
		}
	}
	if got := marshal(t, f.Rules(1)); got != before {
		t.Errorf("after Remove:\n got %s\nwant %s", got, before)
	}
	if n := count(f, http.MethodPost, "/v1/firewalls/1/actions/set_rules"); n != 4 {
		t.Errorf("%d set_rules calls, want 4", n)
	}
}

// TestRules checks which Hetzner rules count as window rules and how they
// are split by family.
func TestRules(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	f.AddFirewall(1, "web")
	for _, r := range []hcloudfake.Rule{
		{Direction: "in", Protocol: "tcp", Port: new("80"), SourceIPs: []string{"0.0.0.0/0"}},
		{Direction: "in", Protocol: "tcp", Port: new("8000-9000"), SourceIPs: []string{"::/0"}, Description: new("range")},
		{Direction: "in", Protocol: "tcp", Port: new("any"), SourceIPs: []string{"0.0.0.0/0", "::/0"}, Description: new("all")},
		{Direction: "in", Protocol: "tcp", Port: new("8080"), SourceIPs: []string{"192.0.2.7/32", "0.0.0.0/0"}},
		{Direction: "in", Protocol: "tcp", Port: new("443"), SourceIPs: []string{"10.0.0.0/8", "2001:db8::/32"}},
		{Direction: "in", Protocol: "udp", Port: new("80"), SourceIPs: []string{"0.0.0.0/0"}},
		{Direction: "in", Protocol: "icmp", SourceIPs: []string{"0.0.0.0/0", "::/0"}},
		{Direction: "out", Protocol: "tcp", Port: new("80"), DestinationIPs: []string{"0.0.0.0/0"}},
	} {
		f.AddRule(1, r)
	}
	a := newAPI(t, config(t, f))
	got, err := a.Rules(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := []cloud.Rule{
		{FromPort: 80, ToPort: 80},
		{FromPort: 8000, ToPort: 9000, IPv6: true, Description: "range"},
		{FromPort: 1, ToPort: 65535, Description: "all"},
		{FromPort: 1, ToPort: 65535, IPv6: true, Description: "all"},
		{FromPort: 8080, ToPort: 8080},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Rules =\n %+v\nwant\n %+v", got, want)
	}
}

func TestParsePort(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in       string
		from, to int
		ok       bool
	}{
		{"80", 80, 80, true}, {"8000-9000", 8000, 9000, true}, {"any", 1, 65535, true}, {"1-65535", 1, 65535, true},
		{"0", 0, 0, false}, {"65536", 0, 0, false}, {"90-80", 0, 0, false}, {"", 0, 0, false}, {"http", 0, 0, false}, {"80-", 0, 0, false},
	} {
		from, to, ok := parsePort(tc.in)
		if from != tc.from || to != tc.to || ok != tc.ok {
			t.Errorf("parsePort(%q) = %d, %d, %v; want %d, %d, %v", tc.in, from, to, ok, tc.from, tc.to, tc.ok)
		}
	}
}

// TestDiscovery finds the firewall from the server ID.
func TestDiscovery(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	f.AddFirewall(7, "second", 10)
	f.AddFirewall(3, "first", 10)
	f.AddServer(11)

	t.Run("lowest ID, resolved once", func(t *testing.T) {
		cfg := config(t, f)
		cfg.FirewallID, cfg.Instance = "", "10"
		a := newAPI(t, cfg)
		ctx := ctxFor(t, 5*time.Second)
		var wg sync.WaitGroup
		targets := make([]cloud.Target, 8)
		errs := make([]error, 8)
		for i := range targets {
			wg.Go(func() { targets[i], errs[i] = a.Target(ctx) })
		}
		wg.Wait()
		for i := range targets {
			if errs[i] != nil || targets[i] != (cloud.Target{ID: "3", Name: "first"}) {
				t.Errorf("Target = %+v, %v; want 3 first", targets[i], errs[i])
			}
		}
		if n := count(f, http.MethodGet, "/v1/servers/10"); n != 1 {
			t.Errorf("server read %d times, want once", n)
		}
		if _, err := a.Add(ctx, cloud.Rule{FromPort: 80, ToPort: 80, Description: mark}); err != nil {
			t.Fatal(err)
		}
		if len(f.Rules(3)) != 1 || len(f.Rules(7)) != 0 {
			t.Errorf("rule not added to firewall 3 alone: 3 has %d, 7 has %d", len(f.Rules(3)), len(f.Rules(7)))
		}
	})

	t.Run("no firewall", func(t *testing.T) {
		cfg := config(t, f)
		cfg.FirewallID, cfg.Instance = "", "11"
		_, err := newAPI(t, cfg).Target(ctxFor(t, 5*time.Second))
		if !errors.Is(err, cloud.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
		for _, s := range []string{"no Hetzner Cloud firewall is applied to server 11", "not needed", `remove firewall = "hetzner"`, "apply a firewall"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not say %q", err, s)
			}
		}
	})

	t.Run("no server", func(t *testing.T) {
		cfg := config(t, f)
		cfg.FirewallID, cfg.Instance = "", "12"
		_, err := newAPI(t, cfg).Target(ctxFor(t, 5*time.Second))
		var ce *cloud.Error
		if !errors.As(err, &ce) || ce.Kind != cloud.ErrNotFound || ce.Status != http.StatusNotFound {
			t.Fatalf("err = %v, want a 404 *cloud.Error", err)
		}
		if !strings.Contains(err.Error(), "server 12 was not found") || !strings.Contains(err.Error(), "hcloud server list") {
			t.Errorf("error %q does not say what to check", err)
		}
	})
}

func TestNewConfigErrors(t *testing.T) {
	t.Parallel()
	env := envOf(map[string]string{"HCLOUD_TOKEN": "t0ken"})
	for _, tc := range []struct {
		name string
		cfg  cloud.Config
		want string
	}{
		{"firewall id", cloud.Config{FirewallID: "web-fw", Getenv: env}, `firewall_id = "web-fw" is not a Hetzner ID`},
		{"server id", cloud.Config{Instance: "srv-1", Getenv: env}, `firewall_instance = "srv-1" is not a Hetzner ID`},
		{"neither", cloud.Config{Getenv: env}, "set firewall_id"},
		{"no token", cloud.Config{FirewallID: "1"}, `firewall_credentials = "/path/to/token"`},
		{"bad token", cloud.Config{FirewallID: "1", Getenv: envOf(map[string]string{"HCLOUD_TOKEN": "a b"})}, "HCLOUD_TOKEN has spaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v; want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestAddWaitsForActions checks that Add returns only once every action
// of set_rules reports success.
func TestAddWaitsForActions(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	f.AddFirewall(1, "web", 10, 11)
	f.ActionsRunFor(3)
	a := newAPI(t, config(t, f))
	if _, err := a.Add(ctxFor(t, 5*time.Second), cloud.Rule{FromPort: 80, ToPort: 80, Description: mark}); err != nil {
		t.Fatal(err)
	}
	// set_rules returned three actions (the firewall's, one per server);
	// each answers "running" 3 times, so Add polled at least 4 times and
	// asked for each of them.
	var polls []hcloudfake.Request
	for _, r := range f.Requests() {
		if r.Method == http.MethodGet && strings.HasPrefix(r.Path, "/v1/actions") {
			polls = append(polls, r)
		}
	}
	if len(polls) < 4 {
		t.Fatalf("Add returned after %d action polls, want at least 4", len(polls))
	}
	for _, id := range []string{"1001", "1002", "1003"} {
		if !strings.Contains(polls[0].Query+"&", "id="+id+"&") {
			t.Errorf("action %s not polled: %s", id, polls[0].Query)
		}
	}
}

func TestActionError(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	f.AddFirewall(1, "web", 10)
	f.FailAction("firewall_resource_not_found", "the server is gone")
	a := newAPI(t, config(t, f))
	_, err := a.Add(ctxFor(t, 5*time.Second), cloud.Rule{FromPort: 80, ToPort: 80, Description: mark})
	var ce *cloud.Error
	if !errors.As(err, &ce) || !errors.Is(err, cloud.ErrRejected) {
		t.Fatalf("err = %v, want a *cloud.Error ErrRejected", err)
	}
	if ce.Code != "firewall_resource_not_found" || ce.Message != "the server is gone" || ce.Provider != Name {
		t.Errorf("error = %+v", ce)
	}
}

// TestAPIErrors checks how failed calls are reported and retried.
func TestAPIErrors(t *testing.T) {
	t.Parallel()
	const fwPath = "/v1/firewalls/1"
	const setPath = "/v1/firewalls/1/actions/set_rules"
	add := func(a *API, ctx context.Context) error {
		_, err := a.Add(ctx, cloud.Rule{FromPort: 80, ToPort: 80, Description: mark})
		return err
	}
	rules := func(a *API, ctx context.Context) error { _, err := a.Rules(ctx); return err }

	for _, tc := range []struct {
		name    string
		setup   func(f *hcloudfake.Server, cfg *cloud.Config)
		call    func(a *API, ctx context.Context) error
		timeout time.Duration
		// want: the sentinel (nil: success), the error's status, code,
		// message, a hint the error text has.
		want                    error
		status                  int
		code, message, hint     string
		minTime                 time.Duration
		method, path            string // requests counted
		requests                int
		retryAfter, retryAfter2 time.Duration // RetryAfter in [retryAfter, retryAfter2]
	}{
		{name: "401 wrong token", call: rules,
			setup: func(_ *hcloudfake.Server, cfg *cloud.Config) {
				cfg.Getenv = envOf(map[string]string{"HCLOUD_TOKEN": "not-the-token"})
			},
			want: cloud.ErrAuth, status: 401, code: "unauthorized", message: "unable to authenticate", hint: "check the API token",
			method: "GET", path: fwPath, requests: 1},
		{name: "403 read-only token", call: add,
			setup: func(f *hcloudfake.Server, _ *cloud.Config) { f.Fail("POST", setPath, 403, "forbidden", "", 0) },
			want:  cloud.ErrForbidden, status: 403, code: "forbidden", message: "Forbidden", hint: "Read & Write",
			method: "POST", path: setPath, requests: 1},
		{name: "404 firewall", call: rules,
			setup: func(_ *hcloudfake.Server, cfg *cloud.Config) { cfg.FirewallID = "999" },
			want:  cloud.ErrNotFound, status: 404, code: "not_found", message: "firewall with ID '999' not found",
			hint: "firewall 999 was not found in the token's project (`hcloud firewall list`", method: "GET", path: "/v1/firewalls/999", requests: 1},
		{name: "429 Retry-After honoured", call: rules,
			setup:   func(f *hcloudfake.Server, _ *cloud.Config) { f.Fail("GET", fwPath, 429, "rate_limit_exceeded", "2", 1) },
			minTime: 2 * time.Second, method: "GET", path: fwPath, requests: 3},
		{name: "429 Retry-After reported", call: rules, timeout: time.Second,
			setup: func(f *hcloudfake.Server, _ *cloud.Config) {
				f.Fail("GET", fwPath, 429, "rate_limit_exceeded", "30", 0)
			},
			want: cloud.ErrRateLimited, status: 429, code: "rate_limit_exceeded", message: "Too Many Requests", hint: "past this run's deadline",
			retryAfter: 30 * time.Second, retryAfter2: 30 * time.Second, method: "GET", path: fwPath, requests: 1},
		{name: "429 RateLimit-Reset honoured", call: rules,
			setup:   func(f *hcloudfake.Server, _ *cloud.Config) { f.Fail("GET", fwPath, 429, "rate_limit_exceeded", "", 1) },
			minTime: 900 * time.Millisecond, method: "GET", path: fwPath, requests: 3},
		{name: "429 RateLimit-Reset reported", call: rules, timeout: 500 * time.Millisecond,
			setup: func(f *hcloudfake.Server, _ *cloud.Config) { f.Fail("GET", fwPath, 429, "rate_limit_exceeded", "", 0) },
			want:  cloud.ErrRateLimited, status: 429, code: "rate_limit_exceeded", hint: "past this run's deadline",
			retryAfter: 900 * time.Millisecond, retryAfter2: time.Second, method: "GET", path: fwPath, requests: 1},
		{name: "5xx retried", call: add,
			setup:  func(f *hcloudfake.Server, _ *cloud.Config) { f.Fail("POST", setPath, 503, "service_error", "", 1) },
			method: "POST", path: setPath, requests: 2},
		{name: "5xx persistent", call: rules,
			setup: func(f *hcloudfake.Server, _ *cloud.Config) { f.Fail("GET", fwPath, 503, "service_error", "1", 0) },
			want:  cloud.ErrUnavailable, status: 503, code: "service_error", message: "Service Unavailable",
			retryAfter: time.Second, retryAfter2: time.Second, method: "GET", path: fwPath, requests: 4},
		{name: "5xx without a body reported", call: rules, timeout: time.Second,
			setup: func(f *hcloudfake.Server, _ *cloud.Config) { f.Fail("GET", fwPath, 502, "", "30", 0) },
			want:  cloud.ErrUnavailable, status: 502, hint: "past this run's deadline",
			retryAfter: 30 * time.Second, retryAfter2: 30 * time.Second, method: "GET", path: fwPath, requests: 1},
		{name: "5xx while waiting for the action", call: add,
			setup:  func(f *hcloudfake.Server, _ *cloud.Config) { f.Fail("GET", "/v1/actions", 500, "server_error", "1", 1) },
			method: "GET", path: "/v1/actions", requests: 2},
		{name: "422 rejected", call: add,
			setup: func(f *hcloudfake.Server, _ *cloud.Config) { f.Fail("POST", setPath, 422, "invalid_input", "", 0) },
			want:  cloud.ErrRejected, status: 422, code: "invalid_input", method: "POST", path: setPath, requests: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t)
			f.AddFirewall(1, "web", 10)
			cfg := config(t, f)
			tc.setup(f, &cfg)
			a := newAPI(t, cfg)
			if tc.timeout == 0 {
				tc.timeout = 9 * time.Second
			}
			start := time.Now()
			err := tc.call(a, ctxFor(t, tc.timeout))
			took := time.Since(start)
			if n := count(f, tc.method, tc.path); n != tc.requests {
				t.Errorf("%d requests %s %s, want %d", n, tc.method, tc.path, tc.requests)
			}
			if took < tc.minTime {
				t.Errorf("returned after %v, want at least %v", took, tc.minTime)
			}
			if tc.want == nil {
				if err != nil {
					t.Fatalf("err = %v, want success", err)
				}
				return
			}
			var ce *cloud.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *cloud.Error", err)
			}
			if !errors.Is(err, tc.want) || ce.Provider != Name || ce.Op == "" || ce.Status != tc.status || ce.Code != tc.code {
				t.Errorf("err = %+v, want kind %v status %d code %q", ce, tc.want, tc.status, tc.code)
			}
			if tc.message != "" && ce.Message != tc.message {
				t.Errorf("message = %q, want %q", ce.Message, tc.message)
			}
			if !strings.Contains(err.Error(), tc.hint) {
				t.Errorf("error %q does not say %q", err, tc.hint)
			}
			if ce.RetryAfter < tc.retryAfter || ce.RetryAfter > tc.retryAfter2 {
				t.Errorf("RetryAfter = %v, want %v to %v", ce.RetryAfter, tc.retryAfter, tc.retryAfter2)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	h := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	reset := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }
	for _, tc := range []struct {
		name   string
		h      http.Header
		status int
		want   time.Duration
	}{
		{"Retry-After", h("Retry-After", "7", "RateLimit-Reset", reset(time.Hour)), 429, 7 * time.Second},
		{"Retry-After on 503", h("Retry-After", "3"), 503, 3 * time.Second},
		{"reset only", h("RateLimit-Reset", reset(20*time.Second)), 429, 20 * time.Second},
		{"reset with limit: one request back", h("RateLimit-Limit", "3600", "RateLimit-Remaining", "0", "RateLimit-Reset", reset(time.Hour)), 429, time.Second},
		{"reset in the past", h("RateLimit-Reset", reset(-time.Second)), 429, 0},
		{"reset on a 503", h("RateLimit-Reset", reset(time.Minute)), 503, 0},
		{"nothing", h(), 429, 0},
	} {
		if got := retryAfter(tc.h, tc.status, now); got != tc.want {
			t.Errorf("%s: retryAfter = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestKindOf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code   string
		status int
		want   error
	}{
		{"unauthorized", 401, cloud.ErrAuth}, {"forbidden", 403, cloud.ErrForbidden}, {"not_found", 404, cloud.ErrNotFound},
		{"rate_limit_exceeded", 429, cloud.ErrRateLimited}, {"service_error", 503, cloud.ErrUnavailable},
		{"timeout", 504, cloud.ErrUnavailable}, {"conflict", 409, cloud.ErrUnavailable}, {"locked", 423, cloud.ErrUnavailable},
		{"invalid_input", 422, cloud.ErrRejected}, {"uniqueness_error", 409, cloud.ErrRejected},
		{"resource_limit_exceeded", 403, cloud.ErrRejected},
		{"", 502, cloud.ErrUnavailable}, {"", 400, cloud.ErrRejected}, {"", 0, cloud.ErrUnavailable},
		{"some_new_code", 418, cloud.ErrRejected},
	} {
		if got := kindOf(tc.code, tc.status); got != tc.want {
			t.Errorf("kindOf(%q, %d) = %v, want %v", tc.code, tc.status, got, tc.want)
		}
	}
}

// TestRemoveAbsent checks that Remove touches nothing when Detour's rule
// is gone, even when rules like it (another description, both sources)
// are there.
func TestRemoveAbsent(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	f.AddFirewall(1, "web", 10)
	seedUserRules(f)
	f.AddRule(1, hcloudfake.Rule{Direction: "in", Protocol: "tcp", Port: new("80"), SourceIPs: []string{"0.0.0.0/0"}, Description: new("web")})
	f.AddRule(1, hcloudfake.Rule{Direction: "in", Protocol: "tcp", Port: new("80"), SourceIPs: []string{"0.0.0.0/0", "::/0"}, Description: new(mark)})
	a := newAPI(t, config(t, f))
	ctx := ctxFor(t, 5*time.Second)
	for _, r := range []cloud.Rule{
		{FromPort: 80, ToPort: 80, Description: mark},
		{FromPort: 80, ToPort: 80, IPv6: true, Description: mark},
		{FromPort: 81, ToPort: 81, Description: "web"},
	} {
		if err := a.Remove(ctx, r); err != nil {
			t.Fatalf("Remove(%v): %v", r, err)
		}
	}
	if n := count(f, http.MethodPost, "/v1/firewalls/1/actions/set_rules"); n != 0 {
		t.Errorf("%d set_rules calls, want none", n)
	}
}

// TestConcurrentAdds adds both families at once: neither rule is lost to
// the other's read-modify-write.
func TestConcurrentAdds(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	f.AddFirewall(1, "web", 10)
	f.ActionsRunFor(2)
	a := newAPI(t, config(t, f))
	ctx := ctxFor(t, 5*time.Second)
	var wg sync.WaitGroup
	for _, v6 := range []bool{false, true} {
		wg.Go(func() {
			if _, err := a.Add(ctx, cloud.Rule{FromPort: 80, ToPort: 80, IPv6: v6, Description: mark}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got, err := a.Rules(ctx); err != nil || len(got) != 2 {
		t.Errorf("Rules = %+v, %v; want both families", got, err)
	}
}

func TestToken(t *testing.T) {
	f := newFake(t)
	f.AddFirewall(1, "web")
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The process environment is never read: a token there is ignored.
	t.Setenv("HCLOUD_TOKEN", "wrong-token-from-the-process-environment")

	works := func(t *testing.T, cfg cloud.Config) {
		t.Helper()
		a := newAPI(t, cfg)
		if _, err := a.Rules(ctxFor(t, 5*time.Second)); err != nil {
			t.Fatalf("Rules: %v", err)
		}
	}
	t.Run("file", func(t *testing.T) {
		cfg := config(t, f)
		cfg.Getenv = envOf(map[string]string{"HCLOUD_TOKEN": "wrong-token-from-getenv"})
		cfg.Credentials = write("token", "\n  "+f.Token+"  \n")
		works(t, cfg)
	})
	t.Run("Getenv", func(t *testing.T) {
		works(t, config(t, f))
	})
	t.Run("Getenv nil", func(t *testing.T) {
		_, err := New(cloud.Config{FirewallID: "1", Endpoint: f.URL})
		if err == nil || !strings.Contains(err.Error(), "no Hetzner Cloud API token") {
			t.Fatalf("New: %v; want the no-token error (the process environment is not read)", err)
		}
		for _, s := range []string{`firewall_credentials = "/path/to/token"`, "HCLOUD_TOKEN", "Read & Write"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not say %q", err, s)
			}
		}
	})
	for _, tc := range []struct{ name, path, want string }{
		{"missing file", filepath.Join(dir, "nope"), "nope"},
		{"empty file", write("empty", " \n"), "is empty"},
		{"two lines", write("two", f.Token+"\nsecond\n"), "more than one line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(cloud.Config{FirewallID: "1", Credentials: tc.path})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "firewall_credentials") {
				t.Fatalf("New: %v; want an error naming the file and saying %q", err, tc.want)
			}
		})
	}
}

// TestFakeChecksRequests checks that the fake refuses what Hetzner
// refuses, so that the tests above mean something.
func TestFakeChecksRequests(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	f.AddFirewall(1, "web")
	post := func(token, body string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, f.URL+"/firewalls/1/actions/set_rules", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Error.Code
	}
	for _, tc := range []struct {
		name, token, body string
		status            int
		code              string
	}{
		{"valid", f.Token, `{"rules":[{"direction":"in","protocol":"tcp","port":"80","source_ips":["0.0.0.0/0"]}]}`, 201, ""},
		{"wrong token", "nope", `{"rules":[]}`, 401, "unauthorized"},
		{"unknown field", f.Token, `{"rules":[],"extra":1}`, 400, "json_error"},
		{"no rules", f.Token, `{}`, 422, "invalid_input"},
		{"tcp without port", f.Token, `{"rules":[{"direction":"in","protocol":"tcp","source_ips":["0.0.0.0/0"]}]}`, 422, "invalid_input"},
		{"in without source", f.Token, `{"rules":[{"direction":"in","protocol":"tcp","port":"80"}]}`, 422, "invalid_input"},
		{"icmp with port", f.Token, `{"rules":[{"direction":"in","protocol":"icmp","port":"80","source_ips":["::/0"]}]}`, 422, "invalid_input"},
		{"bad direction", f.Token, `{"rules":[{"direction":"both","protocol":"tcp","port":"80","source_ips":["::/0"]}]}`, 422, "invalid_input"},
		{"bad CIDR", f.Token, `{"rules":[{"direction":"in","protocol":"tcp","port":"80","source_ips":["everyone"]}]}`, 422, "invalid_input"},
	} {
		if status, code := post(tc.token, tc.body); status != tc.status || code != tc.code {
			t.Errorf("%s: HTTP %d %q, want %d %q", tc.name, status, code, tc.status, tc.code)
		}
	}
}

// A set_rules that fails transiently (409 conflict: someone else changed
// the firewall) is never sent again with the list read before: the whole
// read-modify-write is retried, reading the firewall afresh.
func TestConflictRereads(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	f.AddFirewall(1, "web", 10)
	f.Fail("POST", "/v1/firewalls/1/actions/set_rules", 409, "conflict", "", 1)
	a := newAPI(t, config(t, f))
	ctx := ctxFor(t, 10*time.Second)
	if _, err := a.Add(ctx, cloud.Rule{FromPort: 80, ToPort: 80, Description: mark}); err != nil {
		t.Fatal(err)
	}
	var seq []string
	for _, r := range f.Requests() {
		switch {
		case r.Method == "GET" && r.Path == "/v1/firewalls/1":
			seq = append(seq, "read")
		case r.Method == "POST" && strings.HasSuffix(r.Path, "/set_rules"):
			seq = append(seq, "set")
		}
	}
	// (The first read may be the firewall's lookup.)
	if want := []string{"read", "set", "read", "set"}; len(seq) < 4 || !slices.Equal(seq[len(seq)-4:], want) {
		t.Errorf("requests %v, want %v: the retry must read the rules again", seq, want)
	}
}
