package firewall

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall/cloud"
	"github.com/detour-acme/detour/internal/firewall/cloud/awssg/ec2fake"
	"github.com/detour-acme/detour/internal/firewall/cloud/digitalocean/dofake"
	"github.com/detour-acme/detour/internal/firewall/cloud/hetzner/hcloudfake"
	"github.com/detour-acme/detour/internal/store"
)

// The cloud backends through the Keeper, each over its provider's SDK
// and a local fake of the provider's HTTP API (the fakes are not the
// providers): what a renewal does to the firewall, with several holders,
// after a kill, and when the API fails.

// cloudHarness starts one provider's fake with the user's own rules.
type cloudHarness struct {
	name string
	// start returns the window settings for a new fake, a function
	// listing the firewall's rules as the provider holds them, and one
	// making the calls that add a rule fail with an HTTP status.
	start func(t *testing.T, worldOpen80 bool) (WindowConfig, func() []string, func(status int))
}

func writeToken(t *testing.T, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func cloudHarnesses() []*cloudHarness {
	return []*cloudHarness{
		{name: NameDigitalOcean,
			start: func(t *testing.T, open80 bool) (WindowConfig, func() []string, func(int)) {
				do := dofake.New()
				t.Cleanup(do.Close)
				do.AddFirewall("fw-1", "web", []int{7}, nil)
				do.AddInboundRule("fw-1", "tcp", "22", "10.0.0.0/8")
				do.AddInboundRule("fw-1", "tcp", "443", "0.0.0.0/0", "::/0")
				if open80 {
					do.AddInboundRule("fw-1", "tcp", "80", "0.0.0.0/0", "::/0")
				}
				cfg := cloud.Config{FirewallID: "fw-1", Endpoint: do.URL, Credentials: writeToken(t, do.Token()), PollInterval: 10 * time.Millisecond}
				return WindowConfig{Backends: []string{NameDigitalOcean}, Cloud: cfg}, func() []string {
					var out []string
					for _, r := range do.InboundRules("fw-1") {
						out = append(out, fmt.Sprintf("%s/%s %v", r.Protocol, r.Ports, r.Addresses))
					}
					return out
				}, func(status int) { do.Fail("POST", "/v2/firewalls/fw-1/rules", status, "", 10) }
			}},
		{name: NameAWSSG,
			start: func(t *testing.T, open80 bool) (WindowConfig, func() []string, func(int)) {
				aws := ec2fake.New()
				t.Cleanup(aws.Close)
				aws.AddGroup("sg-0a1", "web")
				aws.AddInstance("i-0b2", "sg-0a1")
				aws.AddIngress("sg-0a1", "tcp", 22, 22, "10.0.0.0/8", "ssh from the office")
				aws.AddIngress("sg-0a1", "tcp", 443, 443, "0.0.0.0/0", "")
				aws.AddIngress("sg-0a1", "tcp", 443, 443, "::/0", "")
				if open80 {
					aws.AddIngress("sg-0a1", "tcp", 80, 80, "0.0.0.0/0", "")
					aws.AddIngress("sg-0a1", "tcp", 80, 80, "::/0", "")
				}
				cfg := cloud.Config{Instance: "i-0b2", Region: "eu-west-3", Endpoint: aws.URL,
					Credentials: aws.WriteCredentials(t.TempDir()), PollInterval: 10 * time.Millisecond}
				return WindowConfig{Backends: []string{NameAWSSG}, Cloud: cfg}, func() []string {
					var out []string
					for _, r := range aws.Ingress("sg-0a1") {
						out = append(out, fmt.Sprintf("%s %s %d-%d %s %q", r.ID, r.Protocol, r.FromPort, r.ToPort, r.CIDR, r.Description))
					}
					return out
				}, func(status int) { aws.Fail("AuthorizeSecurityGroupIngress", status, awsCode[status], "", 10) }
			}},
		{name: NameHetzner,
			start: func(t *testing.T, open80 bool) (WindowConfig, func() []string, func(int)) {
				hz := hcloudfake.New()
				t.Cleanup(hz.Close)
				hz.AddFirewall(1, "web", 42)
				p22, p443, p80, desc := "22", "443", "80", "ssh from the office"
				hz.AddRule(1, hcloudfake.Rule{Direction: "in", Protocol: "tcp", Port: &p22, SourceIPs: []string{"10.0.0.0/8"}, Description: &desc})
				hz.AddRule(1, hcloudfake.Rule{Direction: "in", Protocol: "tcp", Port: &p443, SourceIPs: []string{"0.0.0.0/0", "::/0"}})
				if open80 {
					hz.AddRule(1, hcloudfake.Rule{Direction: "in", Protocol: "tcp", Port: &p80, SourceIPs: []string{"0.0.0.0/0", "::/0"}})
				}
				cfg := cloud.Config{Instance: "42", Endpoint: hz.URL, Credentials: writeToken(t, hz.Token), PollInterval: 10 * time.Millisecond}
				return WindowConfig{Backends: []string{NameHetzner}, Cloud: cfg}, func() []string {
					var out []string
					for _, r := range hz.Rules(1) {
						d := ""
						if r.Description != nil {
							d = *r.Description
						}
						out = append(out, fmt.Sprintf("%s %s/%s %v %q", r.Direction, r.Protocol, deref(r.Port), r.SourceIPs, d))
					}
					return out
				}, func(status int) { hz.Fail("POST", "/v1/firewalls/1/actions/set_rules", status, "", "", 10) }
			}},
	}
}

// awsCode is the EC2 error code the fake answers a refused call with.
var awsCode = map[int]string{401: "AuthFailure", 403: "UnauthorizedOperation"}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// cloudKeeper is a Keeper on fw's cloud backend for process pid (alive
// tells whether another pid still runs), sharing st.
func cloudKeeper(t *testing.T, fw WindowConfig, st *store.FS, pid int, now func() time.Time, alive func(int) bool) *Keeper {
	t.Helper()
	b, err := New(fw.Backends[0], Options{Cloud: fw.Cloud, Store: st, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewKeeper(KeeperOptions{Backend: b, Store: st, Locker: st, Now: now, PID: pid, Alive: alive})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Two certificates validating at once share the rule; the first to finish
// does not remove it under the second; the last one removes exactly it.
func TestCloudTwoHolders(t *testing.T) {
	for _, h := range cloudHarnesses() {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			fw, rules, _ := h.start(t, false)
			user := rules()
			st, _ := store.NewFS(t.TempDir(), store.FSOptions{})
			alive := func(int) bool { return true }
			k1 := cloudKeeper(t, fw, st, 1001, time.Now, alive)
			k2 := cloudKeeper(t, fw, st, 1002, time.Now, alive)
			ctx := context.Background()
			w := Window{Port: 80, Family: Inet, Timeout: time.Minute, Identifier: "one.example"}
			if err := k1.Check(ctx, w); err != nil {
				t.Fatal(err)
			}
			l1, err := k1.Open(ctx, w)
			if err != nil {
				t.Fatal(err)
			}
			opened := rules()
			if len(opened) != len(user)+2 {
				t.Fatalf("rules with one holder: %q", opened)
			}
			w.Identifier = "two.example"
			l2, err := k2.Open(ctx, w)
			if err != nil {
				t.Fatal(err)
			}
			if got := rules(); !slices.Equal(got, opened) {
				t.Errorf("the second holder changed the rules: %q, want %q", got, opened)
			}
			if err := k1.Close(ctx, l1); err != nil {
				t.Fatal(err)
			}
			if got := rules(); !slices.Equal(got, opened) {
				t.Errorf("the first holder's close removed the second's rule: %q", got)
			}
			holes, leases, err := k2.Status(ctx)
			if err != nil || len(holes) != 2 || len(leases) != 1 {
				t.Errorf("status: %v %v %v", holes, leases, err)
			}
			if err := k2.Close(ctx, l2); err != nil {
				t.Fatal(err)
			}
			if got := rules(); !slices.Equal(got, user) {
				t.Errorf("after both closed: %q, want the user's %q", got, user)
			}
		})
	}
}

// A holder killed with its window open leaves the rule; the next run's
// sweep removes it once the window's timeout has passed, not before.
func TestCloudKilledHolderSwept(t *testing.T) {
	for _, h := range cloudHarnesses() {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			fw, rules, _ := h.start(t, false)
			user := rules()
			st, _ := store.NewFS(t.TempDir(), store.FSOptions{})
			now := time.Now()
			clock := func() time.Time { return now }
			ctx := context.Background()
			dead := cloudKeeper(t, fw, st, 1001, clock, func(int) bool { return true })
			if _, err := dead.Open(ctx, Window{Port: 80, Family: Inet, Timeout: time.Minute}); err != nil {
				t.Fatal(err)
			}
			next := cloudKeeper(t, fw, st, 1002, clock, func(pid int) bool { return pid != 1001 })
			if err := next.SweepStale(ctx); err != nil {
				t.Fatal(err)
			}
			if len(rules()) != len(user)+2 {
				t.Fatalf("swept before the timeout: %q", rules())
			}
			now = now.Add(2 * time.Minute)
			later := cloudKeeper(t, fw, st, 1003, clock, func(pid int) bool { return pid != 1001 })
			if err := later.SweepStale(ctx); err != nil {
				t.Fatal(err)
			}
			if got := rules(); !slices.Equal(got, user) {
				t.Errorf("after the sweep: %q, want the user's %q", got, user)
			}
		})
	}
}

// A rule of the user's already accepting the port: the window adds nothing
// and removes nothing.
func TestCloudRulePresentUntouched(t *testing.T) {
	for _, h := range cloudHarnesses() {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			fw, rules, _ := h.start(t, true)
			user := rules()
			st, _ := store.NewFS(t.TempDir(), store.FSOptions{})
			k := cloudKeeper(t, fw, st, 1001, time.Now, func(int) bool { return true })
			ctx := context.Background()
			l, err := k.Open(ctx, Window{Port: 80, Family: Inet, Timeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if got := rules(); !slices.Equal(got, user) {
				t.Errorf("open changed the rules: %q", got)
			}
			if err := k.Close(ctx, l); err != nil {
				t.Fatal(err)
			}
			if err := k.CloseAll(ctx); err != nil {
				t.Fatal(err)
			}
			if got := rules(); !slices.Equal(got, user) {
				t.Errorf("close removed the user's rule: %q, want %q", got, user)
			}
		})
	}
}

// API errors reach the user with the sentinel and the provider's advice,
// and leave no journal entry to sweep when the provider refused.
func TestCloudAPIErrors(t *testing.T) {
	for _, h := range cloudHarnesses() {
		for _, tc := range []struct {
			status   int
			sentinel error
		}{{401, ErrPermission}, {403, ErrPermission}} {
			t.Run(fmt.Sprintf("%s/%d", h.name, tc.status), func(t *testing.T) {
				t.Parallel()
				fw, rules, failAdd := h.start(t, false)
				user := rules()
				st, _ := store.NewFS(t.TempDir(), store.FSOptions{})
				k := cloudKeeper(t, fw, st, 1001, time.Now, func(int) bool { return true })
				failAdd(tc.status)
				_, err := k.Open(context.Background(), Window{Port: 80, Family: IPv4, Timeout: time.Minute})
				if !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), fmt.Sprint(tc.status)) {
					t.Errorf("Open: %v; want %v with the status", err, tc.sentinel)
				}
				if keys, _ := st.List(context.Background(), journalPrefix); len(keys) != 0 {
					t.Errorf("journal left after a refusal: %v", keys)
				}
				if got := rules(); !slices.Equal(got, user) {
					t.Errorf("rules changed: %q", got)
				}
			})
		}
	}
	// A firewall that does not exist: the check before anything is
	// ordered says so.
	for _, h := range cloudHarnesses() {
		t.Run(h.name+"/missing firewall", func(t *testing.T) {
			fw, _, _ := h.start(t, false)
			fw.Cloud.FirewallID, fw.Cloud.Instance = "999", ""
			if h.name == NameAWSSG {
				fw.Cloud.FirewallID = "sg-999"
			}
			st, _ := store.NewFS(t.TempDir(), store.FSOptions{})
			k := cloudKeeper(t, fw, st, 1001, time.Now, func(int) bool { return true })
			err := k.Check(context.Background(), Window{Port: 80, Family: Inet, Timeout: time.Minute})
			if !errors.Is(err, ErrUnsupported) || !errors.Is(err, cloud.ErrNotFound) {
				t.Errorf("Check: %v; want the firewall not found", err)
			}
		})
	}
}

// Leases on two firewalls of one provider do not count for each other:
// closing the window on the first removes its rule although a window on
// the second is still open.
func TestCloudLeasesPerFirewall(t *testing.T) {
	do := dofake.New()
	t.Cleanup(do.Close)
	do.AddFirewall("fw-1", "web", []int{7}, nil)
	do.AddFirewall("fw-2", "mail", []int{8}, nil)
	token := writeToken(t, do.Token())
	st, _ := store.NewFS(t.TempDir(), store.FSOptions{})
	ctx := context.Background()
	keeper := func(id string, pid int) *Keeper {
		fw := WindowConfig{Backends: []string{NameDigitalOcean},
			Cloud: cloud.Config{FirewallID: id, Endpoint: do.URL, Credentials: token, PollInterval: 10 * time.Millisecond}}
		return cloudKeeper(t, fw, st, pid, time.Now, func(int) bool { return true })
	}
	k1, k2 := keeper("fw-1", 1001), keeper("fw-2", 1002)
	w := Window{Port: 80, Family: IPv4, Timeout: time.Minute}
	l1, err := k1.Open(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k2.Open(ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := k1.Close(ctx, l1); err != nil {
		t.Fatal(err)
	}
	if n := len(do.InboundRules("fw-1")); n != 0 {
		t.Errorf("fw-1 keeps %d rules after its only window closed", n)
	}
	if n := len(do.InboundRules("fw-2")); n != 1 {
		t.Errorf("fw-2 has %d rules with its window open, want 1", n)
	}
}
