package plan

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/kinds"
	"github.com/detour-acme/detour/internal/store"
)

// plausibleValue returns a non-empty value for setting s, valid for its
// type: its example, else its default, else its first enum value, else one
// made up for its type. A secret gets a value of its own (base64, as a TSIG
// secret must be), so that a leak is unmistakable; so does tsig_secret, so
// that its value stays valid should its Secret flag be lost.
func plausibleValue(kind string, s solve.Setting) string {
	if s.Secret || s.Key == "tsig_secret" {
		return base64.StdEncoding.EncodeToString([]byte("secret value of " + kind + "." + s.Key))
	}
	switch {
	case s.Example != "":
		return s.Example
	case s.Default != "":
		return s.Default
	case len(s.Values) > 0:
		return s.Values[0]
	}
	for _, v := range s.DefaultByChallenge {
		return v
	}
	switch s.Type {
	case solve.TypeListen:
		return "127.0.0.1:8499"
	case solve.TypeAddress:
		return "192.0.2.53:53"
	case solve.TypePath:
		return "/etc/detour/" + s.Key
	case solve.TypeDuration:
		return "3m"
	case solve.TypePort:
		return "8080"
	case solve.TypeURL:
		return "https://auth.example.net"
	case solve.TypeDate:
		return "2099-01-31"
	case solve.TypeList:
		return "192.0.2.0/24, 2001:db8::/32"
	}
	// TypeString and anything new: a DNS-name-like word passes the string
	// checks there are (zone, tsig_key).
	return "value-of-" + s.Key + ".example"
}

// fullPath returns a path of spec with every setting, the challenge
// included, set to a plausible value, and fails t if the setting's own
// check refuses one (the checks between settings are not asked: every
// setting at once breaks some, e.g. tsig_secret with tsig_secret_file).
func fullPath(t *testing.T, spec solve.Spec) config.Path {
	t.Helper()
	cp := config.Path{Name: "p-" + spec.Kind, Kind: spec.Kind, Settings: map[string]string{}}
	for _, s := range spec.AllSettings() {
		v := plausibleValue(spec.Kind, s)
		cp.Settings[s.Key] = v
		if s.Key == solve.KeyChallenge {
			continue
		}
		alone := solve.Spec{Kind: spec.Kind, Challenges: spec.Challenges, Settings: []solve.Setting{s}}
		if probs := alone.Validate(cp.Name, map[string]string{solve.KeyChallenge: spec.Challenges[0], s.Key: v}); len(probs) > 0 {
			t.Errorf("test value %s = %q is not valid: %v", s.Key, v, probs)
		}
	}
	return cp
}

// TestRefForKeepsAllButSecrets: for every kind, a certificate's record keeps
// every setting of a path except those the kind's spec marks Secret.
func TestRefForKeepsAllButSecrets(t *testing.T) {
	var secrets []string
	for _, spec := range kinds.All() {
		t.Run(spec.Kind, func(t *testing.T) {
			cp := fullPath(t, spec)
			ref := refFor(spec, cp)
			if ref.Name != cp.Name || ref.Kind != cp.Kind {
				t.Errorf("ref names %s/%s, want %s/%s", ref.Name, ref.Kind, cp.Name, cp.Kind)
			}
			for _, s := range spec.AllSettings() {
				v := cp.Settings[s.Key]
				got, kept := ref.Settings[s.Key]
				switch {
				case s.Secret && kept:
					t.Errorf("secret setting %s = %q is kept in the record", s.Key, got)
				case !s.Secret && !kept:
					t.Errorf("setting %s = %q is dropped from the record; a renewal from it would not rebuild the path", s.Key, v)
				case !s.Secret && got != v:
					t.Errorf("setting %s recorded as %q, want %q", s.Key, got, v)
				}
				if s.Secret {
					secrets = append(secrets, spec.Kind+"."+s.Key)
					for k, rv := range ref.Settings {
						if rv == v {
							t.Errorf("the value of secret %s appears in the record as %s", s.Key, k)
						}
					}
				}
			}
			if len(ref.Settings) != len(spec.AllSettings())-countSecret(spec) {
				t.Errorf("record keeps %d settings %v, want %d", len(ref.Settings), ref.Settings, len(spec.AllSettings())-countSecret(spec))
			}
		})
	}
	// Not vacuous: the TSIG secret of rfc2136 is a secret setting.
	found := false
	for _, s := range secrets {
		found = found || s == "rfc2136.tsig_secret"
	}
	if !found {
		t.Errorf("no kind marks rfc2136's tsig_secret as Secret (secret settings: %v)", secrets)
	}
}

func countSecret(spec solve.Spec) int {
	n := 0
	for _, s := range spec.AllSettings() {
		if s.Secret {
			n++
		}
	}
	return n
}

// TestRefForByFlagNotName: what stays out of a record is decided by the
// spec's Secret flag, not by what a setting is called. The old rule kept
// "firewall_token" (no "secret" in its name) and dropped
// "tsig_secret_file" (a file name, not a secret).
func TestRefForByFlagNotName(t *testing.T) {
	spec := solve.Spec{
		Kind:       "synthetic",
		Challenges: []string{solve.DNS01},
		Settings: []solve.Setting{
			{Key: "firewall_token", Type: solve.TypeString, Secret: true},
			{Key: "tsig_secret_file", Type: solve.TypePath},
		},
	}
	cp := config.Path{Name: "syn", Kind: spec.Kind, Settings: map[string]string{
		solve.KeyChallenge: solve.DNS01,
		"firewall_token":   "tok-3f9a1c",
		"tsig_secret_file": "/etc/detour/tsig.secret",
	}}
	ref := refFor(spec, cp)
	if v, ok := ref.Settings["firewall_token"]; ok {
		t.Errorf("firewall_token (Secret) is kept in the record as %q", v)
	}
	if got := ref.Settings["tsig_secret_file"]; got != "/etc/detour/tsig.secret" {
		t.Errorf("tsig_secret_file (not Secret) recorded as %q, want it kept", got)
	}
	if got := ref.Settings[solve.KeyChallenge]; got != solve.DNS01 {
		t.Errorf("challenge recorded as %q, want %q", got, solve.DNS01)
	}
}

// TestRecordFileHoldsNoSecret goes through the real planner and record
// writer: a configured rfc2136 path with an inline tsig_secret is built for
// a request, the request's Refs are saved as the certificate's record the
// way renew.Manager.Obtain saves them, and renewal/<name>.json must not hold
// the secret, while it does hold the path's other settings. A renewal
// planned from that record (RecordTarget) records no secret either.
func TestRecordFileHoldsNoSecret(t *testing.T) {
	raw := "detour-test-tsig-secret-7d1e"
	secret := base64.StdEncoding.EncodeToString([]byte(raw))
	cfg, err := config.Parse("detour.toml", fmt.Appendf(nil, `
default_ca = "https://acme.invalid/directory"
email = "t@example.com"
agree_tos = true

[path.ns]
kind = "rfc2136"
server = "192.0.2.53:53"
zone = "example.com"
tsig_key = "detour-key"
tsig_algorithm = "hmac-sha512"
tsig_secret = %q

[[certificate]]
name = "www"
domains = ["www.example.com"]
paths = ["ns"]
`, secret))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Paths["ns"].Setting("tsig_secret"); got != secret {
		t.Fatalf("the configuration's path holds tsig_secret %q, want %q", got, secret)
	}
	state := t.TempDir()
	p, err := Open(Options{Config: cfg, StateDir: state, NoSelfCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cfg.Certificate("www")
	if err != nil {
		t.Fatal(err)
	}
	target, err := p.ConfigTarget(c, RequestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req, release, err := target.Request(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if len(req.Refs) != 1 || req.Refs[0].Name != "ns" || req.Refs[0].Kind != "rfc2136" {
		t.Fatalf("request refs = %+v, want the one rfc2136 path ns", req.Refs)
	}
	if v, ok := req.Refs[0].Settings["tsig_secret"]; ok {
		t.Errorf("request ref keeps tsig_secret = %q", v)
	}

	// Save the record as renew.Manager.Obtain does: Paths are req.Refs.
	rec := store.Record{
		Name: req.Name, Identifiers: []string{"www.example.com"},
		CA: req.CA.Client.DirectoryURL(), CAName: req.CA.Name, Email: req.CA.Email,
		KeyType: string(req.KeyType), Paths: req.Refs, NoSelfCheck: req.SelfCheck == nil, Version: 1,
	}
	if err := p.shared.SaveRecord(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(state, "renewal", "www.json")
	checkNoSecret(t, file, secret, raw)

	// A renewal planned from the record takes the secret from the
	// configuration again, and records it no more than the first time.
	saved, err := p.shared.LoadRecord(t.Context(), "www")
	if err != nil {
		t.Fatal(err)
	}
	req2, release2, err := p.RecordTarget(saved, RequestOptions{}).Request(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer release2()
	if len(req2.Refs) != 1 {
		t.Fatalf("renewal refs = %+v, want one", req2.Refs)
	}
	if v, ok := req2.Refs[0].Settings["tsig_secret"]; ok {
		t.Errorf("renewal ref keeps tsig_secret = %q", v)
	}
	saved.Paths, saved.Version = req2.Refs, 2
	if err := p.shared.SaveRecord(t.Context(), saved); err != nil {
		t.Fatal(err)
	}
	checkNoSecret(t, file, secret, raw)
}

// checkNoSecret fails if the record file holds the secret (as written, or
// decoded), or lacks the path's other settings (which would make the check
// vacuous).
func checkNoSecret(t *testing.T, file, secret, raw string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{secret, raw, "tsig_secret\""} {
		if bytes.Contains(b, []byte(leak)) {
			t.Errorf("%s holds %q:\n%s", file, leak, b)
		}
	}
	for _, want := range []string{`"rfc2136"`, `"detour-key"`, `"192.0.2.53:53"`, `"hmac-sha512"`, `"example.com"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("%s lacks %s: the path's settings did not reach the record:\n%s", file, want, b)
		}
	}
}

// TestRecordWithoutItsSecret: once the configuration no longer defines the
// path, a renewal rebuilt from the record lacks the secret the record never
// kept; planning it fails before anything is asked, saying so and what to
// do.
func TestRecordWithoutItsSecret(t *testing.T) {
	state := t.TempDir()
	p, err := Open(Options{Config: config.Default(), StateDir: state, NoSelfCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	rec := store.Record{Name: "www", Identifiers: []string{"www.example.com"}, CA: "https://acme.invalid/directory",
		KeyType: "ecdsa-p256", Version: 1, Paths: []store.PathRef{{Name: "ns", Kind: "rfc2136",
			Settings: map[string]string{"challenge": "dns-01", "server": "192.0.2.53:53", "tsig_key": "detour-key"}}}}
	if err := p.shared.SaveRecord(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	_, _, err = p.RecordTarget(rec, RequestOptions{}).Request(t.Context(), 0)
	if err == nil {
		t.Fatal("a renewal without the TSIG secret was planned")
	}
	for _, want := range []string{"path ns, rebuilt from the record of www", "tsig_key is set without a secret", "define [path.ns] in the config file again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
