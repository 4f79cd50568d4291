package awssg

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall/cloud"
	"github.com/detour-acme/detour/internal/firewall/cloud/awssg/ec2fake"
)

const (
	testRegion = "eu-west-3"
	testGroup  = "sg-0a1b2c3d4e5f60001"
	mark       = "detour-window until=1700000000"
)

// hermeticEnv points every AWS_* variable the SDK reads somewhere wrong,
// so that a test passes only if the configuration given wins, and makes
// sure nothing contacts an instance metadata service.
func hermeticEnv(t *testing.T) {
	t.Helper()
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("instance metadata service contacted: %s %s", r.Method, r.URL)
		http.Error(w, "no", http.StatusForbidden)
	}))
	t.Cleanup(imds.Close)
	dir := t.TempDir()
	// A CA bundle, as some hosts set: the SDK must load with it.
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	tlsSrv.Close()
	bundle := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"AWS_CA_BUNDLE":                     bundle,
		"AWS_ACCESS_KEY_ID":                 "AKIAWRONGFROMENV0000",
		"AWS_SECRET_ACCESS_KEY":             "wrong-secret-from-env",
		"AWS_SESSION_TOKEN":                 "wrong-token-from-env",
		"AWS_PROFILE":                       "wrong-profile-from-env",
		"AWS_REGION":                        "xx-wrong-1",
		"AWS_DEFAULT_REGION":                "xx-wrong-2",
		"AWS_SHARED_CREDENTIALS_FILE":       filepath.Join(dir, "no-such-credentials"),
		"AWS_CONFIG_FILE":                   filepath.Join(dir, "no-such-config"),
		"AWS_ENDPOINT_URL":                  "http://192.0.2.1:9",
		"AWS_ENDPOINT_URL_EC2":              "http://192.0.2.1:9",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.URL,
		"AWS_EC2_METADATA_DISABLED":         "false",
		"AWS_MAX_ATTEMPTS":                  "7",
		"AWS_RETRY_MODE":                    "adaptive",
	} {
		t.Setenv(k, v)
	}
}

// guardedClient is an HTTP client that reaches only the fake: any other
// host fails the test.
func guardedClient(t *testing.T, fakeURL string) *http.Client {
	u, err := url.Parse(fakeURL)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Host != u.Host {
			t.Errorf("request to %s, not the fake", r.URL)
			return nil, fmt.Errorf("guarded: %s is not the fake", r.URL.Host)
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func newFake(t *testing.T) *ec2fake.Server {
	f := ec2fake.New()
	t.Cleanup(f.Close)
	f.AddGroup(testGroup, "web")
	return f
}

// testConfig returns a configuration for f with its credentials file.
func testConfig(t *testing.T, f *ec2fake.Server) cloud.Config {
	return cloud.Config{
		Credentials:  f.WriteCredentials(t.TempDir()),
		Region:       testRegion,
		FirewallID:   testGroup,
		Endpoint:     f.URL,
		HTTPClient:   guardedClient(t, f.URL),
		Logger:       slog.New(slog.NewTextHandler(t.Output(), nil)),
		PollInterval: 5 * time.Millisecond,
	}
}

func newAPI(t *testing.T, cfg cloud.Config) *API {
	t.Helper()
	a, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// count returns how many requests for action f answered with status.
func count(f *ec2fake.Server, action string, status int) int {
	n := 0
	for _, r := range f.Requests() {
		if r.Action == action && (status == 0 || r.Status == status) {
			n++
		}
	}
	return n
}

func cloudError(t *testing.T, err error) *cloud.Error {
	t.Helper()
	var ce *cloud.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *cloud.Error", err, err)
	}
	if ce.Provider != Name {
		t.Errorf("Provider = %q, want %q", ce.Provider, Name)
	}
	return ce
}

// TestOpenClose opens and closes windows for both families and checks
// that the user's rules are exactly as before, the mark passes through,
// and the requests have EC2's shape.
func TestOpenClose(t *testing.T) {
	hermeticEnv(t)
	f := newFake(t)
	f.AddIngress(testGroup, "tcp", 22, 22, "10.0.0.0/8", "ssh from the VPN")
	id443v4 := f.AddIngress(testGroup, "tcp", 443, 443, "0.0.0.0/0", "https")
	id443v6 := f.AddIngress(testGroup, "tcp", 443, 443, "::/0", "https v6")
	before := f.Ingress(testGroup)
	a := newAPI(t, testConfig(t, f))
	ctx := t.Context()

	tgt, err := a.Target(ctx)
	if err != nil || tgt != (cloud.Target{ID: testGroup, Name: "web"}) {
		t.Fatalf("Target = %+v, %v", tgt, err)
	}
	rules, err := a.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []cloud.Rule{
		{FromPort: 443, ToPort: 443, Description: "https", ID: id443v4},
		{FromPort: 443, ToPort: 443, IPv6: true, Description: "https v6", ID: id443v6},
	}
	if !slices.Equal(rules, want) {
		t.Fatalf("Rules = %+v, want %+v", rules, want)
	}

	var added []cloud.Rule
	for _, v6 := range []bool{false, true} {
		r, err := a.Add(ctx, cloud.Rule{FromPort: 80, ToPort: 80, IPv6: v6, Description: mark})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(r.ID, "sgr-") || r.Description != mark || r.FromPort != 80 || r.IPv6 != v6 {
			t.Fatalf("Add returned %+v", r)
		}
		added = append(added, r)
	}
	if got := f.Ingress(testGroup); len(got) != len(before)+2 ||
		got[3] != (ec2fake.Rule{ID: added[0].ID, Protocol: "tcp", FromPort: 80, ToPort: 80, CIDR: "0.0.0.0/0", Description: mark}) ||
		got[4] != (ec2fake.Rule{ID: added[1].ID, Protocol: "tcp", FromPort: 80, ToPort: 80, CIDR: "::/0", Description: mark}) {
		t.Fatalf("after Add, the group has %+v", got)
	}
	rules, err = a.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rules, append(want, added...)) {
		t.Fatalf("Rules after Add = %+v", rules)
	}

	for _, r := range added {
		if err := a.Remove(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.Ingress(testGroup); !slices.Equal(got, before) {
		t.Fatalf("after Remove, the group has %+v, want %+v", got, before)
	}

	// The request shapes, as the EC2 API reference names the parameters.
	var authorize, revoke []url.Values
	for _, r := range f.Requests() {
		if r.Region != testRegion {
			t.Errorf("%s signed for region %q, want %q", r.Action, r.Region, testRegion)
		}
		switch r.Action {
		case "AuthorizeSecurityGroupIngress":
			authorize = append(authorize, r.Params)
		case "RevokeSecurityGroupIngress":
			revoke = append(revoke, r.Params)
		}
	}
	if len(authorize) != 2 || len(revoke) != 2 {
		t.Fatalf("%d Authorize and %d Revoke calls, want 2 of each", len(authorize), len(revoke))
	}
	for k, v := range map[string]string{"GroupId": testGroup, "IpPermissions.1.IpProtocol": "tcp",
		"IpPermissions.1.FromPort": "80", "IpPermissions.1.ToPort": "80",
		"IpPermissions.1.IpRanges.1.CidrIp": "0.0.0.0/0", "IpPermissions.1.IpRanges.1.Description": mark} {
		if got := authorize[0].Get(k); got != v {
			t.Errorf("Authorize %s = %q, want %q", k, got, v)
		}
	}
	if got := authorize[1].Get("IpPermissions.1.Ipv6Ranges.1.CidrIpv6"); got != "::/0" {
		t.Errorf("Authorize (IPv6) IpPermissions.1.Ipv6Ranges.1.CidrIpv6 = %q", got)
	}
	if got := revoke[0].Get("SecurityGroupRuleId.1"); got != added[0].ID {
		t.Errorf("Revoke SecurityGroupRuleId.1 = %q, want %q", got, added[0].ID)
	}
}

// TestRules checks which rules count and how they read, over several
// pages.
func TestRules(t *testing.T) {
	hermeticEnv(t)
	f := newFake(t)
	idRange := f.AddIngress(testGroup, "tcp", 8000, 8100, "0.0.0.0/0", "")
	idAll := f.AddIngress(testGroup, "-1", 0, 0, "::/0", "everything")
	f.AddIngress(testGroup, "udp", 53, 53, "0.0.0.0/0", "dns")          // not TCP
	f.AddIngress(testGroup, "tcp", 80, 80, "192.0.2.0/24", "partner")   // narrow
	f.AddIngress(testGroup, "tcp", 443, 443, "2001:db8::/32", "narrow") // narrow
	idEvery := f.AddIngress(testGroup, "tcp", 0, 65535, "0.0.0.0/0", "all tcp")
	for i := range 6 {
		f.AddIngress(testGroup, "tcp", 9000+i, 9000+i, "10.1.0.0/16", "filler")
	}
	// AddGroup gave the group AWS's default egress rule: -1 to 0.0.0.0/0.
	a := newAPI(t, testConfig(t, f))
	a.pageSize = 5

	rules, err := a.Rules(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []cloud.Rule{
		{FromPort: 8000, ToPort: 8100, ID: idRange},
		{FromPort: 1, ToPort: 65535, IPv6: true, Description: "everything", ID: idAll},
		{FromPort: 1, ToPort: 65535, Description: "all tcp", ID: idEvery},
	}
	if !slices.Equal(rules, want) {
		t.Fatalf("Rules = %+v\nwant %+v", rules, want)
	}
	if n := count(f, "DescribeSecurityGroupRules", http.StatusOK); n != 3 {
		t.Errorf("%d DescribeSecurityGroupRules calls for 13 rules by 5, want 3 pages", n)
	}
	for _, r := range f.Requests() {
		if r.Action == "DescribeSecurityGroupRules" && (r.Params.Get("Filter.1.Name") != "group-id" || r.Params.Get("Filter.1.Value.1") != testGroup) {
			t.Errorf("DescribeSecurityGroupRules without the group-id filter: %v", r.Params)
		}
	}
}

// TestDiscovery finds the group from the instance: the lowest ID of its
// groups, looked up once however many callers ask.
func TestDiscovery(t *testing.T) {
	hermeticEnv(t)
	f := newFake(t)
	f.AddGroup("sg-0c0000000000000c3", "zeta")
	f.AddGroup("sg-0b0000000000000b2", "beta")
	f.AddInstance("i-0123456789abcdef0", "sg-0c0000000000000c3", "sg-0b0000000000000b2")
	cfg := testConfig(t, f)
	cfg.FirewallID, cfg.Instance = "", "i-0123456789abcdef0"
	a := newAPI(t, cfg)

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			tgt, err := a.Target(t.Context())
			if err != nil || tgt != (cloud.Target{ID: "sg-0b0000000000000b2", Name: "beta"}) {
				t.Errorf("Target = %+v, %v", tgt, err)
			}
		})
	}
	wg.Wait()
	r, err := a.Add(t.Context(), cloud.Rule{FromPort: 443, ToPort: 443, Description: mark})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Ingress("sg-0b0000000000000b2"); len(got) != 1 || got[0].ID != r.ID {
		t.Errorf("the rule went elsewhere: sg-0b...b2 has %+v", got)
	}
	if n := count(f, "DescribeInstances", 0); n != 1 {
		t.Errorf("%d DescribeInstances calls, want 1", n)
	}

	cfg.Instance = "i-0ffffffffffffffff"
	_, err = newAPI(t, cfg).Target(t.Context())
	if ce := cloudError(t, err); !errors.Is(err, cloud.ErrNotFound) || ce.Code != "InvalidInstanceID.NotFound" {
		t.Errorf("unknown instance: %v", err)
	}
}

// TestConcurrent adds and removes rules from several goroutines.
func TestConcurrent(t *testing.T) {
	hermeticEnv(t)
	f := newFake(t)
	f.VisibleAfter(2)
	a := newAPI(t, testConfig(t, f))
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			r, err := a.Add(t.Context(), cloud.Rule{FromPort: 8000 + i, ToPort: 8000 + i, IPv6: i%2 == 1, Description: mark})
			if err != nil {
				t.Error(err)
				return
			}
			if err := a.Remove(t.Context(), r); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := f.Ingress(testGroup); len(got) != 0 {
		t.Errorf("rules left: %+v", got)
	}
}

// TestWaits checks that Add and Remove return only once
// DescribeSecurityGroupRules shows the change.
func TestWaits(t *testing.T) {
	hermeticEnv(t)
	f := newFake(t)
	a := newAPI(t, testConfig(t, f))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	f.VisibleAfter(3)

	r, err := a.Add(ctx, cloud.Rule{FromPort: 80, ToPort: 80, Description: mark})
	if err != nil {
		t.Fatal(err)
	}
	rules, err := a.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(rules, r) {
		t.Fatalf("Add returned before its rule was listed: Rules = %+v", rules)
	}
	if err := a.Remove(ctx, r); err != nil {
		t.Fatal(err)
	}
	if rules, err = a.Rules(ctx); err != nil {
		t.Fatal(err)
	}
	if len(rules) != 0 {
		t.Fatalf("Remove returned while its rule was still listed: Rules = %+v", rules)
	}
	polls := 0
	for _, q := range f.Requests() {
		if q.Action == "DescribeSecurityGroupRules" && q.Params.Get("SecurityGroupRuleId.1") == r.ID {
			polls++
		}
	}
	if polls < 8 {
		t.Errorf("%d polls by rule ID, want at least 4 for Add and 4 for Remove", polls)
	}
}

// TestAddWaitFails removes the rule again when it never shows up in
// time.
func TestAddWaitFails(t *testing.T) {
	hermeticEnv(t)
	f := newFake(t)
	a := newAPI(t, testConfig(t, f))
	f.VisibleAfter(1 << 20)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := a.Add(ctx, cloud.Rule{FromPort: 80, ToPort: 80, Description: mark})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Add = %v, want the deadline", err)
	}
	if got := f.Ingress(testGroup); len(got) != 0 {
		t.Errorf("the rule was left behind: %+v", got)
	}
}

func TestRemoveAbsent(t *testing.T) {
	hermeticEnv(t)
	f := newFake(t)
	a := newAPI(t, testConfig(t, f))
	ctx := t.Context()
	if err := a.Remove(ctx, cloud.Rule{FromPort: 80, ToPort: 80, ID: "sgr-0000000000000dead"}); err != nil {
		t.Errorf("removing an unknown rule: %v", err)
	}
	r, err := a.Add(ctx, cloud.Rule{FromPort: 80, ToPort: 80, Description: mark})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := a.Remove(ctx, r); err != nil {
			t.Errorf("removing a rule twice: %v", err)
		}
	}
	if err := a.Remove(ctx, cloud.Rule{FromPort: 80, ToPort: 80}); err == nil || !strings.Contains(err.Error(), "no security group rule ID") {
		t.Errorf("removing a rule without ID: %v", err)
	}
}

func TestDuplicate(t *testing.T) {
	hermeticEnv(t)
	f := newFake(t)
	f.AddIngress(testGroup, "tcp", 80, 80, "0.0.0.0/0", "someone else's")
	a := newAPI(t, testConfig(t, f))
	_, err := a.Add(t.Context(), cloud.Rule{FromPort: 80, ToPort: 80, Description: mark})
	ce := cloudError(t, err)
	if !errors.Is(err, cloud.ErrRejected) || ce.Code != "InvalidPermission.Duplicate" || !strings.Contains(ce.Message, "identical rule already exists") {
		t.Errorf("duplicate: %v", err)
	}
}

// TestErrors checks how failures are classified.
func TestErrors(t *testing.T) {
	hermeticEnv(t)
	for _, tc := range []struct {
		name   string
		setup  func(f *ec2fake.Server, cfg *cloud.Config)
		call   func(ctx context.Context, a *API) error
		kind   error
		status int
		code   string
		msg    string // in the message
	}{{
		name: "unknown key",
		setup: func(f *ec2fake.Server, cfg *cloud.Config) {
			cfg.Credentials = writeFile(t, "[default]\naws_access_key_id = AKIAUNKNOWN000000000\naws_secret_access_key = "+f.SecretAccessKey+"\n")
		},
		kind: cloud.ErrAuth, status: 401, code: "AuthFailure",
	}, {
		name: "wrong secret",
		setup: func(f *ec2fake.Server, cfg *cloud.Config) {
			cfg.Credentials = writeFile(t, "[default]\naws_access_key_id = "+f.AccessKeyID+"\naws_secret_access_key = not-the-secret\n")
		},
		kind: cloud.ErrAuth, status: 403, code: "SignatureDoesNotMatch",
	}, {
		name: "profile without keys", // no fallback to an instance role
		setup: func(f *ec2fake.Server, cfg *cloud.Config) {
			cfg.Credentials = writeFile(t, "[default]\nregion = "+testRegion+"\n")
		},
		kind: cloud.ErrAuth, msg: "no usable AWS credentials",
	}, {
		name: "not allowed to list",
		setup: func(f *ec2fake.Server, _ *cloud.Config) {
			f.Fail("DescribeSecurityGroupRules", 403, "UnauthorizedOperation", "", 1)
		},
		kind: cloud.ErrForbidden, status: 403, code: "UnauthorizedOperation", msg: "ec2:DescribeSecurityGroupRules",
	}, {
		name: "not allowed to look up",
		setup: func(f *ec2fake.Server, _ *cloud.Config) {
			f.Fail("DescribeSecurityGroups", 403, "UnauthorizedOperation", "", 1)
		},
		kind: cloud.ErrForbidden, status: 403, code: "UnauthorizedOperation", msg: "ec2:DescribeSecurityGroups",
	}, {
		name: "not allowed to add",
		setup: func(f *ec2fake.Server, _ *cloud.Config) {
			f.Fail("AuthorizeSecurityGroupIngress", 403, "UnauthorizedOperation", "", 1)
		},
		call: func(ctx context.Context, a *API) error {
			_, err := a.Add(ctx, cloud.Rule{FromPort: 80, ToPort: 80})
			return err
		},
		kind: cloud.ErrForbidden, status: 403, code: "UnauthorizedOperation", msg: "ec2:AuthorizeSecurityGroupIngress",
	}, {
		name: "not allowed to remove",
		setup: func(f *ec2fake.Server, _ *cloud.Config) {
			f.Fail("RevokeSecurityGroupIngress", 403, "UnauthorizedOperation", "", 1)
		},
		call: func(ctx context.Context, a *API) error {
			return a.Remove(ctx, cloud.Rule{FromPort: 80, ToPort: 80, ID: "sgr-0000000000000beef"})
		},
		kind: cloud.ErrForbidden, status: 403, code: "UnauthorizedOperation", msg: "ec2:RevokeSecurityGroupIngress",
	}, {
		name: "not allowed to discover",
		setup: func(f *ec2fake.Server, cfg *cloud.Config) {
			f.AddInstance("i-0123456789abcdef0", testGroup)
			cfg.FirewallID, cfg.Instance = "", "i-0123456789abcdef0"
			f.Fail("DescribeInstances", 403, "UnauthorizedOperation", "", 1)
		},
		kind: cloud.ErrForbidden, status: 403, code: "UnauthorizedOperation", msg: "ec2:DescribeInstances",
	}, {
		name:  "no such group",
		setup: func(_ *ec2fake.Server, cfg *cloud.Config) { cfg.FirewallID = "sg-0ffffffffffffffff" },
		kind:  cloud.ErrNotFound, status: 400, code: "InvalidGroup.NotFound",
	}, {
		name: "rate limited beyond the deadline",
		setup: func(f *ec2fake.Server, _ *cloud.Config) {
			f.Fail("DescribeSecurityGroupRules", 503, "RequestLimitExceeded", "30", 1)
		},
		kind: cloud.ErrRateLimited, status: 503, code: "RequestLimitExceeded", msg: "past this run's deadline",
	}, {
		name: "rejected",
		setup: func(f *ec2fake.Server, _ *cloud.Config) {
			f.Fail("DescribeSecurityGroupRules", 400, "InvalidParameterValue", "", 1)
		},
		kind: cloud.ErrRejected, status: 400, code: "InvalidParameterValue",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			cfg := testConfig(t, f)
			tc.setup(f, &cfg)
			a := newAPI(t, cfg)
			call := tc.call
			if call == nil {
				call = func(ctx context.Context, a *API) error { _, err := a.Rules(ctx); return err }
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			start := time.Now()
			err := call(ctx, a)
			t.Log(err)
			ce := cloudError(t, err)
			if !errors.Is(err, tc.kind) || ce.Status != tc.status || ce.Code != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("got %v (kind %v, status %d, code %q), want kind %v, status %d, code %q, %q in the message",
					err, ce.Kind, ce.Status, ce.Code, tc.kind, tc.status, tc.code, tc.msg)
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Errorf("took %v: a permanent failure was retried", d)
			}
		})
	}
}

// TestRetries checks transient failures are retried, honouring
// Retry-After. The waits are real (cloud.Retry's), so the cases run in
// parallel.
func TestRetries(t *testing.T) {
	hermeticEnv(t)
	t.Run("rate limited, Retry-After honoured", func(t *testing.T) {
		t.Parallel()
		f := newFake(t)
		a := newAPI(t, testConfig(t, f))
		f.Fail("DescribeSecurityGroupRules", http.StatusTooManyRequests, "RequestLimitExceeded", "2", 1)
		start := time.Now()
		if _, err := a.Rules(t.Context()); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 2*time.Second {
			t.Errorf("retried after %v, before the 2 s Retry-After", d)
		}
		if n := count(f, "DescribeSecurityGroupRules", 0); n != 2 {
			t.Errorf("%d calls, want 2", n)
		}
	})
	t.Run("5xx then success", func(t *testing.T) {
		t.Parallel()
		f := newFake(t)
		a := newAPI(t, testConfig(t, f))
		f.Fail("AuthorizeSecurityGroupIngress", http.StatusInternalServerError, "InternalError", "1", 1)
		r, err := a.Add(t.Context(), cloud.Rule{FromPort: 80, ToPort: 80, Description: mark})
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Ingress(testGroup); len(got) != 1 || got[0].ID != r.ID {
			t.Errorf("the group has %+v", got)
		}
		if n := count(f, "AuthorizeSecurityGroupIngress", 0); n != 2 {
			t.Errorf("%d calls, want 2", n)
		}
	})
	t.Run("persistent 5xx", func(t *testing.T) {
		t.Parallel()
		f := newFake(t)
		a := newAPI(t, testConfig(t, f))
		f.Fail("DescribeSecurityGroupRules", http.StatusServiceUnavailable, "Unavailable", "1", 100)
		_, err := a.Rules(t.Context())
		ce := cloudError(t, err)
		if !errors.Is(err, cloud.ErrUnavailable) || ce.Status != 503 || ce.Code != "Unavailable" || ce.RetryAfter != time.Second {
			t.Errorf("got %v", err)
		}
		if n := count(f, "DescribeSecurityGroupRules", 0); n != 4 {
			t.Errorf("%d calls, want cloud.Retry's 4 and no SDK retries", n)
		}
	})
}

// TestCredentials checks that the credentials file and profile given win
// over the environment.
func TestCredentials(t *testing.T) {
	hermeticEnv(t)
	f := newFake(t)
	ctx := t.Context()
	file := writeFile(t, fmt.Sprintf("[default]\naws_access_key_id = AKIAWRONGDEFAULT0000\naws_secret_access_key = wrong\n\n[detour]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
		f.AccessKeyID, f.SecretAccessKey))

	cfg := testConfig(t, f)
	cfg.Credentials, cfg.Profile = file, "detour"
	if _, err := newAPI(t, cfg).Rules(ctx); err != nil {
		t.Errorf("profile detour: %v", err)
	}
	cfg.Profile = ""
	if _, err := newAPI(t, cfg).Rules(ctx); !errors.Is(err, cloud.ErrAuth) {
		t.Errorf("profile default (wrong keys): %v, want ErrAuth", err)
	}
	cfg.Profile = "nope"
	if _, err := New(ctx, cfg); err == nil || !strings.Contains(err.Error(), "no profile [nope]") {
		t.Errorf("missing profile: %v", err)
	}
	cfg.Credentials = filepath.Join(t.TempDir(), "missing")
	if _, err := New(ctx, cfg); err == nil || !strings.Contains(err.Error(), "firewall_credentials") {
		t.Errorf("missing file: %v", err)
	}
}

func TestNoRegion(t *testing.T) {
	hermeticEnv(t)
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	f := newFake(t)
	cfg := testConfig(t, f)
	cfg.Region = ""
	if _, err := New(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "set firewall_region") {
		t.Errorf("New without a region: %v", err)
	}
	if len(f.Requests()) != 0 {
		t.Errorf("New made API calls")
	}
}

func TestConfigChecks(t *testing.T) {
	hermeticEnv(t)
	f := newFake(t)
	for _, tc := range []struct {
		firewall, instance, want string
	}{
		{"", "", "set firewall_id"},
		{"web", "", "not a security group ID"},
		{"", "web-1", "not an EC2 instance ID"},
	} {
		cfg := testConfig(t, f)
		cfg.FirewallID, cfg.Instance = tc.firewall, tc.instance
		if _, err := New(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%q, %q) = %v, want %q", tc.firewall, tc.instance, err, tc.want)
		}
	}
	a := newAPI(t, testConfig(t, f))
	if _, err := a.Add(t.Context(), cloud.Rule{FromPort: 0, ToPort: 80}); err == nil {
		t.Errorf("Add accepted port 0")
	}
}

func writeFile(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// CheckWrite proves, changing nothing, that the credentials may add and
// remove a rule: a policy that allows Authorize but not Revoke (a window
// that could open and never close) is refused before anything is ordered.
func TestCheckWrite(t *testing.T) {
	hermeticEnv(t)
	f := newFake(t)
	f.AddIngress(testGroup, "tcp", 22, 22, "10.0.0.0/8", "ssh")
	a := newAPI(t, testConfig(t, f))
	ctx := context.Background()
	r := cloud.Rule{FromPort: 80, ToPort: 80}
	if err := a.CheckWrite(ctx, r); err != nil {
		t.Fatalf("CheckWrite with every permission: %v", err)
	}
	if n := len(f.Ingress(testGroup)); n != 1 {
		t.Errorf("the dry run changed the group: %d rules", n)
	}
	if count(f, "AuthorizeSecurityGroupIngress", 412) != 1 || count(f, "RevokeSecurityGroupIngress", 412) != 1 {
		t.Errorf("want one dry run of each call: %v", f.Requests())
	}
	f.Fail("RevokeSecurityGroupIngress", 403, "UnauthorizedOperation", "", 1)
	err := a.CheckWrite(ctx, cloud.Rule{FromPort: 80, ToPort: 80, IPv6: true})
	if !errors.Is(err, cloud.ErrForbidden) || !strings.Contains(err.Error(), "ec2:RevokeSecurityGroupIngress") {
		t.Errorf("CheckWrite without Revoke: %v; want ErrForbidden naming ec2:RevokeSecurityGroupIngress", err)
	}
}
