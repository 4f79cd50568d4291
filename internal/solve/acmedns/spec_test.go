package acmedns_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/acmedns"
)

func TestSpecSettings(t *testing.T) {
	sp := acmedns.Spec
	if sp.Kind != acmedns.Kind || acmedns.Kind != "acme-dns" {
		t.Errorf("kind %q", sp.Kind)
	}
	if !slices.Equal(sp.Challenges, solve.TXTChallenges()) {
		t.Errorf("challenges %v, want %v", sp.Challenges, solve.TXTChallenges())
	}
	if want := []string{"challenge", "server", "credentials_file", "allow_from", "propagation_timeout"}; !slices.Equal(sp.Keys(), want) {
		t.Errorf("keys %v, want %v", sp.Keys(), want)
	}
	for _, s := range sp.Settings {
		if s.Doc == "" || strings.Contains(s.Doc, "\n") {
			t.Errorf("%s: doc %q, want one line", s.Key, s.Doc)
		}
		if s.Required != (s.Key == "server") {
			t.Errorf("%s: required %v", s.Key, s.Required)
		}
	}
	if sp.Summary == "" || sp.For == "" || sp.Example != "delegated" || sp.Build == nil {
		t.Errorf("summary %q, for %q, example %q", sp.Summary, sp.For, sp.Example)
	}
	if s, _ := sp.Setting("server"); s.Example != "https://auth.example.net" {
		t.Errorf("server example %q", s.Example)
	}
}

// TestSpecValidate checks the messages of internal/config's acme-dns
// validation, each on its setting.
func TestSpecValidate(t *testing.T) {
	const cidrAdvice = ` is not a CIDR range; write ranges such as "192.0.2.0/24, 2001:db8::/32" (a single host is 192.0.2.7/32)`
	tests := []struct {
		name   string
		values map[string]string
		want   []solve.Problem
	}{
		{name: "valid", values: map[string]string{"server": "https://auth.example.net", "allow_from": "192.0.2.0/24, [2001:db8::]/32",
			"credentials_file": "/etc/detour/acme-dns.json", "propagation_timeout": "90s"}},
		{name: "valid loopback http", values: map[string]string{"server": "http://127.0.0.1:8053"}},
		{name: "valid localhost http", values: map[string]string{"server": "http://localhost:8053"}},
		{name: "valid IPv6 loopback http", values: map[string]string{"server": "http://[::1]:8053"}},
		{name: "no server", values: map[string]string{},
			want: []solve.Problem{{Msg: `server is missing; kind "acme-dns" needs it`}}},
		{name: "plain http remote", values: map[string]string{"server": "http://auth.example.net"},
			want: []solve.Problem{{Key: "server", Msg: `"http://auth.example.net" uses plain http, which would send the API key in clear; use https:// (http:// is accepted only for a loopback address)`}}},
		{name: "not a URL", values: map[string]string{"server": "auth.example.net"},
			want: []solve.Problem{{Key: "server", Msg: `"auth.example.net" is not a URL; write the acme-dns API's address, e.g. "https://auth.example.net"`}}},
		{name: "other scheme", values: map[string]string{"server": "ftp://auth.example.net"},
			want: []solve.Problem{{Key: "server", Msg: `"ftp://auth.example.net" must start with https://`}}},
		{name: "bare address", values: map[string]string{"server": "https://a.example", "allow_from": "192.0.2.7"},
			want: []solve.Problem{{Key: "allow_from", Msg: `"192.0.2.7"` + cidrAdvice}}},
		{name: "first bad entry only", values: map[string]string{"server": "https://a.example", "allow_from": "192.0.2.0/24, 10.0.0.1, nonsense"},
			want: []solve.Problem{{Key: "allow_from", Msg: `"10.0.0.1"` + cidrAdvice}}},
		{name: "empty entry", values: map[string]string{"server": "https://a.example", "allow_from": "192.0.2.0/24,,10.0.0.0/8"},
			want: []solve.Problem{{Key: "allow_from", Msg: `""` + cidrAdvice}}},
		{name: "relative credentials", values: map[string]string{"server": "https://a.example", "credentials_file": "acme-dns.json"},
			want: []solve.Problem{{Key: "credentials_file", Msg: `"acme-dns.json" must be an absolute path, e.g. "/etc/detour/acme-dns.json"`}}},
		{name: "timeout not a duration", values: map[string]string{"server": "https://a.example", "propagation_timeout": "2"},
			want: []solve.Problem{{Key: "propagation_timeout", Msg: `"2" is not a positive duration; write e.g. "2m" or "90s"`}}},
		{name: "timeout not positive", values: map[string]string{"server": "https://a.example", "propagation_timeout": "-1m"},
			want: []solve.Problem{{Key: "propagation_timeout", Msg: `"-1m" is not a positive duration; write e.g. "2m" or "90s"`}}},
		{name: "every problem", values: map[string]string{"server": "ftp://a.example", "allow_from": "x",
			"credentials_file": "rel.json", "propagation_timeout": "soon"},
			want: []solve.Problem{
				{Key: "server", Msg: `"ftp://a.example" must start with https://`},
				{Key: "credentials_file", Msg: `"rel.json" must be an absolute path, e.g. "/etc/detour/acme-dns.json"`},
				{Key: "allow_from", Msg: `"x"` + cidrAdvice},
				{Key: "propagation_timeout", Msg: `"soon" is not a positive duration; write e.g. "2m" or "90s"`},
			}},
		{name: "not a TXT challenge", values: map[string]string{"server": "https://a.example", "challenge": "http-01"},
			want: []solve.Problem{{Key: "challenge", Msg: `"http-01" is not available for kind "acme-dns"; use ` + quotedOr(solve.TXTChallenges())}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := acmedns.Spec.Validate("adns", acmedns.Spec.WithDefaults(tc.values))
			if !slices.Equal(got, tc.want) {
				t.Errorf("Validate:\n got  %q\n want %q", got, tc.want)
			}
		})
	}
}

// settings returns the settings of an acme-dns path called "adns" with
// the kind's defaults.
func settings(values map[string]string) solve.Settings {
	return solve.NewSettings("adns", acmedns.Kind, acmedns.Spec.WithDefaults(values))
}

func TestOptionsFrom(t *testing.T) {
	w := newWorld(t)
	env := solve.Env{Store: w.state, Resolver: "192.0.2.53:53",
		Account: func(context.Context) (solve.Account, error) { return solve.Account{URL: "https://ca.test/acct/7"}, nil }}
	opts, err := acmedns.OptionsFrom(settings(map[string]string{"server": "https://auth.example.net",
		"allow_from": " 192.0.2.0/24, ,2001:db8::/32 ", "propagation_timeout": "90s"}), env)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Server != "https://auth.example.net" || opts.CredentialsFile != "" || opts.Storage != w.state ||
		opts.Resolver != "192.0.2.53:53" || opts.PropagationTimeout != 90*time.Second || opts.Challenge != solve.DNS01 {
		t.Errorf("options %+v", opts)
	}
	if !slices.Equal(opts.AllowFrom, []string{"192.0.2.0/24", "2001:db8::/32"}) {
		t.Errorf("allow_from %q", opts.AllowFrom)
	}
	if opts.AccountURL == nil {
		t.Fatal("no AccountURL")
	}
	if u, err := opts.AccountURL(t.Context()); err != nil || u != "https://ca.test/acct/7" {
		t.Errorf("AccountURL = %q, %v", u, err)
	}

	if _, err := acmedns.OptionsFrom(settings(map[string]string{"server": "https://auth.example.net"}), solve.Env{}); err == nil ||
		!strings.Contains(err.Error(), "state directory") || !strings.Contains(err.Error(), "credentials_file") || !strings.Contains(err.Error(), `"adns"`) {
		t.Errorf("OptionsFrom without a store or credentials file: %v, want it to point at credentials_file", err)
	}
	if _, err := acmedns.OptionsFrom(settings(map[string]string{"server": "https://auth.example.net", "propagation_timeout": "2"}), env); err == nil ||
		!strings.Contains(err.Error(), "propagation_timeout") {
		t.Errorf("OptionsFrom with an invalid timeout: %v", err)
	}
}

// TestBuild builds acme-dns paths from settings and checks where a new
// account is kept: the state store, or the credentials file when set
// (with or without a store open).
func TestBuild(t *testing.T) {
	tests := []struct {
		name      string
		withStore bool
		withFile  bool
	}{
		{"state store", true, false},
		{"credentials file", true, true},
		{"credentials file, no store", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			values := map[string]string{"server": w.apiURL}
			file := filepath.Join(t.TempDir(), "creds", "acme-dns.json")
			if tc.withFile {
				values["credentials_file"] = file
			}
			env := solve.Env{Resolver: w.resolverAddr}
			if tc.withStore {
				env.Store = w.state
			}
			sv, err := acmedns.Spec.Build(t.Context(), settings(values), env)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			s, ok := sv.(*acmedns.Solver)
			if !ok {
				t.Fatalf("Build returned %T, want *acmedns.Solver", sv)
			}
			if s.Type() != solve.DNS01 {
				t.Errorf("type %q", s.Type())
			}
			var cerr *acmedns.CNAMEError
			if err := s.Check(t.Context(), mustID(t, "example.test")); !errors.As(err, &cerr) {
				t.Fatalf("Check on first use: %v, want a *CNAMEError", err)
			}
			_, fileErr := os.Stat(file)
			stored := accountFiles(t, w)
			if tc.withFile {
				if fileErr != nil || len(stored) != 0 {
					t.Errorf("credentials file: %v; state store keys %v, want the account in the file only", fileErr, stored)
				}
			} else if !errors.Is(fileErr, os.ErrNotExist) || len(stored) != 1 {
				t.Errorf("credentials file: %v; state store keys %v, want the account in the state store only", fileErr, stored)
			}
			acct, created, err := s.Account(t.Context(), "example.test")
			if err != nil || created {
				t.Fatalf("Account: created %v, %v", created, err)
			}
			w.customer.SetCNAME("_acme-challenge.example.test", acct.Fulldomain)
			if err := s.Check(t.Context(), mustID(t, "*.example.test")); err != nil {
				t.Errorf("Check with the CNAME in place: %v", err)
			}
		})
	}

	if sv, err := acmedns.Spec.Build(t.Context(), settings(map[string]string{"server": "https://auth.example.net"}), solve.Env{}); err == nil || sv != nil {
		t.Errorf("Build without a store or credentials file: %v, %v; want an error and no solver", sv, err)
	}
	if sv, err := acmedns.Spec.Build(t.Context(), settings(map[string]string{"server": "https://auth.example.net?x=1"}),
		solve.Env{Store: newWorld(t).state}); err == nil || sv != nil {
		t.Errorf("Build with a server New refuses: %v, %v; want an error and no solver (not a typed nil)", sv, err)
	}
}

// quotedOr renders ["a", "b"] as `"a" or "b"`, as Validate lists the
// challenges a kind answers: every TXT challenge, however many there are.
func quotedOr(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, " or ")
}
