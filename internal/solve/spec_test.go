package solve_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/solve"
)

// testSpec is a kind with a setting of each checked type.
func testSpec() solve.Spec {
	return solve.Spec{
		Kind:       "k",
		Challenges: []string{solve.HTTP01, solve.TLSALPN01},
		Settings: []solve.Setting{
			{Key: "listen", Type: solve.TypeListen,
				DefaultByChallenge: map[string]string{solve.HTTP01: ":80", solve.TLSALPN01: ":443"}},
			{Key: "timeout", Type: solve.TypeDuration, Default: "2m",
				DefaultByChallenge: map[string]string{solve.TLSALPN01: "30s"}},
			{Key: "root", Type: solve.TypePath, Required: true, Example: "/var/www"},
			{Key: "mode", Type: solve.TypeEnum, Values: []string{"fast", "slow"}, Default: "fast"},
			{Key: "server", Type: solve.TypeAddress},
			{Key: "port", Type: solve.TypePort},
			{Key: "dir", Type: solve.TypePath},
			{Key: "note", Type: solve.TypeString},
		},
	}
}

func TestWithDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   map[string]string
		want map[string]string
	}{
		{name: "nil: challenge default first, then defaults that depend on it", in: nil,
			want: map[string]string{"challenge": solve.HTTP01, "listen": ":80", "timeout": "2m", "mode": "fast"}},
		{name: "DefaultByChallenge beats Default", in: map[string]string{"challenge": solve.TLSALPN01},
			want: map[string]string{"challenge": solve.TLSALPN01, "listen": ":443", "timeout": "30s", "mode": "fast"}},
		{name: "existing values kept",
			in:   map[string]string{"challenge": solve.TLSALPN01, "listen": ":8443", "timeout": "5s", "mode": "slow", "root": "/srv"},
			want: map[string]string{"challenge": solve.TLSALPN01, "listen": ":8443", "timeout": "5s", "mode": "slow", "root": "/srv"}},
		{name: "empty values are unset", in: map[string]string{"challenge": "", "listen": "", "note": ""},
			want: map[string]string{"challenge": solve.HTTP01, "listen": ":80", "timeout": "2m", "mode": "fast", "note": ""}},
		{name: "keys the spec does not know are kept", in: map[string]string{"bogus": "x"},
			want: map[string]string{"challenge": solve.HTTP01, "listen": ":80", "timeout": "2m", "mode": "fast", "bogus": "x"}},
		{name: "a challenge the kind cannot answer is kept for Validate", in: map[string]string{"challenge": solve.DNS01},
			want: map[string]string{"challenge": solve.DNS01, "timeout": "2m", "mode": "fast"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := maps.Clone(tt.in)
			got := testSpec().WithDefaults(tt.in)
			if !maps.Equal(got, tt.want) {
				t.Errorf("WithDefaults(%v) = %v, want %v", tt.in, got, tt.want)
			}
			if !maps.Equal(tt.in, before) || (tt.in == nil) != (before == nil) {
				t.Errorf("WithDefaults modified its input: %v, was %v", tt.in, before)
			}
			got["mangled"] = "yes"
			if _, ok := tt.in["mangled"]; ok {
				t.Error("WithDefaults returned its input map")
			}
		})
	}
}

func TestWithDefaultsNoChallenges(t *testing.T) {
	sp := solve.Spec{Kind: "k", Settings: []solve.Setting{{Key: "a", Default: "1"}}}
	got := sp.WithDefaults(nil)
	if want := map[string]string{"a": "1"}; !maps.Equal(got, want) {
		t.Errorf("WithDefaults(nil) = %v, want %v", got, want)
	}
}

func TestValidate(t *testing.T) {
	valid := func(extra map[string]string) map[string]string {
		v := testSpec().WithDefaults(map[string]string{"root": "/var/www"})
		maps.Copy(v, extra)
		return v
	}
	tests := []struct {
		name   string
		values map[string]string
		want   []solve.Problem
	}{
		{name: "valid", values: valid(nil)},
		{name: "every type valid", values: valid(map[string]string{
			"listen": "unix:/run/detour/http.sock", "server": "ns1.example.com:53", "port": "8053", "dir": "/srv", "note": "anything at all: 🙂",
			"mode": "slow", "timeout": "1h30m",
		})},
		// A challenge the kind cannot answer is reported alone: Validate stops there.
		{name: "challenge not available", values: valid(map[string]string{"challenge": solve.DNS01}),
			want: []solve.Problem{{Key: "challenge", Msg: `"dns-01" is not available for kind "k"; use "http-01" or "tls-alpn-01"`}}},
		{name: "challenge missing (defaults not applied)", values: map[string]string{"root": "/var/www"},
			want: []solve.Problem{{Key: "challenge", Msg: `"" is not available for kind "k"; use "http-01" or "tls-alpn-01"`}}},
		{name: "required missing", values: valid(map[string]string{"root": ""}),
			want: []solve.Problem{{Key: "", Msg: `root is missing; kind "k" needs it`}}},
		{name: "listen: no port", values: valid(map[string]string{"listen": "localhost"}),
			want: []solve.Problem{{Key: "listen", Msg: `"localhost" is not host:port (missing port in address); write e.g. ":80" or "192.0.2.1:80"`}}},
		{name: "listen: port out of range", values: valid(map[string]string{"listen": ":65536"}),
			want: []solve.Problem{{Key: "listen", Msg: `":65536": port "65536" must be a number from 1 to 65535`}}},
		{name: "listen: relative socket", values: valid(map[string]string{"listen": "unix:http.sock"}),
			want: []solve.Problem{{Key: "listen", Msg: `"unix:http.sock": a unix socket path must be absolute, e.g. "unix:/run/detour/http.sock"`}}},
		{name: "address without host", values: valid(map[string]string{"server": ":53"}),
			want: []solve.Problem{{Key: "server", Msg: `":53" must be a server's host:port, e.g. "192.0.2.53:53"`}}},
		{name: "path relative, with example", values: valid(map[string]string{"root": "www"}),
			want: []solve.Problem{{Key: "root", Msg: `"www" must be an absolute path, e.g. "/var/www"`}}},
		{name: "path relative, no example", values: valid(map[string]string{"dir": "srv"}),
			want: []solve.Problem{{Key: "dir", Msg: `"srv" must be an absolute path`}}},
		{name: "duration negative", values: valid(map[string]string{"timeout": "-1s"}),
			want: []solve.Problem{{Key: "timeout", Msg: `"-1s" is not a positive duration; write e.g. "2m" or "90s"`}}},
		{name: "port zero", values: valid(map[string]string{"port": "0"}),
			want: []solve.Problem{{Key: "port", Msg: `"0" must be a port number from 1 to 65535`}}},
		{name: "enum typo", values: valid(map[string]string{"mode": "fsat"}),
			want: []solve.Problem{{Key: "mode", Msg: `"fsat" is not a valid mode (did you mean "fast"?); use "fast", "slow"`}}},
		{name: "enum far off", values: valid(map[string]string{"mode": "turbo"}),
			want: []solve.Problem{{Key: "mode", Msg: `"turbo" is not a valid mode; use "fast", "slow"`}}},
		{name: "every problem, in declaration order",
			values: valid(map[string]string{"listen": ":0", "root": "", "port": "http", "timeout": "2"}),
			want: []solve.Problem{
				{Key: "listen", Msg: `":0": port "0" must be a number from 1 to 65535`},
				{Key: "timeout", Msg: `"2" is not a positive duration; write e.g. "2m" or "90s"`},
				{Key: "", Msg: `root is missing; kind "k" needs it`},
				{Key: "port", Msg: `"http" must be a port number from 1 to 65535`},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := testSpec().Validate("p", tt.values)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Validate(%v) =\n  %q\nwant\n  %q", tt.values, got, tt.want)
			}
		})
	}
}

func TestValidateSettingCheckOverridesType(t *testing.T) {
	sp := solve.Spec{Kind: "k", Challenges: []string{solve.DNS01}, Settings: []solve.Setting{
		// The port check would refuse "any"; the setting's own accepts it.
		{Key: "lenient", Type: solve.TypePort, Check: func(string) error { return nil }},
		// The port check would accept "53"; the setting's own refuses it.
		{Key: "strict", Type: solve.TypePort, Check: func(v string) error {
			if v == "53" {
				return errors.New("not 53, please")
			}
			return nil
		}},
	}}
	got := sp.Validate("p", map[string]string{"challenge": solve.DNS01, "lenient": "any", "strict": "53"})
	if want := []solve.Problem{{Key: "strict", Msg: "not 53, please"}}; !slices.Equal(got, want) {
		t.Errorf("Validate = %q, want %q", got, want)
	}
}

func TestValidateSpecCheck(t *testing.T) {
	var saw []solve.Settings
	sp := testSpec()
	sp.Check = func(s solve.Settings) []solve.Problem {
		saw = append(saw, s)
		return []solve.Problem{{Key: "server", Msg: "server and port disagree"}}
	}
	values := sp.WithDefaults(map[string]string{"root": "/var/www", "port": "99999", "server": "ns1.example.com:53"})
	got := sp.Validate("mypath", values)
	want := []solve.Problem{
		{Key: "port", Msg: `"99999" must be a port number from 1 to 65535`},
		{Key: "server", Msg: "server and port disagree"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Validate = %q, want %q (Spec.Check runs after a value failed its own check)", got, want)
	}
	if len(saw) != 1 {
		t.Fatalf("Spec.Check ran %d times, want 1", len(saw))
	}
	s := saw[0]
	if s.Path != "mypath" || s.Kind != "k" || s.Get("port") != "99999" || s.Challenge() != solve.HTTP01 {
		t.Errorf("Spec.Check saw path %q kind %q port %q challenge %q", s.Path, s.Kind, s.Get("port"), s.Challenge())
	}
}

func TestCheckListen(t *testing.T) {
	tests := []struct {
		addr    string
		wantErr string // substring; "" for valid
	}{
		{":80", ""},
		{":1", ""},
		{":65535", ""},
		{"192.0.2.1:80", ""},
		{"[::]:443", ""},
		{"[2001:db8::1]:443", ""},
		{"localhost:8080", ""},
		{"unix:/run/detour/http.sock", ""},
		{"unix:/", ""},
		{"unix:run/detour/http.sock", "a unix socket path must be absolute"},
		{"unix:./http.sock", "a unix socket path must be absolute"},
		{"unix:", "a unix socket path must be absolute"},
		{":0", `port "0" must be a number from 1 to 65535`},
		{":65536", `port "65536" must be a number from 1 to 65535`},
		{":-1", `port "-1" must be a number from 1 to 65535`},
		{":http", `port "http" must be a number from 1 to 65535`},
		{":", `port "" must be a number from 1 to 65535`},
		{"80", "is not host:port (missing port in address)"},
		{"", "is not host:port"},
		{"::1:80", "is not host:port (too many colons in address)"},
		{"host:80:90", "is not host:port"},
	}
	for _, tt := range tests {
		err := solve.CheckListen(tt.addr)
		checkErr(t, "CheckListen", tt.addr, err, tt.wantErr)
	}
}

func TestCheckAddress(t *testing.T) {
	tests := []struct {
		addr    string
		wantErr bool
	}{
		{"host:53", false},
		{"ns1.example.com:53", false},
		{"192.0.2.53:53", false},
		{"[2001:db8::53]:53", false},
		{":53", true},
		{"unix:/run/dns.sock", true},
		{"host", true},
		{"host:0", true},
		{"host:65536", true},
		{"", true},
	}
	for _, tt := range tests {
		err := solve.CheckAddress(tt.addr)
		want := ""
		if tt.wantErr {
			want = `must be a server's host:port, e.g. "192.0.2.53:53"`
		}
		checkErr(t, "CheckAddress", tt.addr, err, want)
	}
}

func TestCheckAbsolute(t *testing.T) {
	tests := []struct {
		name, example string
		want          string // the whole message; "" for valid
	}{
		{"/var/www", "", ""},
		{"/", "/x", ""},
		{"var/www", "", `"var/www" must be an absolute path`},
		{"./www", "/var/www", `"./www" must be an absolute path, e.g. "/var/www"`},
		{"", "", `"" must be an absolute path`},
		{"~/www", "", `"~/www" must be an absolute path`},
	}
	for _, tt := range tests {
		err := solve.CheckAbsolute(tt.name, tt.example)
		if tt.want == "" {
			if err != nil {
				t.Errorf("CheckAbsolute(%q, %q) = %v, want nil", tt.name, tt.example, err)
			}
			continue
		}
		if err == nil || err.Error() != tt.want {
			t.Errorf("CheckAbsolute(%q, %q) = %v, want %q", tt.name, tt.example, err, tt.want)
		}
	}
}

func TestCheckPositiveDuration(t *testing.T) {
	for _, v := range []string{"2m", "90s", "1ns", "1h30m", "0.5s"} {
		checkErr(t, "CheckPositiveDuration", v, solve.CheckPositiveDuration(v), "")
	}
	for _, v := range []string{"0", "0s", "-1s", "2", "1d", "", "soon"} {
		checkErr(t, "CheckPositiveDuration", v, solve.CheckPositiveDuration(v), "is not a positive duration")
	}
}

func TestCheckPort(t *testing.T) {
	for _, v := range []string{"1", "53", "443", "65535"} {
		checkErr(t, "CheckPort", v, solve.CheckPort(v), "")
	}
	for _, v := range []string{"0", "65536", "-1", "", "http", " 53", "53.0", "0x35"} {
		checkErr(t, "CheckPort", v, solve.CheckPort(v), "must be a port number from 1 to 65535")
	}
}

// checkErr fails unless err contains want ("": err is nil).
func checkErr(t *testing.T, fn, arg string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s(%q) = %v, want nil", fn, arg, err)
	case want != "" && err == nil:
		t.Errorf("%s(%q) = nil, want an error containing %q", fn, arg, want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("%s(%q) = %v, want an error containing %q", fn, arg, err, want)
	}
}

func TestSettings(t *testing.T) {
	values := map[string]string{
		"challenge": solve.DNS01,
		"timeout":   "90s",
		"bad":       "ninety",
		"list":      " a, b ,,c , ",
		"commas":    " , ,",
		"one":       "solo",
	}
	s := solve.NewSettings("p", "k", values)
	values["timeout"] = "1s" // NewSettings keeps a copy

	if s.Path != "p" || s.Kind != "k" {
		t.Errorf("Path, Kind = %q, %q; want p, k", s.Path, s.Kind)
	}
	if got := s.Get("timeout"); got != "90s" {
		t.Errorf("Get(timeout) = %q after the caller's map changed; want 90s", got)
	}
	if got := s.Get("unset"); got != "" {
		t.Errorf("Get(unset) = %q, want \"\"", got)
	}
	if got := s.Challenge(); got != solve.DNS01 {
		t.Errorf("Challenge() = %q, want %q", got, solve.DNS01)
	}

	durations := []struct {
		key  string
		want time.Duration
	}{{"timeout", 90 * time.Second}, {"bad", 0}, {"unset", 0}, {"list", 0}}
	for _, tt := range durations {
		if got := s.Duration(tt.key); got != tt.want {
			t.Errorf("Duration(%s) = %v, want %v", tt.key, got, tt.want)
		}
	}

	lists := []struct {
		key  string
		want []string
	}{{"list", []string{"a", "b", "c"}}, {"commas", nil}, {"unset", nil}, {"one", []string{"solo"}}}
	for _, tt := range lists {
		if got := s.List(tt.key); !slices.Equal(got, tt.want) {
			t.Errorf("List(%s) = %q, want %q", tt.key, got, tt.want)
		}
	}

	all := s.Values()
	if all["timeout"] != "90s" || len(all) != len(values) {
		t.Errorf("Values() = %v", all)
	}
	all["timeout"] = "mangled"
	all["new"] = "x"
	if s.Get("timeout") != "90s" || s.Get("new") != "" {
		t.Error("Values() returned the settings' own map")
	}

	var zero solve.Settings
	if zero.Get("x") != "" || zero.Challenge() != "" || zero.Duration("x") != 0 || zero.List("x") != nil || len(zero.Values()) != 0 {
		t.Error("the zero Settings is not empty")
	}
}

func TestSpecSettings(t *testing.T) {
	sp := testSpec()
	all := sp.AllSettings()
	if len(all) != len(sp.Settings)+1 {
		t.Fatalf("AllSettings() has %d settings, want %d", len(all), len(sp.Settings)+1)
	}
	c := all[0]
	if c.Key != solve.KeyChallenge || c.Type != solve.TypeEnum || c.Default != solve.HTTP01 || !slices.Equal(c.Values, sp.Challenges) || c.Doc == "" {
		t.Errorf("AllSettings()[0] = %+v, want the challenge enum defaulting to %s", c, solve.HTTP01)
	}
	for i, s := range sp.Settings {
		if all[i+1].Key != s.Key {
			t.Errorf("AllSettings()[%d] = %s, want %s (declaration order)", i+1, all[i+1].Key, s.Key)
		}
	}
	if cs := sp.ChallengeSetting(); cs.Key != c.Key || cs.Default != c.Default || !slices.Equal(cs.Values, c.Values) {
		t.Error("ChallengeSetting() differs from AllSettings()[0]")
	}

	wantKeys := []string{"challenge", "listen", "timeout", "root", "mode", "server", "port", "dir", "note"}
	if got := sp.Keys(); !slices.Equal(got, wantKeys) {
		t.Errorf("Keys() = %v, want %v", got, wantKeys)
	}

	for _, key := range wantKeys {
		s, ok := sp.Setting(key)
		if !ok || s.Key != key {
			t.Errorf("Setting(%q) = %+v, %v", key, s, ok)
		}
	}
	if s, ok := sp.Setting("root"); !ok || !s.Required || s.Type != solve.TypePath || s.Example != "/var/www" {
		t.Errorf("Setting(root) = %+v, %v", s, ok)
	}
	if s, ok := sp.Setting("challenge"); !ok || s.Default != solve.HTTP01 {
		t.Errorf("Setting(challenge) = %+v, %v", s, ok)
	}
	for _, key := range []string{"nope", "kind", "", "Listen"} {
		if s, ok := sp.Setting(key); ok {
			t.Errorf("Setting(%q) = %+v, true; want not found", key, s)
		}
	}
}

func TestEnvAccount(t *testing.T) {
	ctx := context.Background()
	acct := solve.Account{URL: "https://ca.example/acct/1", Thumbprint: "thumb"}
	boom := errors.New("account file unreadable")

	t.Run("none", func(t *testing.T) {
		var env solve.Env
		_, err := env.AccountOf(ctx, "rfc2136")
		if !errors.Is(err, solve.ErrNoAccount) || !strings.Contains(err.Error(), "rfc2136") {
			t.Errorf("AccountOf = %v, want ErrNoAccount naming the kind", err)
		}
		u, err := env.AccountURL("rfc2136")(ctx)
		if u != "" || !errors.Is(err, solve.ErrNoAccount) {
			t.Errorf("AccountURL()() = %q, %v; want ErrNoAccount", u, err)
		}
	})
	t.Run("failing", func(t *testing.T) {
		env := solve.Env{Account: func(context.Context) (solve.Account, error) { return solve.Account{}, boom }}
		_, err := env.AccountOf(ctx, "rfc2136")
		if !errors.Is(err, boom) || errors.Is(err, solve.ErrNoAccount) {
			t.Errorf("AccountOf = %v, want the loader's error", err)
		}
	})
	t.Run("present", func(t *testing.T) {
		env := solve.Env{Account: func(context.Context) (solve.Account, error) { return acct, nil }}
		got, err := env.AccountOf(ctx, "rfc2136")
		if err != nil || got != acct {
			t.Errorf("AccountOf = %+v, %v; want %+v", got, err, acct)
		}
		u, err := env.AccountURL("rfc2136")(ctx)
		if err != nil || u != acct.URL {
			t.Errorf("AccountURL()() = %q, %v; want %q", u, err, acct.URL)
		}
	})
}

func TestBuilt(t *testing.T) {
	boom := errors.New("bad options")

	var typedNil *solve.TXT
	s, err := solve.Built(typedNil, boom)
	if s != nil || !errors.Is(err, boom) {
		t.Errorf("Built(nil *TXT, err) = %#v, %v; want a nil Solver and the error", s, err)
	}
	s, err = solve.Built(solve.NewTXT(solve.TXTOptions{})) // no Records: an error
	if s != nil || err == nil {
		t.Errorf("Built(NewTXT(no records)) = %#v, %v; want a nil Solver and an error", s, err)
	}

	sv, err := solve.NewTXT(solve.TXTOptions{Records: &fakeRecords{}})
	if err != nil {
		t.Fatal(err)
	}
	s, err = solve.Built(sv, nil)
	if err != nil || s != solve.Solver(sv) {
		t.Errorf("Built(solver, nil) = %#v, %v; want the solver", s, err)
	}
}
