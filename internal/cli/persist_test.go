package cli_test

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/sandbox"
)

// TestPersistRecord prints the dns-persist-01 record with persist-record,
// publishes exactly what it printed, and issues a name and its wildcard
// from a configuration whose only path is kind = "persist".
func TestPersistRecord(t *testing.T) {
	t.Parallel()
	const base = "persist.detour.test"
	env := newEnv(t)
	env.AddName("ns." + sandbox.Zone) // the zone's NS host, asked on the sandbox's port
	state := filepath.Join(t.TempDir(), "state")
	cfg := writeFile(t, "detour.toml", fmt.Sprintf(`
state_dir = %q
email = "persist@detour.test"
agree_tos = true
default_ca = "sandbox"

[ca.sandbox]
directory = %q
root_bundle = %q

[path.standing]
kind = "persist"
policy = "wildcard"
persist_until = "2999-12-31"

[[certificate]]
name = "persist"
domains = [%q, "*.%s"]
profile = "tlsserver"
paths = ["standing"]
`, state, env.CA.DirectoryURL(), env.RootsFile, base, base))

	// Not published yet: the record is printed, the check fails.
	r := run(t, "--config", cfg, "persist-record", base, "--wildcard", "--persist-until", "2999-12-31")
	if r.code != 1 {
		t.Fatalf("persist-record before publishing: %v", r)
	}
	line := regexp.MustCompile(`(?m)^_validation-persist\.` + regexp.QuoteMeta(base) + `\. IN TXT "([^"]+)"$`).FindStringSubmatch(r.stdout)
	if line == nil {
		t.Fatalf("no zone-file line in:\n%s", r.stdout)
	}
	value := line[1]
	t.Logf("persist-record printed:\n%s", r.stdout)
	wantIn(t, "persist-record output", r.stdout, "(draft-01)", "issuer domain name "+sandbox.DefaultCAAIdentity, "check: NOT live yet", "no TXT record")
	wantIn(t, "persist-record error", r.stderr, "publish the record above")
	if !regexp.MustCompile(`^pebble\.letsencrypt\.org; accounturi=https://127\.0\.0\.1:\d+/my-account/[0-9a-f]+; policy=wildcard; persistUntil=32503593600$`).MatchString(value) {
		t.Errorf("record value %q is not draft-01's issuer; accounturi; policy; persistUntil", value)
	}

	// Issuing now fails before any order, naming the same record.
	r = run(t, "--config", cfg, "issue")
	if r.code == 0 {
		t.Fatalf("issue without the record: %v", r)
	}
	wantIn(t, "issue error", r.stdout+r.stderr, "preflight", value)

	// Publish what was printed; the check passes; issuance needs no DNS change.
	env.DNS.AddTXT("_validation-persist."+base, value, time.Time{})
	r = mustRun(t, "--config", cfg, "persist-record", base, "--wildcard", "--persist-until", "2999-12-31")
	wantIn(t, "persist-record output", r.stdout, "check: live on every authoritative server", "ns.detour.test. ("+env.DNSAddr+")")

	before := env.DNS.TXT("_validation-persist." + base)
	r = mustRun(t, "--config", cfg, "issue")
	wantIn(t, "issue output", r.stdout, "persist: version 1")
	checkCovers(t, checkLive(t, state, "persist"), base, "*."+base)
	if after := env.DNS.TXT("_validation-persist." + base); !slices.Equal(before, after) {
		t.Errorf("the record changed during issuance: %v -> %v", before, after)
	}
	if got := env.DNS.TXT("_acme-challenge." + base); len(got) != 0 {
		t.Errorf("issuance wrote dns-01 records: %v", got)
	}

	// The same record answers the renewal.
	r = mustRun(t, "--config", cfg, "renew", "persist", "--force")
	wantIn(t, "renew output", r.stdout, "persist: version 2")
}

func TestPersistRecordBadInput(t *testing.T) {
	t.Parallel()
	cfg := emptyConfig(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"IP address", []string{"persist-record", "192.0.2.1"}, "dns-persist-01 validates DNS names only"},
		{"bad date", []string{"persist-record", "example.com", "--persist-until", "soon"}, `"soon" is not an RFC 3339 date`},
		{"past date", []string{"persist-record", "example.com", "--persist-until", "2020-01-01"}, "is in the past"},
		{"no name", []string{"persist-record"}, "name one DNS name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, append([]string{"--config", cfg, "--state-dir", t.TempDir()}, tt.args...)...)
			if r.code != 2 || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("want exit 2 and %q: %v", tt.want, r)
			}
		})
	}
}
