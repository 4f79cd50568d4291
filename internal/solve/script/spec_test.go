package script_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/kinds"
	"github.com/detour-acme/detour/internal/solve/script"
)

// TestConfig: a [path.NAME] table of kind "exec" is validated by the
// spec: the error names the file, the table and the key to change.
func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name, table string
		want        []string // nil: valid
	}{
		{name: "http-01", table: `auth = "/etc/detour/hooks/publish"
cleanup = "/etc/detour/hooks/unpublish"
timeout = "30s"`},
		{name: "dns-01", table: `challenge = "dns-01"
auth = "/etc/detour/hooks/publish"
propagation_timeout = "5m"`},
		{name: "auth missing", table: `cleanup = "/etc/detour/hooks/unpublish"`,
			want: []string{"detour.toml:", "path.hook", "auth is missing", `kind "exec" needs it`}},
		{name: "auth relative", table: `auth = "hooks/publish"`, want: []string{"auth", "must be the absolute path"}},
		{name: "auth a command line", table: `auth = "/usr/bin/curl -d \"$CERTBOT_VALIDATION\" https://cdn"`,
			want: []string{"auth", "without a shell", "put the command in an executable script"}},
		{name: "cleanup a pipeline", table: "auth = \"/bin/true\"\ncleanup = \"/bin/echo done | /usr/bin/logger\"", want: []string{"cleanup", "without a shell"}},
		{name: "tls-alpn-01", table: "challenge = \"tls-alpn-01\"\nauth = \"/bin/true\"", want: []string{"challenge", `"http-01" or "dns-01"`}},
		{name: "timeout", table: "auth = \"/bin/true\"\ntimeout = \"soon\"", want: []string{"timeout", "not a positive duration"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "detour.toml")
			doc := "[path.hook]\nkind = \"exec\"\n" + tc.table + "\n"
			if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := config.Parse(file, []byte(doc))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("config.Parse: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("config.Parse accepts\n%s", doc)
			}
			wantIn(t, "the configuration error", err.Error(), tc.want...)
		})
	}
}

// TestRegistered: the kind is in the one list, answers http-01 (the
// default) and dns-01, and its defaults are the documented ones.
func TestRegistered(t *testing.T) {
	sp, ok := kinds.Lookup(script.Kind)
	if !ok {
		t.Fatalf("kind %q is not in the registry", script.Kind)
	}
	if got := sp.Challenges; len(got) != 2 || got[0] != solve.HTTP01 || got[1] != solve.DNS01 {
		t.Errorf("challenges %v, want http-01, dns-01", got)
	}
	v := sp.WithDefaults(map[string]string{"auth": "/bin/true"})
	if v[solve.KeyChallenge] != solve.HTTP01 || v["timeout"] != "2m" {
		t.Errorf("defaults %v, want challenge http-01 and timeout 2m", v)
	}
	if sp.Window != nil {
		t.Error("the exec kind takes a firewall window; its hooks may publish anywhere, not on this host's port 80")
	}
}
