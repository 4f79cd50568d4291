package digitalocean

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/godo"

	"github.com/detour-acme/detour/internal/firewall/cloud"
	"github.com/detour-acme/detour/internal/firewall/cloud/digitalocean/dofake"
)

const fwID = "fw-1"

// fake starts a fake with firewall fwID applied to droplet 7.
func fake(t *testing.T) *dofake.Server {
	t.Helper()
	s := dofake.New()
	t.Cleanup(s.Close)
	s.AddFirewall(fwID, "web", []int{7}, nil)
	s.AddDroplet(7, []string{"web"})
	return s
}

// config is a Config for s's firewall fwID, token from the environment.
func config(t *testing.T, s *dofake.Server) cloud.Config {
	return cloud.Config{
		Endpoint:     s.URL,
		FirewallID:   fwID,
		Getenv:       env(map[string]string{"DIGITALOCEAN_TOKEN": s.Token()}),
		Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		PollInterval: 5 * time.Millisecond,
	}
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func newAPI(t *testing.T, cfg cloud.Config) *API {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// count returns how many requests s got with method and path.
func count(s *dofake.Server, method, path string) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

var (
	http4 = cloud.Rule{FromPort: 80, ToPort: 80}
	http6 = cloud.Rule{FromPort: 80, ToPort: 80, IPv6: true}
)

// A window opens and closes leaving the user's rules exactly as they were,
// with exactly one rule in each request, in the shape DigitalOcean documents.
func TestOpenCloseLeavesUserRules(t *testing.T) {
	t.Parallel()
	s := fake(t)
	s.AddInboundRule(fwID, "tcp", "22", "10.0.0.0/8")
	s.AddInboundRule(fwID, "tcp", "443", "0.0.0.0/0", "::/0")
	before := s.InboundRules(fwID)
	a := newAPI(t, config(t, s))
	ctx := ctxFor(t, 5*time.Second)

	for _, r := range []cloud.Rule{http4, http6} {
		got, err := a.Add(ctx, cloud.Rule{FromPort: r.FromPort, ToPort: r.ToPort, IPv6: r.IPv6, Description: "detour"})
		if err != nil {
			t.Fatalf("Add %v: %v", r, err)
		}
		if got != r {
			t.Errorf("Add returned %+v, want %+v (DigitalOcean keeps no description)", got, r)
		}
	}
	rules, err := a.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []cloud.Rule{http4, http6} {
		if !slices.Contains(rules, r) {
			t.Errorf("Rules = %v, missing %v", rules, r)
		}
	}
	want := append(slices.Clone(before),
		dofake.Inbound{Protocol: "tcp", Ports: "80", Addresses: []string{"0.0.0.0/0"}},
		dofake.Inbound{Protocol: "tcp", Ports: "80", Addresses: []string{"::/0"}})
	if got := s.InboundRules(fwID); !equalRules(got, want) {
		t.Errorf("open: rules = %v, want %v", got, want)
	}

	for _, r := range []cloud.Rule{http4, http6} {
		if err := a.Remove(ctx, r); err != nil {
			t.Fatalf("Remove %v: %v", r, err)
		}
	}
	if got := s.InboundRules(fwID); !equalRules(got, before) {
		t.Errorf("closed: rules = %v, want the user's %v", got, before)
	}

	var bodies []string
	for _, r := range s.Requests() {
		if r.Path == "/v2/firewalls/"+fwID+"/rules" {
			bodies = append(bodies, r.Method+" "+canonJSON(t, r.Body))
		}
	}
	one := func(src string) string {
		return `{"inbound_rules":[{"ports":"80","protocol":"tcp","sources":{"addresses":["` + src + `"]}}],"outbound_rules":null}`
	}
	wantBodies := []string{"POST " + one("0.0.0.0/0"), "POST " + one("::/0"), "DELETE " + one("0.0.0.0/0"), "DELETE " + one("::/0")}
	if !slices.Equal(bodies, wantBodies) {
		t.Errorf("rule requests:\n got %q\nwant %q", bodies, wantBodies)
	}
}

func canonJSON(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("body %q: %v", s, err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func equalRules(a, b []dofake.Inbound) bool {
	return slices.EqualFunc(a, b, func(x, y dofake.Inbound) bool {
		return x.Protocol == y.Protocol && x.Ports == y.Ports && slices.Equal(x.Addresses, y.Addresses)
	})
}

// Rules keeps TCP rules from every address of a family, one per family,
// reading ranges and "all"/"0".
func TestRules(t *testing.T) {
	t.Parallel()
	s := fake(t)
	s.AddInboundRule(fwID, "tcp", "80", "0.0.0.0/0")
	s.AddInboundRule(fwID, "tcp", "8000-9000", "::/0")
	s.AddInboundRule(fwID, "tcp", "all", "0.0.0.0/0", "::/0")
	s.AddInboundRule(fwID, "tcp", "0", "::/0")
	s.AddInboundRule(fwID, "udp", "53", "0.0.0.0/0", "::/0")           // not TCP
	s.AddInboundRule(fwID, "tcp", "22", "10.0.0.0/8", "2001:db8::/32") // narrow sources
	s.AddInboundRule(fwID, "tcp", "443", "192.0.2.0/24", "::/0")       // one narrow, one every address
	s.AddInboundRule(fwID, "icmp", "0", "0.0.0.0/0")
	a := newAPI(t, config(t, s))
	got, err := a.Rules(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := []cloud.Rule{
		{FromPort: 80, ToPort: 80},
		{FromPort: 8000, ToPort: 9000, IPv6: true},
		{FromPort: 1, ToPort: 65535},
		{FromPort: 1, ToPort: 65535, IPv6: true},
		{FromPort: 1, ToPort: 65535, IPv6: true},
		{FromPort: 443, ToPort: 443, IPv6: true},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Rules =\n %v\nwant\n %v", got, want)
	}
}

// rulesOf on what the fake cannot hold: deny rules, odd port fields.
func TestRulesOf(t *testing.T) {
	t.Parallel()
	all := &godo.Sources{Addresses: []string{"0.0.0.0/0"}}
	fw := &godo.Firewall{InboundRules: []godo.InboundRule{
		{Protocol: "tcp", PortRange: "80", Sources: all, Action: godo.FirewallRuleActionDeny},
		{Protocol: "tcp", PortRange: "81", Sources: all, Action: godo.FirewallRuleActionAllow},
		{Protocol: "TCP", PortRange: "82", Sources: all},
		{Protocol: "tcp", PortRange: "", Sources: all},
		{Protocol: "tcp", PortRange: "90-85", Sources: all},
		{Protocol: "tcp", PortRange: "70000", Sources: all},
		{Protocol: "tcp", PortRange: "83", Sources: nil},
		{Protocol: "tcp", PortRange: "84", Sources: &godo.Sources{Tags: []string{"web"}}},
	}}
	want := []cloud.Rule{{FromPort: 81, ToPort: 81}, {FromPort: 82, ToPort: 82}}
	if got := rulesOf(fw); !slices.Equal(got, want) {
		t.Errorf("rulesOf = %v, want %v", got, want)
	}
}

func TestDiscovery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(s *dofake.Server)
		want  string
	}{
		{"by droplet id", func(s *dofake.Server) {
			s.AddFirewall("fw-other", "other", []int{8}, []string{"db"})
			s.AddFirewall("fw-mine", "mine", []int{8, 7}, nil)
		}, "fw-mine"},
		{"by tag", func(s *dofake.Server) {
			s.AddFirewall("fw-other", "other", []int{8}, []string{"db"})
			s.AddFirewall("fw-tagged", "tagged", nil, []string{"x", "web"})
		}, "fw-tagged"},
		{"lowest id of several", func(s *dofake.Server) {
			s.AddFirewall("fw-c", "c", []int{7}, nil)
			s.AddFirewall("fw-a", "a", nil, []string{"web"})
			s.AddFirewall("fw-b", "b", []int{7}, []string{"web"})
		}, "fw-a"},
		{"on the second page", func(s *dofake.Server) {
			for i := range 230 {
				s.AddFirewall(fmt.Sprintf("fw-x%03d", i), "x", []int{8}, []string{"db"})
			}
			s.AddFirewall("fw-z", "z", []int{7}, nil)
		}, "fw-z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := dofake.New()
			t.Cleanup(s.Close)
			s.AddDroplet(7, []string{"web"})
			tt.setup(s)
			cfg := config(t, s)
			cfg.FirewallID, cfg.Instance = "", "7"
			a := newAPI(t, cfg)
			ctx := ctxFor(t, 5*time.Second)
			got, err := a.Target(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tt.want {
				t.Errorf("Target = %+v, want %s", got, tt.want)
			}
			n := len(s.Requests())
			if _, err := a.Target(ctx); err != nil || len(s.Requests()) != n {
				t.Errorf("second Target: err %v, %d more requests; want it cached", err, len(s.Requests())-n)
			}
		})
	}

	t.Run("none applies", func(t *testing.T) {
		t.Parallel()
		s := dofake.New()
		t.Cleanup(s.Close)
		s.AddDroplet(7, []string{"web"})
		s.AddFirewall("fw-other", "other", []int{8}, []string{"db"})
		cfg := config(t, s)
		cfg.FirewallID, cfg.Instance = "", "7"
		_, err := newAPI(t, cfg).Target(ctxFor(t, 5*time.Second))
		if !errors.Is(err, cloud.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
		for _, s := range []string{"droplet 7", "filters nothing", "not needed", `firewall = "digitalocean"`, "attach a firewall"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("err = %q, want it to say %q", err, s)
			}
		}
	})

	t.Run("droplet not found", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		cfg := config(t, s)
		cfg.FirewallID, cfg.Instance = "", "99"
		_, err := newAPI(t, cfg).Target(ctxFor(t, 5*time.Second))
		if !errors.Is(err, cloud.ErrNotFound) || !strings.Contains(err.Error(), "check firewall_instance") {
			t.Fatalf("err = %v, want ErrNotFound saying to check firewall_instance", err)
		}
	})

	t.Run("concurrent callers resolve once", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		cfg := config(t, s)
		cfg.FirewallID, cfg.Instance = "", "7"
		a := newAPI(t, cfg)
		ctx := ctxFor(t, 5*time.Second)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if got, err := a.Target(ctx); err != nil || got.ID != fwID {
					t.Errorf("Target = %+v, %v", got, err)
				}
			})
		}
		wg.Wait()
		if n := count(s, "GET", "/v2/droplets/7"); n != 1 {
			t.Errorf("droplet fetched %d times, want 1", n)
		}
	})
}

// Add returns only once the firewall reports the change applied.
func TestAddWaitsUntilApplied(t *testing.T) {
	t.Parallel()
	s := fake(t)
	s.ApplyAfter(3)
	a := newAPI(t, config(t, s))
	if _, err := a.Add(ctxFor(t, 5*time.Second), http4); err != nil {
		t.Fatal(err)
	}
	var after []string
	posted := false
	for _, r := range s.Requests() {
		if r.Method == "POST" {
			posted = true
		} else if posted {
			after = append(after, r.Method+" "+r.Path)
		}
	}
	want := slices.Repeat([]string{"GET /v2/firewalls/" + fwID}, 4) // 3 waiting, 1 succeeded
	if !slices.Equal(after, want) {
		t.Errorf("after the POST: %q, want %q", after, want)
	}

	t.Run("bounded by ctx", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		s.ApplyAfter(1 << 20)
		a := newAPI(t, config(t, s))
		_, err := a.Add(ctxFor(t, 100*time.Millisecond), http4)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "waiting for firewall "+fwID) {
			t.Fatalf("err = %v, want the deadline while waiting", err)
		}
	})

	t.Run("failed", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		s.ApplyAfter(1)
		s.ApplyFails(true)
		a := newAPI(t, config(t, s))
		_, err := a.Add(ctxFor(t, 5*time.Second), http4)
		var ce *cloud.Error
		if !errors.Is(err, cloud.ErrRejected) || !errors.As(err, &ce) || !strings.Contains(ce.Message, "firewall "+fwID) {
			t.Fatalf("err = %v, want an ErrRejected *cloud.Error naming the firewall", err)
		}
	})
}

// Remove waits too.
func TestRemoveWaitsUntilApplied(t *testing.T) {
	t.Parallel()
	s := fake(t)
	s.AddInboundRule(fwID, "tcp", "80", "0.0.0.0/0")
	s.ApplyAfter(2)
	a := newAPI(t, config(t, s))
	if err := a.Remove(ctxFor(t, 5*time.Second), http4); err != nil {
		t.Fatal(err)
	}
	// Target, the check that the rule is there, 2 waiting, 1 succeeded.
	if n := count(s, "GET", "/v2/firewalls/"+fwID); n != 5 {
		t.Errorf("%d GETs of the firewall, want 5", n)
	}
	if got := s.InboundRules(fwID); len(got) != 0 {
		t.Errorf("rules = %v, want none", got)
	}
}

func TestRemoveAbsent(t *testing.T) {
	t.Parallel()
	t.Run("absent", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		s.AddInboundRule(fwID, "tcp", "80", "10.0.0.0/8") // not the rule: a narrow source
		a := newAPI(t, config(t, s))
		if err := a.Remove(ctxFor(t, 5*time.Second), http4); err != nil {
			t.Fatal(err)
		}
		if n := count(s, "DELETE", "/v2/firewalls/"+fwID+"/rules"); n != 0 {
			t.Errorf("%d DELETEs for a rule that is not there", n)
		}
		if got := s.InboundRules(fwID); len(got) != 1 {
			t.Errorf("rules = %v, want the user's rule kept", got)
		}
	})

	t.Run("gone meanwhile, 404", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		s.AddInboundRule(fwID, "tcp", "80", "0.0.0.0/0")
		cfg := config(t, s)
		// The DELETE is made (the rule goes) but answered 404, as if
		// someone else had removed the rule first.
		cfg.HTTPClient = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := http.DefaultTransport.RoundTrip(r)
			if err != nil || r.Method != http.MethodDelete {
				return resp, err
			}
			resp.Body.Close()
			body := `{"id":"not_found","message":"The resource you were accessing could not be found."}`
			return &http.Response{StatusCode: 404, Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
		})}
		if err := newAPI(t, cfg).Remove(ctxFor(t, 5*time.Second), http4); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	})

	t.Run("404 but still listed", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		s.AddInboundRule(fwID, "tcp", "80", "0.0.0.0/0")
		s.Fail("DELETE", "/v2/firewalls/"+fwID+"/rules", 404, "", 1)
		err := newAPI(t, config(t, s)).Remove(ctxFor(t, 5*time.Second), http4)
		if !errors.Is(err, cloud.ErrNotFound) || !strings.Contains(err.Error(), "still lists") {
			t.Fatalf("err = %v, want an error saying the rule is still listed", err)
		}
	})

	t.Run("firewall gone", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		a := newAPI(t, config(t, s))
		ctx := ctxFor(t, 5*time.Second)
		if _, err := a.Target(ctx); err != nil {
			t.Fatal(err)
		}
		s.Fail("GET", "/v2/firewalls/"+fwID, 404, "", 0)
		if err := a.Remove(ctx, http4); !errors.Is(err, cloud.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestErrors(t *testing.T) {
	t.Parallel()
	asErr := func(t *testing.T, err error) *cloud.Error {
		t.Helper()
		var ce *cloud.Error
		if !errors.As(err, &ce) {
			t.Fatalf("err = %v (%T), want a *cloud.Error", err, err)
		}
		if ce.Provider != Name || ce.Op == "" {
			t.Errorf("Provider %q, Op %q", ce.Provider, ce.Op)
		}
		return ce
	}

	t.Run("401", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		cfg := config(t, s)
		cfg.Getenv = env(map[string]string{"DIGITALOCEAN_TOKEN": "wrong"})
		_, err := newAPI(t, cfg).Rules(ctxFor(t, 5*time.Second))
		ce := asErr(t, err)
		if !errors.Is(err, cloud.ErrAuth) || ce.Status != 401 || ce.Code != "unauthorized" ||
			ce.Message != "Unable to authenticate you." || ce.Err == nil {
			t.Errorf("err = %#v", ce)
		}
		if !strings.Contains(err.Error(), "check it") {
			t.Errorf("err = %q, want it to say to check the token", err)
		}
		if n := len(s.Requests()); n != 1 {
			t.Errorf("%d requests, want 1: a 401 is not retried", n)
		}
	})

	t.Run("403", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		s.Fail("POST", "/v2/firewalls/", 403, "", 0)
		_, err := newAPI(t, config(t, s)).Add(ctxFor(t, 5*time.Second), http4)
		ce := asErr(t, err)
		if !errors.Is(err, cloud.ErrForbidden) || ce.Status != 403 || ce.Code != "forbidden" {
			t.Errorf("err = %#v", ce)
		}
		for _, s := range []string{"firewall:read", "firewall:update", "droplet:read", "adding rule tcp/80 from 0.0.0.0/0 to firewall " + fwID} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("err = %q, want it to say %q", err, s)
			}
		}
	})

	t.Run("404 firewall", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		cfg := config(t, s)
		cfg.FirewallID = "fw-nope"
		_, err := newAPI(t, cfg).Target(ctxFor(t, 5*time.Second))
		ce := asErr(t, err)
		if !errors.Is(err, cloud.ErrNotFound) || ce.Code != "not_found" {
			t.Errorf("err = %#v", ce)
		}
		for _, s := range []string{"firewall fw-nope not found", "check firewall_id", "doctl compute firewall list"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("err = %q, want it to say %q", err, s)
			}
		}
	})

	t.Run("429 retried after Retry-After", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		s.Fail("GET", "/v2/firewalls/", 429, "2", 1)
		start := time.Now()
		if _, err := newAPI(t, config(t, s)).Rules(ctxFor(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 2*time.Second { // not the 1 s backoff
			t.Errorf("retried after %v, want the 2 s asked", d)
		}
		if n := count(s, "GET", "/v2/firewalls/"+fwID); n != 3 { // 429, Target, Rules
			t.Errorf("%d GETs, want 3", n)
		}
	})

	t.Run("429 RateLimit-Reset", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		s.Fail("GET", "/v2/firewalls/", 429, "", 0)
		// The wait asked (about 2 s) is past the deadline: not waited.
		_, err := newAPI(t, config(t, s)).Rules(ctxFor(t, 500*time.Millisecond))
		ce := asErr(t, err)
		if !errors.Is(err, cloud.ErrRateLimited) || ce.RetryAfter <= 0 || ce.RetryAfter > 3*time.Second {
			t.Errorf("err = %v, RetryAfter %v; want ErrRateLimited with RateLimit-Reset's wait", err, ce.RetryAfter)
		}
		if n := len(s.Requests()); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
	})

	t.Run("5xx retried", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		s.Fail("POST", "/v2/firewalls/", 502, "", 1)
		if _, err := newAPI(t, config(t, s)).Add(ctxFor(t, 5*time.Second), http4); err != nil {
			t.Fatal(err)
		}
		if n := count(s, "POST", "/v2/firewalls/"+fwID+"/rules"); n != 2 {
			t.Errorf("%d POSTs, want 2", n)
		}
		if got := s.InboundRules(fwID); len(got) != 1 {
			t.Errorf("rules = %v, want the one added", got)
		}
	})

	t.Run("5xx persistent", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		s.Fail("GET", "/v2/firewalls/", 503, "1", 0)
		_, err := newAPI(t, config(t, s)).Target(ctxFor(t, 8*time.Second))
		ce := asErr(t, err)
		if !errors.Is(err, cloud.ErrUnavailable) || ce.Status != 503 || ce.Code != "server_error" ||
			!strings.Contains(err.Error(), "Server was unable to give you a response.") {
			t.Errorf("err = %v", err)
		}
		if n := len(s.Requests()); n != 4 {
			t.Errorf("%d requests, want 4 attempts", n)
		}
	})

	t.Run("no response", func(t *testing.T) {
		t.Parallel()
		s := fake(t)
		cfg := config(t, s)
		s.Close()
		_, err := newAPI(t, cfg).Target(ctxFor(t, 300*time.Millisecond))
		ce := asErr(t, err)
		if !errors.Is(err, cloud.ErrUnavailable) || ce.Status != 0 {
			t.Errorf("err = %#v", ce)
		}
	})
}

func TestToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s := fake(t)
	s.SetToken("file-token")
	works := func(t *testing.T, cfg cloud.Config) {
		t.Helper()
		cfg.Endpoint, cfg.FirewallID, cfg.PollInterval = s.URL, fwID, time.Millisecond
		if _, err := newAPI(t, cfg).Target(ctxFor(t, 5*time.Second)); err != nil {
			t.Fatalf("Target: %v", err)
		}
	}
	t.Run("file", func(t *testing.T) {
		works(t, cloud.Config{Credentials: write("ok", "  file-token \n"),
			Getenv: env(map[string]string{"DIGITALOCEAN_TOKEN": "env-token"})})
	})
	t.Run("DIGITALOCEAN_TOKEN", func(t *testing.T) {
		works(t, cloud.Config{Getenv: env(map[string]string{"DIGITALOCEAN_TOKEN": "file-token", "DIGITALOCEAN_ACCESS_TOKEN": "x"})})
	})
	t.Run("DIGITALOCEAN_ACCESS_TOKEN", func(t *testing.T) {
		works(t, cloud.Config{Getenv: env(map[string]string{"DIGITALOCEAN_ACCESS_TOKEN": "file-token"})})
	})

	bad := []struct {
		name string
		path string
		want []string
	}{
		{"missing file", filepath.Join(dir, "nope"), []string{filepath.Join(dir, "nope"), "firewall_credentials", "on one line", "firewall:update"}},
		{"empty file", write("empty", " \n"), []string{filepath.Join(dir, "empty"), "is empty", "firewall:update"}},
		{"two lines", write("two", "a\nb\n"), []string{filepath.Join(dir, "two"), "on one line"}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(cloud.Config{Credentials: tt.path, FirewallID: fwID})
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("err = %q, want it to say %q", err, s)
				}
			}
		})
	}
}

// A library never reads the environment itself: with Getenv nil, the
// real DIGITALOCEAN_TOKEN is ignored and the missing token is reported.
func TestTokenIgnoresRealEnvironment(t *testing.T) {
	t.Setenv("DIGITALOCEAN_TOKEN", "real-env-token")
	t.Setenv("DIGITALOCEAN_ACCESS_TOKEN", "real-env-token")
	_, err := New(cloud.Config{FirewallID: fwID})
	if err == nil {
		t.Fatal("New read the process environment")
	}
	for _, s := range []string{`firewall_credentials = "/path/to/token-file"`, "DIGITALOCEAN_TOKEN", "firewall:read", "firewall:update"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("err = %q, want it to say %q", err, s)
		}
	}
}

func TestNewNeedsFirewall(t *testing.T) {
	t.Parallel()
	tok := env(map[string]string{"DIGITALOCEAN_TOKEN": "t"})
	for _, tt := range []struct {
		cfg  cloud.Config
		want string
	}{
		{cloud.Config{Getenv: tok}, "set firewall_id"},
		{cloud.Config{Getenv: tok, Instance: "web-1"}, "not a droplet ID"},
		{cloud.Config{Getenv: tok, FirewallID: "x", Endpoint: "ftp://x"}, "not an http(s) URL"},
		{cloud.Config{Getenv: tok, FirewallID: "x", Endpoint: "https://proxy.example/do/"}, "has a path"},
	} {
		if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%+v) = %v, want %q", tt.cfg, err, tt.want)
		}
	}
}

// The token goes to the API's host only, not to where a redirect leads.
func TestTokenNotSentAcrossRedirect(t *testing.T) {
	t.Parallel()
	var leaked sync.Map
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Store("auth", r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"firewall":{"id":"fw-1","status":"succeeded"}}`)
	}))
	defer other.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t" {
			t.Errorf("the API got Authorization %q", r.Header.Get("Authorization"))
		}
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusFound)
	}))
	defer api.Close()
	a := newAPI(t, cloud.Config{Endpoint: api.URL, FirewallID: fwID, Getenv: env(map[string]string{"DIGITALOCEAN_TOKEN": "t"})})
	if _, err := a.Target(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if v, _ := leaked.Load("auth"); v != "" {
		t.Errorf("the redirect's host got Authorization %q", v)
	}
}

// The fake refuses what DigitalOcean refuses, so godo's requests passing
// it (the tests above) means they have the documented shape.
func TestFakeStrict(t *testing.T) {
	t.Parallel()
	s := fake(t)
	rules := s.URL + "/v2/firewalls/" + fwID + "/rules"
	good := `{"inbound_rules":[{"protocol":"tcp","ports":"80","sources":{"addresses":["0.0.0.0/0"]}}]}`
	for _, tt := range []struct {
		name, method, url, ctype, token, body string
		status                                int
		id                                    string
	}{
		{"no token", "GET", s.URL + "/v2/firewalls", "", "", "", 401, "unauthorized"},
		{"wrong token", "GET", s.URL + "/v2/firewalls", "", "nope", "", 401, "unauthorized"},
		{"unknown field", "POST", rules, "application/json", s.Token(), `{"inbound_rules":[{"protocol":"tcp","ports":"80","source":{}}]}`, 400, "bad_request"},
		{"unknown top field", "DELETE", rules, "application/json", s.Token(), `{"rules":[]}`, 400, "bad_request"},
		{"no content type", "POST", rules, "", s.Token(), good, 400, "bad_request"},
		{"bad ports", "POST", rules, "application/json", s.Token(), strings.Replace(good, `"80"`, `"80-"`, 1), 422, "unprocessable_entity"},
		{"no sources", "POST", rules, "application/json", s.Token(), `{"inbound_rules":[{"protocol":"tcp","ports":"80"}]}`, 422, "unprocessable_entity"},
		{"unknown firewall", "GET", s.URL + "/v2/firewalls/nope", "", s.Token(), "", 404, "not_found"},
		{"unknown droplet", "GET", s.URL + "/v2/droplets/99", "", s.Token(), "", 404, "not_found"},
		{"good", "POST", rules, "application/json; charset=utf-8", s.Token(), good, 204, ""},
	} {
		req, _ := http.NewRequest(tt.method, tt.url, strings.NewReader(tt.body))
		if tt.ctype != "" {
			req.Header.Set("Content-Type", tt.ctype)
		}
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ ID, Message string }
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		json.Unmarshal(b, &e)
		if resp.StatusCode != tt.status || e.ID != tt.id {
			t.Errorf("%s: %d %s, want %d id %q", tt.name, resp.StatusCode, b, tt.status, tt.id)
		}
		if tt.status == 401 && e.Message != "Unable to authenticate you." {
			t.Errorf("%s: message %q", tt.name, e.Message)
		}
	}
	if got := s.InboundRules(fwID); len(got) != 1 {
		t.Errorf("rules = %v, want only the good one added", got)
	}
}

// Several windows at once on one API, under -race.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	s := fake(t)
	s.ApplyAfter(1)
	cfg := config(t, s)
	cfg.FirewallID, cfg.Instance = "", "7"
	a := newAPI(t, cfg)
	ctx := ctxFor(t, 5*time.Second)
	var wg sync.WaitGroup
	for port := 8000; port < 8006; port++ {
		wg.Go(func() {
			r := cloud.Rule{FromPort: port, ToPort: port, IPv6: port%2 == 0}
			if _, err := a.Add(ctx, r); err != nil {
				t.Error(err)
				return
			}
			if err := a.Remove(ctx, r); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := s.InboundRules(fwID); len(got) != 0 {
		t.Errorf("rules = %v, want none left", got)
	}
}
