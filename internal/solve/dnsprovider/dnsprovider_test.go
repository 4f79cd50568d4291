package dnsprovider

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	detourdns "github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/dnsserver"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

const testZone = "example.test."

// zoneDNS is Detour's own DNS responder serving one zone on 127.0.0.1. lego's
// zone lookups (SetNameservers) and the propagation check both use it, and
// the fakes publish the TXT records they hold in it, as a provider's
// nameservers would.
type zoneDNS struct {
	srv    *dnsserver.Server
	addr   string
	client *detourdns.Client
}

func startZoneDNS(t *testing.T, srv *dnsserver.Server, zone string) *zoneDNS {
	t.Helper()
	pc, ln, err := dnsserver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, pc, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("DNS server: %v", err)
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("DNS server stopped: %v", err)
	}
	return useDNS(t, srv, pc.LocalAddr().String(), zone)
}

// useDNS points lego and the propagation check at the server at addr.
func useDNS(t *testing.T, srv *dnsserver.Server, addr, zone string) *zoneDNS {
	t.Helper()
	SetNameservers(addr)
	t.Cleanup(func() { SetNameservers() })
	c, err := detourdns.New(detourdns.Options{Resolver: addr, Nameservers: map[string]string{"ns." + zone: addr}})
	if err != nil {
		t.Fatal(err)
	}
	return &zoneDNS{srv: srv, addr: addr, client: c}
}

func (d *zoneDNS) add(name, value string) { d.srv.AddTXT(name, value, d.srv.Now().Add(time.Hour)) }
func (d *zoneDNS) remove(name, value string) {
	d.srv.RemoveTXT(name, value)
}

func writeCreds(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "creds")
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // umask-proof
		t.Fatal(err)
	}
	return p
}

func newChallenge(t *testing.T, name, token string) solve.Challenge {
	t.Helper()
	id, err := ident.Parse(name)
	if err != nil {
		t.Fatal(err)
	}
	return solve.Challenge{Type: solve.DNS01, Identifier: id, Token: token, KeyAuthorization: token + ".thumbprint"}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// providerCases are the registered providers, each with credentials in the
// file format and a fake of its API expecting exactly those credentials.
var providerCases = []struct {
	provider string
	creds    string
	fake     func() fakeAPI
	// apiError is a message the provider's API sends back, in its format.
	apiError string
	// wholeSet: lego's client deletes the name's whole TXT set on the first
	// CleanUp (gandiv5 does), not only its own value.
	wholeSet bool
}{
	{"cloudflare", "api_token = cf-token\n", func() fakeAPI { return newFakeCloudflare(testZone, "cf-token") },
		"Authentication error: this token may not edit DNS records of example.test", false},
	{"route53", "# IAM user detour-dns\naccess_key_id = AKIAFAKE\nsecret_access_key = \"fake/secret+key\"\nregion = eu-west-1\n",
		func() fakeAPI { return newFakeRoute53(testZone, "AKIAFAKE") },
		"User: arn:aws:iam::123456789012:user/detour is not authorized to perform: route53:ChangeResourceRecordSets", false},
	{"digitalocean", "auth_token = 'dop_v1_fake'\n", func() fakeAPI { return newFakeDigitalOcean(testZone, "dop_v1_fake") },
		"You do not have access for the attempted action.", false},
	{"hetzner", "api_token = hz-token\n", func() fakeAPI { return newFakeHetzner(testZone, "hz-token") },
		"insufficient permissions for this request: zones write", false},
	{"gandi", "personal_access_token = gandi-pat\n", func() fakeAPI { return newFakeGandi(testZone, "gandi-pat") },
		"Access was denied to this resource.", true},
	{"ovh", "endpoint = ovh-eu\napplication_key = ak\napplication_secret = as\nconsumer_key = ck\n",
		func() fakeAPI { return newFakeOVH(testZone, "ak", "as", "ck") }, "This call has not been granted", false},
}

// TestProviders presents and cleans up a name and its wildcard through each
// provider's lego client against a fake of its API: both values must be
// created at the one _acme-challenge name, be visible to the propagation
// check, and each be removed.
func TestProviders(t *testing.T) {
	srv := dnsserver.New(dnsserver.Options{Zones: []string{testZone}, RateLimit: -1})
	zdns := startZoneDNS(t, srv, testZone)
	for _, tc := range providerCases {
		t.Run(tc.provider, func(t *testing.T) {
			ctx := testCtx(t)
			fake := tc.fake()
			fake.records().sink = zdns
			s, err := New(Options{Provider: tc.provider, CredentialsFile: writeCreds(t, tc.creds, 0o600),
				Transport: startFake(t, fake), DNS: zdns.client, PropagationTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			base := newChallenge(t, "www.example.test", "tok-base")
			wild := newChallenge(t, "*.www.example.test", "tok-wild")
			name := "_acme-challenge.www.example.test."
			if base.DNS01Name() != name || wild.DNS01Name() != name {
				t.Fatalf("names %s, %s; want both %s", base.DNS01Name(), wild.DNS01Name(), name)
			}
			for _, ch := range []solve.Challenge{base, wild} {
				if err := s.Check(ctx, ch.Identifier); err != nil {
					t.Fatalf("Check(%s): %v", ch.Identifier, err)
				}
				if err := s.Present(ctx, ch); err != nil {
					t.Fatalf("Present(%s): %v", ch.Identifier, err)
				}
			}
			want := slices.Sorted(slices.Values([]string{base.DNS01Value(), wild.DNS01Value()}))
			if got := fake.records().TXT(name); !slices.Equal(got, want) {
				t.Fatalf("after Present, %s holds TXT %q at %s; want %q (calls: %q)", tc.provider, got, name, want, fake.records().calls)
			}
			for _, ch := range []solve.Challenge{base, wild} {
				if err := s.Wait(ctx, ch); err != nil {
					t.Fatalf("Wait(%s): %v", ch.Identifier, err)
				}
			}
			if err := s.CleanUp(ctx, wild); err != nil {
				t.Fatalf("CleanUp(%s): %v", wild.Identifier, err)
			}
			left := fake.records().TXT(name)
			if !tc.wholeSet && !slices.Equal(left, []string{base.DNS01Value()}) {
				t.Errorf("after cleaning up the wildcard, TXT %q remain; want only the base name's %q", left, base.DNS01Value())
			}
			if err := s.CleanUp(ctx, base); err != nil {
				t.Fatalf("CleanUp(%s): %v", base.Identifier, err)
			}
			if got := fake.records().TXT(name); len(got) != 0 {
				t.Errorf("after CleanUp, TXT %q remain at %s", got, name)
			}
			if got := srv.TXT(name); len(got) != 0 {
				t.Errorf("the zone's DNS still answers %q", got)
			}
			t.Logf("API calls: %q", fake.records().calls)
		})
	}
}

// TestAPIErrorKeepsProviderMessage makes each fake answer with an error in
// its provider's format: Present fails with the provider's own message, and
// a CleanUp after it does not fail (nothing was created).
func TestAPIErrorKeepsProviderMessage(t *testing.T) {
	srv := dnsserver.New(dnsserver.Options{Zones: []string{testZone}, RateLimit: -1})
	zdns := startZoneDNS(t, srv, testZone)
	for _, tc := range providerCases {
		t.Run(tc.provider, func(t *testing.T) {
			ctx := testCtx(t)
			fake := tc.fake()
			fake.records().failWith(tc.apiError)
			s, err := New(Options{Provider: tc.provider, CredentialsFile: writeCreds(t, tc.creds, 0o600),
				Transport: startFake(t, fake), DNS: zdns.client})
			if err != nil {
				t.Fatal(err)
			}
			ch := newChallenge(t, "*.www.example.test", "tok-err")
			err = s.Present(ctx, ch)
			if err == nil {
				t.Fatal("Present succeeded against a failing API")
			}
			t.Logf("Present: %v", err)
			for _, want := range []string{tc.apiError, "creating the TXT record _acme-challenge.www.example.test. through " + tc.provider} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\nlacks %q", err, want)
				}
			}
			if err := s.CleanUp(ctx, ch); err != nil {
				t.Errorf("CleanUp after a failed Present: %v", err)
			}
			if got := fake.records().TXT("_acme-challenge.www.example.test."); len(got) != 0 {
				t.Errorf("records %q created despite the error", got)
			}
		})
	}
}

func TestWaitTimesOut(t *testing.T) {
	srv := dnsserver.New(dnsserver.Options{Zones: []string{testZone}, RateLimit: -1})
	zdns := startZoneDNS(t, srv, testZone)
	fake := newFakeCloudflare(testZone, "tok") // records never reach the DNS
	s, err := New(Options{Provider: "cloudflare", CredentialsFile: writeCreds(t, "api_token = tok\n", 0o600),
		Transport: startFake(t, fake), DNS: zdns.client, PropagationTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ch := newChallenge(t, "www.example.test", "tok-1")
	ctx := testCtx(t)
	if err := s.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = s.Wait(ctx, ch)
	var perr *detourdns.PropagationError
	if !errors.As(err, &perr) || !strings.Contains(err.Error(), "propagation_timeout") || !strings.Contains(err.Error(), "through cloudflare") {
		t.Fatalf("Wait = %v; want a propagation error naming cloudflare and propagation_timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Wait took %v with a 300ms propagation timeout", d)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name     string
		provider string
		creds    string // file content; "-" for no file
		want     []string
	}{
		{"unknown provider", "cloudfare", "api_token = x\n",
			[]string{`unknown DNS provider "cloudfare" (did you mean "cloudflare"?)`, knownProviders()}},
		{"no credentials file", "hetzner", "-", []string{"set credentials_file", "api_token"}},
		{"missing key", "digitalocean", "# empty\n", []string{"lacks auth_token", "DNS provider digitalocean"}},
		{"missing keys", "ovh", "application_key = a\n", []string{"lacks application_secret and consumer_key"}},
		{"cloudflare half a global key", "cloudflare", "email = me@example.com\n", []string{"lacks api_key"}},
		{"cloudflare nothing", "cloudflare", "zone_token = z\n", []string{"lacks api_token", "or email and api_key"}},
		{"unknown key", "hetzner", "api_tokn = x\n", []string{"api_tokn is not a credential of DNS provider hetzner", "it reads api_token"}},
		{"syntax", "hetzner", "api_token\n", []string{"creds:1:", `expected "key = value"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := ""
			if tc.creds != "-" {
				file = writeCreds(t, tc.creds, 0o600)
			}
			_, err := New(Options{Provider: tc.provider, CredentialsFile: file})
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
			if file != "" && strings.Contains(tc.name, "missing") && !strings.Contains(err.Error(), file) {
				t.Errorf("error %q does not name the file %s", err, file)
			}
		})
	}
}

// TestCredentialsNeverFromEnvironment sets the variables lego's own
// constructors read: the factories must not see them.
func TestCredentialsNeverFromEnvironment(t *testing.T) {
	t.Setenv("DO_AUTH_TOKEN", "from-env")
	t.Setenv("CLOUDFLARE_DNS_API_TOKEN", "from-env")
	t.Setenv("AWS_ACCESS_KEY_ID", "from-env")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "from-env")
	for _, p := range []string{"digitalocean", "cloudflare", "route53"} {
		_, err := New(Options{Provider: p, CredentialsFile: writeCreds(t, "# nothing\n", 0o600)})
		if err == nil || !strings.Contains(err.Error(), "lacks") {
			t.Errorf("%s: New = %v; want a missing-credential error despite the environment", p, err)
		}
	}
}

func TestCredentialsFile(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    map[string]string
		wantErr string
	}{
		{"bare, quoted and literal", "# comment\n\na = plain value \nb = \"quo\\\"ted\"\nc='lit\\eral'\n",
			map[string]string{"a": "plain value", "b": `quo"ted`, "c": `lit\eral`}, ""},
		{"value with equals", "token = abc==\n", map[string]string{"token": "abc=="}, ""},
		{"duplicate", "a = 1\na = 2\n", nil, ":2: a is set twice"},
		{"empty", "a =\n", nil, ":1: a is empty"},
		{"bad key", "API-Token = x\n", nil, `key "API-Token"`},
		{"unterminated", "a = \"x\n", nil, "not a valid string"},
		{"unterminated literal", "a = 'x\n", nil, "closing single quote"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := readCredentials(writeCreds(t, tc.content, 0o600), slog.New(slog.DiscardHandler))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v; want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if got := c.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if len(c.vals) != len(tc.want) {
				t.Errorf("read %v, want %v", c.vals, tc.want)
			}
		})
	}
}

func TestCredentialsModeWarning(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o604, true}} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		if _, err := readCredentials(writeCreds(t, "a = b\n", tc.mode), log); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(buf.String(), "chmod 600"); got != tc.warn {
			t.Errorf("mode %04o: warned = %v, want %v (log %q)", tc.mode, got, tc.warn, buf.String())
		}
	}
}

func TestCheckRefusesIPs(t *testing.T) {
	s, err := New(Options{Provider: "hetzner", CredentialsFile: writeCreds(t, "api_token = x\n", 0o600)})
	if err != nil {
		t.Fatal(err)
	}
	ip, _ := ident.Parse("192.0.2.1")
	if err := s.Check(t.Context(), ip); !errors.Is(err, solve.ErrNotApplicable) {
		t.Errorf("Check(IP) = %v, want ErrNotApplicable", err)
	}
	if s.Type() != solve.DNS01 {
		t.Errorf("Type = %q", s.Type())
	}
}

// TestSpecKnowsEveryProvider: the provider setting of Spec, which the
// configuration validates with, accepts exactly the registered providers,
// and each is complete.
func TestSpecKnowsEveryProvider(t *testing.T) {
	st, ok := Spec.Setting("provider")
	if !ok {
		t.Fatal("Spec has no provider setting")
	}
	if got, want := st.Values, Names(); !slices.Equal(got, want) {
		t.Errorf("Spec's provider Values = %q, registry has %q", got, want)
	}
	for _, n := range Names() {
		if _, _, ok := lookup(n); !ok {
			t.Errorf("Names() offers %s, which New does not know", n)
		}
	}
	for n, f := range providers {
		if len(f.Keys) == 0 || f.Help == "" || f.New == nil || f.Title == "" {
			t.Errorf("provider %s: Title, Keys, Help and New must be set", n)
		}
	}
	for n, f := range catalog {
		if f.New == nil || f.Title == "" {
			t.Errorf("provider %s: Title and New must be set", n)
		}
		for _, k := range f.Keys {
			if k.Name == "" || strings.Contains(k.Doc, "\n") {
				t.Errorf("provider %s: key %+v needs a name and a one-line Doc", n, k)
			}
		}
	}
}
