package rfc2136_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/rfc2136"
	"github.com/detour-acme/detour/internal/testenv"
)

// TestSpecValidate checks the settings of a [path.bind] table of kind
// rfc2136: the messages and the setting each is attached to are those the
// configuration reports (internal/config's rfc2136 tests).
func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]string
		key    string // "" for valid settings
		want   string // the whole message
	}{
		{name: "valid", values: map[string]string{"server": "192.0.2.53:53", "zone": "example.com", "tsig_key": "detour-key", "tsig_secret": "c2VjcmV0", "propagation_timeout": "90s"}},
		{name: "valid with file and algorithm", values: map[string]string{"tsig_key": "detour-key", "tsig_secret_file": "/etc/detour/tsig", "tsig_algorithm": "HMAC-SHA512"}},
		{name: "valid unsigned", values: map[string]string{"server": "ns1.example.com:53"}},
		{name: "both secrets", values: map[string]string{"tsig_key": "k", "tsig_secret": "c2VjcmV0", "tsig_secret_file": "/etc/detour/tsig"},
			key: "tsig_secret", want: "tsig_secret and tsig_secret_file are both set; keep one (tsig_secret_file keeps the secret out of this file)"},
		{name: "secret not base64", values: map[string]string{"tsig_key": "k", "tsig_secret": "not base64!"},
			key: "tsig_secret", want: "the secret is not valid base64 (illegal base64 data at input byte 3); copy the secret string of the key statement (as printed by tsig-keygen)"},
		{name: "key without secret", values: map[string]string{"tsig_key": "k"},
			key: "tsig_key", want: `tsig_key is set without a secret; add tsig_secret_file = "/etc/detour/tsig.secret" (or tsig_secret)`},
		{name: "secret without key", values: map[string]string{"tsig_secret": "c2VjcmV0"},
			key: "tsig_key", want: "a TSIG secret is set without tsig_key; add tsig_key = the key's name in named.conf"},
		{name: "secret file without key", values: map[string]string{"tsig_secret_file": "/etc/detour/tsig"},
			key: "tsig_key", want: "a TSIG secret is set without tsig_key; add tsig_key = the key's name in named.conf"},
		{name: "key not a name", values: map[string]string{"tsig_key": "my key", "tsig_secret": "c2VjcmV0"},
			key: "tsig_key", want: `"my key" is not a valid key name; use the name of the key statement in named.conf, e.g. "detour-key"`},
		{name: "relative secret file", values: map[string]string{"tsig_key": "k", "tsig_secret_file": "tsig.secret"},
			key: "tsig_secret_file", want: `"tsig.secret" must be an absolute path`},
		{name: "unknown algorithm", values: map[string]string{"tsig_key": "k", "tsig_secret": "c2VjcmV0", "tsig_algorithm": "hmac-md5"},
			key: "tsig_algorithm", want: `"hmac-md5" is not supported; use "hmac-sha256", "hmac-sha384", "hmac-sha512"`},
		{name: "server without port", values: map[string]string{"server": "192.0.2.53"},
			key: "server", want: `"192.0.2.53" must be the update server's host:port, e.g. "192.0.2.53:53" or "ns1.example.com:53"`},
		{name: "server without host", values: map[string]string{"server": ":53"},
			key: "server", want: `":53" must be the update server's host:port, e.g. "192.0.2.53:53" or "ns1.example.com:53"`},
		{name: "zone not a name", values: map[string]string{"zone": "exa mple.com"},
			key: "zone", want: `"exa mple.com" is not a DNS name; write the zone's apex, e.g. "example.com"`},
		{name: "timeout not a duration", values: map[string]string{"propagation_timeout": "120"},
			key: "propagation_timeout", want: `"120" is not a positive duration; write e.g. "2m" or "90s"`},
		{name: "timeout not a duration either", values: map[string]string{"tsig_key": "detour-key", "tsig_secret": "c2VjcmV0", "propagation_timeout": "soon"},
			key: "propagation_timeout", want: `"soon" is not a positive duration; write e.g. "2m" or "90s"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			probs := rfc2136.Spec.Validate("bind", rfc2136.Spec.WithDefaults(tt.values))
			if tt.key == "" {
				if len(probs) != 0 {
					t.Fatalf("Validate = %v, want no problem", probs)
				}
				return
			}
			want := solve.Problem{Key: tt.key, Msg: tt.want}
			if !slices.Contains(probs, want) {
				t.Fatalf("Validate = %q\nwant %q", probs, want)
			}
		})
	}
}

// TestSpecSettings: the keys an rfc2136 table accepts, and tsig_secret is
// the only one kept out of certificate records.
func TestSpecSettings(t *testing.T) {
	want := []string{"challenge", "server", "zone", "tsig_key", "tsig_algorithm", "tsig_secret", "tsig_secret_file", "propagation_timeout"}
	if got := rfc2136.Spec.Keys(); !slices.Equal(got, want) {
		t.Errorf("Keys = %q, want %q", got, want)
	}
	var secret []string
	for _, s := range rfc2136.Spec.AllSettings() {
		if s.Doc == "" {
			t.Errorf("setting %s has no Doc", s.Key)
		}
		if s.Secret {
			secret = append(secret, s.Key)
		}
	}
	if !slices.Equal(secret, []string{"tsig_secret"}) {
		t.Errorf("secret settings = %q, want only tsig_secret", secret)
	}
	if got := rfc2136.Spec.WithDefaults(nil); got["tsig_algorithm"] != "hmac-sha256" || got["challenge"] != solve.DNS01 {
		t.Errorf("defaults = %v, want tsig_algorithm hmac-sha256 and challenge dns-01", got)
	}
	if !slices.Equal(rfc2136.Spec.Challenges, solve.TXTChallenges()) {
		t.Errorf("Challenges = %v, want %v", rfc2136.Spec.Challenges, solve.TXTChallenges())
	}
}

// TestSpecBuild builds the solver of a path from its settings, reading the
// secret from tsig_secret_file.
func TestSpecBuild(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "tsig.secret")
	if err := os.WriteFile(secret, []byte("  c2VjcmV0 \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.secret")
	if err := os.WriteFile(bad, []byte("not base64!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		settings map[string]string
		wantErr  string
	}{
		{"secret file", map[string]string{"server": "192.0.2.53:53", "tsig_key": "detour-key", "tsig_secret_file": secret, "propagation_timeout": "90s"}, ""},
		{"inline secret", map[string]string{"tsig_key": "detour-key", "tsig_secret": "c2VjcmV0", "tsig_algorithm": "hmac-sha512", "zone": "example.com"}, ""},
		{"missing secret file", map[string]string{"tsig_key": "detour-key", "tsig_secret_file": secret + ".missing"},
			"reading tsig_secret_file: open " + secret + ".missing: no such file or directory; check the path and that detour may read it"},
		{"secret file not base64", map[string]string{"tsig_key": "detour-key", "tsig_secret_file": bad}, "not valid base64"},
		{"challenge not a TXT challenge", map[string]string{"challenge": solve.HTTP01}, "is not answered by a TXT record"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := solve.NewSettings("bind", rfc2136.Kind, rfc2136.Spec.WithDefaults(tc.settings))
			env := solve.Env{Logger: slog.New(slog.DiscardHandler), Resolver: "127.0.0.1:53"}
			sv, err := rfc2136.Spec.Build(t.Context(), s, env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Build = %v; want an error containing %q", err, tc.wantErr)
				}
				if sv != nil {
					t.Errorf("Build returned the solver %#v with its error", sv)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := sv.(*rfc2136.Solver); !ok || sv.Type() != solve.DNS01 {
				t.Errorf("solver = %T (%s), want a dns-01 *rfc2136.Solver", sv, sv.Type())
			}
		})
	}
}

// TestRecordsAtGivenName: the solver built for dns-01 puts each record at
// the owner name it is given, not one of its own making from the
// identifier, so that challenge types naming the record differently
// (dns-account-01's _<label>._acme-challenge.<name>) reuse the backend;
// the secret is read, trimmed, from tsig_secret_file.
func TestRecordsAtGivenName(t *testing.T) {
	b := testenv.StartBIND(t, testenv.BINDOptions{Zones: zones})
	file := filepath.Join(t.TempDir(), "tsig.secret")
	if err := os.WriteFile(file, []byte(b.Secret+"  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	settings := solve.NewSettings("bind", rfc2136.Kind, rfc2136.Spec.WithDefaults(map[string]string{
		"challenge": solve.DNS01, "server": b.Addr, "tsig_key": b.Key, "tsig_algorithm": b.Algorithm, "tsig_secret_file": file,
	}))
	if probs := rfc2136.Spec.Validate("bind", settings.Values()); len(probs) != 0 {
		t.Fatalf("Validate = %v", probs)
	}
	sv, err := rfc2136.Spec.Build(t.Context(), settings, solve.Env{Resolver: b.Addr})
	if err != nil {
		t.Fatal(err)
	}
	s := sv.(*rfc2136.Solver)
	ctx := t.Context()

	// Through the solver, dns-01 puts the record at _acme-challenge.<name>.
	ch := challenge(t, "detour.test", "base.key-auth")
	if err := s.Check(ctx, ch.Identifier); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := s.Present(ctx, ch); err != nil {
		t.Fatalf("Present: %v", err)
	}
	if got := txtAt(t, b.Addr, "_acme-challenge.detour.test."); !slices.Equal(got, []string{ch.DNS01Value()}) {
		t.Errorf("after Present the primary holds %q at _acme-challenge.detour.test., want %q", got, ch.DNS01Value())
	}
	if err := s.CleanUp(ctx, ch); err != nil {
		t.Fatalf("CleanUp: %v", err)
	}

	// The backend takes the name as given, even one the identifier does
	// not lead to (nowhere.invalid has no zone here), and follows its
	// CNAME into the other zone.
	id, err := ident.Parse("nowhere.invalid")
	if err != nil {
		t.Fatal(err)
	}
	recs := s.Records()
	for _, tc := range []struct{ name, at string }{
		{"_label._acme-challenge.detour.test.", "_label._acme-challenge.detour.test."},
		{"_acme-challenge.www.detour.test.", "www.auth.test."},
	} {
		r := solve.TXTRecord{Name: tc.name, Value: "value-at-" + tc.name,
			Challenge: solve.Challenge{Type: solve.DNS01, Identifier: id}}
		if err := recs.CheckTXT(ctx, solve.TXTRecord{Name: r.Name, Challenge: r.Challenge}); err != nil {
			t.Errorf("CheckTXT(%s): %v", tc.name, err)
		}
		if err := recs.SetTXT(ctx, r); err != nil {
			t.Fatalf("SetTXT(%s): %v", tc.name, err)
		}
		if got := txtAt(t, b.Addr, tc.at); !slices.Equal(got, []string{r.Value}) {
			t.Errorf("after SetTXT(%s) the primary holds %q at %s, want %q", tc.name, got, tc.at, r.Value)
		}
		if err := recs.DeleteTXT(ctx, r); err != nil {
			t.Fatalf("DeleteTXT(%s): %v", tc.name, err)
		}
		if got := txtAt(t, b.Addr, tc.at); len(got) != 0 {
			t.Errorf("after DeleteTXT(%s) the primary still holds %q at %s", tc.name, got, tc.at)
		}
	}
	if got := txtAt(t, b.Addr, "_acme-challenge.nowhere.invalid."); len(got) != 0 {
		t.Errorf("the primary holds %q at _acme-challenge.nowhere.invalid.", got)
	}
}

// TestWaitAtGivenName: WaitTXT asks every authoritative server for the
// name given.
func TestWaitAtGivenName(t *testing.T) {
	b := testenv.StartBIND(t, testenv.BINDOptions{Zones: zones, Secondary: true})
	recs := newSolver(t, b, nil).Records()
	ctx := t.Context()
	r := solve.TXTRecord{Name: "_label._acme-challenge.detour.test.", Value: "account-value",
		Challenge: solve.Challenge{Type: solve.DNS01, Identifier: ident.Identifier{Type: ident.TypeDNS, Value: "detour.test"}}}
	if err := recs.SetTXT(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := recs.WaitTXT(ctx, r); err != nil {
		t.Fatalf("WaitTXT: %v", err)
	}
	if got := txtAt(t, b.SecondaryAddr, r.Name); !slices.Equal(got, []string{r.Value}) {
		t.Errorf("after WaitTXT the secondary holds %q at %s, want %q", got, r.Name, r.Value)
	}
	if err := recs.DeleteTXT(ctx, r); err != nil {
		t.Fatal(err)
	}
}
