package dnsprovider

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// TestSpecValidate checks the settings with the messages (and keys) the
// configuration has always given for a dns-provider table.
func TestSpecValidate(t *testing.T) {
	const creds = "/etc/detour/cf.credentials"
	// Detour's own providers are listed; with the generated ones, they
	// are too many, so the message names the list.
	providerList := `"cloudflare", "digitalocean", "gandi", "gandiv5", "hetzner", "ovh", "route53"` // gandiv5: lego's name of gandi
	if !slimBuild {
		providerList = fmt.Sprintf("the %d that 'detour paths dns-provider' lists, such as %s", len(catalog),
			`"cloudflare", "digitalocean", "gandi", "hetzner", "ovh", "route53"`)
	}
	tests := []struct {
		name   string
		values map[string]string
		want   []solve.Problem
	}{
		{"valid", map[string]string{"provider": "cloudflare", "credentials_file": creds}, nil},
		{"valid with timeout", map[string]string{"provider": "gandi", "credentials_file": creds, "propagation_timeout": "25m"}, nil},
		{"misspelt provider", map[string]string{"provider": "cloudfare", "credentials_file": creds},
			[]solve.Problem{{Key: "provider", Msg: `"cloudfare" is not a supported DNS provider (did you mean "cloudflare"?); use one of ` + providerList}}},
		{"unknown provider", map[string]string{"provider": "bind", "credentials_file": creds},
			[]solve.Problem{{Key: "provider", Msg: `"bind" is not a supported DNS provider; use one of ` + providerList}}},
		{"no provider", map[string]string{"credentials_file": creds},
			[]solve.Problem{{Msg: `provider is missing; kind "dns-provider" needs it`}}},
		{"no credentials", map[string]string{"provider": "hetzner"},
			[]solve.Problem{{Key: "credentials_file", Msg: "credentials_file is missing; set it to a file (mode 0600) holding the provider's API credentials as key = value lines"}}},
		{"relative credentials", map[string]string{"provider": "ovh", "credentials_file": "ovh.ini"},
			[]solve.Problem{{Key: "credentials_file", Msg: `"ovh.ini" must be an absolute path, e.g. "/etc/detour/ovh.credentials"`}}},
		{"bad timeout", map[string]string{"provider": "route53", "credentials_file": creds, "propagation_timeout": "5 minutes"},
			[]solve.Problem{{Key: "propagation_timeout", Msg: `"5 minutes" is not a positive duration; write e.g. "5m" or "90s"`}}},
		{"negative timeout", map[string]string{"provider": "route53", "credentials_file": creds, "propagation_timeout": "-1m"},
			[]solve.Problem{{Key: "propagation_timeout", Msg: `"-1m" is not a positive duration; write e.g. "5m" or "90s"`}}},
		{"zero timeout", map[string]string{"provider": "route53", "credentials_file": creds, "propagation_timeout": "0s"},
			[]solve.Problem{{Key: "propagation_timeout", Msg: `"0s" is not a positive duration; write e.g. "5m" or "90s"`}}},
		{"other challenge", map[string]string{"challenge": "http-01", "provider": "hetzner", "credentials_file": creds},
			[]solve.Problem{{Key: "challenge", Msg: `"http-01" is not available for kind "dns-provider"; use "dns-01" or "dns-account-01"`}}},
		{"dns-account-01 through lego", map[string]string{"challenge": "dns-account-01", "provider": "hetzner", "credentials_file": creds},
			[]solve.Problem{{Key: "challenge", Msg: `DNS provider hetzner cannot answer dns-account-01: lego's DNS providers can only write _acme-challenge.<name>, not the account's _<label>._acme-challenge.<name>; set challenge = "dns-01", or use a provider whose client Detour writes itself (` + strings.Join(anyNameProviders(), ", ") + `) or an rfc2136, acme-dns or dns-embedded path`}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Spec.Validate("p", Spec.WithDefaults(tc.values))
			if !slices.Equal(got, tc.want) {
				t.Errorf("Validate(%v) =\n%q\nwant\n%q", tc.values, got, tc.want)
			}
		})
	}
}

func TestSpecDeclaration(t *testing.T) {
	if Spec.Kind != Kind || Kind != "dns-provider" || !slices.Equal(Spec.Challenges, []string{solve.DNS01, solve.DNSAccount01}) {
		t.Errorf("Spec declares kind %q for %q", Spec.Kind, Spec.Challenges)
	}
	var keys []string
	for _, st := range Spec.Settings {
		keys = append(keys, st.Key)
		if st.Secret {
			t.Errorf("%s is marked secret; no setting of a dns-provider path is (the credentials stay in their file)", st.Key)
		}
		if st.Doc == "" || strings.Contains(st.Doc, "\n") {
			t.Errorf("%s: Doc %q must be one line", st.Key, st.Doc)
		}
	}
	if want := []string{"provider", "credentials_file", solve.PropagationTimeout.Key}; !slices.Equal(keys, want) {
		t.Errorf("settings %q, want %q", keys, want)
	}
	if st, _ := Spec.Setting("propagation_timeout"); !strings.Contains(st.Doc, "default 2m, 20m for gandi") {
		t.Errorf("propagation_timeout Doc %q does not give the defaults", st.Doc)
	}
	// The example table validates.
	ex := map[string]string{}
	for _, st := range Spec.Settings {
		if st.Example != "" {
			ex[st.Key] = st.Example
		}
	}
	if probs := Spec.Validate(Spec.Example, Spec.WithDefaults(ex)); len(probs) != 0 || ex["provider"] != "cloudflare" {
		t.Errorf("example %v: %q", ex, probs)
	}
}

// TestSpecBuild builds a dns-provider path from settings, as a
// [path.NAME] table gives them. Settings Validate refuses fail Build
// cleanly too.
func TestSpecBuild(t *testing.T) {
	creds := writeCreds(t, "api_token = x\n", 0o600)
	tests := []struct {
		name      string
		settings  map[string]string
		wantErr   string
		wantValid string // the key Validate reports, "" for none
	}{
		{"built", map[string]string{"provider": "hetzner", "credentials_file": creds, "propagation_timeout": "3m"}, "", ""},
		{"unknown provider", map[string]string{"provider": "bind", "credentials_file": creds}, `unknown DNS provider "bind"`, "provider"},
		{"missing file", map[string]string{"provider": "hetzner", "credentials_file": creds + ".missing"}, "no such file", ""},
		{"bad timeout", map[string]string{"provider": "hetzner", "credentials_file": creds, "propagation_timeout": "soon"},
			`propagation_timeout "soon"`, "propagation_timeout"},
		{"other challenge", map[string]string{"challenge": "dns-account-01", "provider": "hetzner", "credentials_file": creds},
			"lego's DNS providers can only write _acme-challenge.<name>", "challenge"},
	}
	t.Cleanup(func() { SetNameservers() })
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			values := Spec.WithDefaults(tc.settings)
			var keys []string
			for _, p := range Spec.Validate("dns", values) {
				keys = append(keys, p.Key)
			}
			if want := []string{tc.wantValid}; (tc.wantValid == "" && len(keys) != 0) || (tc.wantValid != "" && !slices.Equal(keys, want)) {
				t.Errorf("Validate reports %q, want %q", keys, tc.wantValid)
			}
			sol, err := Spec.Build(t.Context(), solve.NewSettings("dns", Kind, values), solve.Env{Resolver: "127.0.0.1:53"})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || sol != nil {
					t.Fatalf("Build = %v, %v; want no solver and an error containing %q", sol, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s, ok := sol.(*Solver)
			if !ok || sol.Type() != solve.DNS01 {
				t.Fatalf("solver = %T (%s), want a dns-01 *dnsprovider.Solver", sol, sol.Type())
			}
			if r := s.Records().(*records); r.timeout != 3*time.Minute || r.name != "hetzner" {
				t.Errorf("built for %s with timeout %v, want hetzner and 3m", r.name, r.timeout)
			}
		})
	}
}

// recordingProvider is a lego provider that records its calls.
type recordingProvider struct {
	mu    sync.Mutex
	calls []string
}

func (p *recordingProvider) Present(_ context.Context, domain, token, _ string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, fmt.Sprintf("Present %s %s", domain, token))
	return nil
}

func (p *recordingProvider) CleanUp(_ context.Context, domain, token, _ string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, fmt.Sprintf("CleanUp %s %s", domain, token))
	return nil
}

// TestRefusesOtherChallenges: lego's providers write
// _acme-challenge.<name> only, so the backend refuses a record of another
// challenge type (or at another name), saying which kinds can, and never
// calls the provider for it.
func TestRefusesOtherChallenges(t *testing.T) {
	s, err := New(Options{Provider: "hetzner", CredentialsFile: writeCreds(t, "api_token = x\n", 0o600)})
	if err != nil {
		t.Fatal(err)
	}
	fake := &recordingProvider{}
	s.Records().(*records).provider = fake
	id, err := ident.Parse("example.com")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	other := solve.TXTRecord{Name: "_abc._acme-challenge.example.com.", Value: "v",
		Challenge: solve.Challenge{Type: "dns-account-01", Identifier: id, Token: "tok-other", KeyAuthorization: "tok-other.thumb"}}
	wantAll := []string{"cannot answer dns-account-01", "lego's DNS providers can only write _acme-challenge.<name>",
		"use an rfc2136, acme-dns or dns-embedded path for dns-account-01"}
	for op, f := range map[string]func(context.Context, solve.TXTRecord) error{
		"CheckTXT": s.Records().CheckTXT, "SetTXT": s.Records().SetTXT,
	} {
		err := f(ctx, other)
		for _, w := range wantAll {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s(dns-account-01) = %v; want an error containing %q", op, err, w)
			}
		}
	}
	misnamed := solve.TXTRecord{Name: "_other.example.com.", Value: "v",
		Challenge: solve.Challenge{Type: solve.DNS01, Identifier: id, Token: "tok-misnamed"}}
	if err := s.Records().SetTXT(ctx, misnamed); err == nil || !strings.Contains(err.Error(), "_acme-challenge.example.com.") {
		t.Errorf("SetTXT(%s) = %v; want a refusal naming _acme-challenge.example.com.", misnamed.Name, err)
	}
	if len(fake.calls) != 0 {
		t.Fatalf("the provider was called for refused records: %q", fake.calls)
	}

	// dns-01 goes through to the provider, with the base name.
	ch := newChallenge(t, "*.example.com", "tok-dns01")
	if err := s.Check(ctx, ch.Identifier); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := s.Present(ctx, ch); err != nil {
		t.Fatalf("Present: %v", err)
	}
	if err := s.CleanUp(ctx, ch); err != nil {
		t.Fatalf("CleanUp: %v", err)
	}
	if want := []string{"Present example.com tok-dns01", "CleanUp example.com tok-dns01"}; !slices.Equal(fake.calls, want) {
		t.Errorf("provider calls %q, want %q", fake.calls, want)
	}
}
