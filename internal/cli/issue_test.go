package cli_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestIssueThenRenew issues a one-off certificate from flags, renews it from
// its record alone, and checks that a renewal which is not due does nothing.
func TestIssueThenRenew(t *testing.T) {
	t.Parallel()
	const name = "a.detour.test"
	env := newEnv(t, name)
	state, cfg := t.TempDir(), emptyConfig(t)

	r := mustRun(t, oneOff(env, cfg, state, "-d", name, "-d", "127.0.0.1")...)
	wantIn(t, "issue output", r.stdout, "version 1", state+"/live/"+name+"/fullchain.pem", state+"/live/"+name+"/privkey.pem")
	checkCovers(t, checkLive(t, state, name), name, "127.0.0.1")
	if got := liveTarget(t, state, name); got != "cert1.pem" {
		t.Errorf("live cert.pem -> %s, want cert1.pem", got)
	}

	// The record supplies CA, roots, account, profile and path.
	r = mustRun(t, "--config", cfg, "--state-dir", state, "renew", "--force")
	wantIn(t, "renew --force output", r.stdout, name+": version 2")
	checkCovers(t, checkLive(t, state, name), name, "127.0.0.1")
	if got, want := archiveCerts(t, state, name), []string{"cert1.pem", "cert2.pem"}; !slices.Equal(got, want) {
		t.Errorf("archive holds %v, want %v", got, want)
	}
	if got := liveTarget(t, state, name); got != "cert2.pem" {
		t.Errorf("live cert.pem -> %s, want cert2.pem", got)
	}

	r = mustRun(t, "--config", cfg, "--state-dir", state, "renew")
	wantIn(t, "renew output", r.stdout, "not due")
	if strings.Contains(r.stdout, "version") {
		t.Errorf("renew of a certificate not due issued one:\n%s", r.stdout)
	}
	if got := archiveCerts(t, state, name); len(got) != 2 {
		t.Errorf("archive holds %v after a renewal that was not due", got)
	}

	r = mustRun(t, "--config", cfg, "--state-dir", state, "status", "--json")
	var rows []struct {
		Name        string    `json:"name"`
		Identifiers []string  `json:"identifiers"`
		Version     int       `json:"version"`
		DaysLeft    float64   `json:"days_left"`
		RenewAt     time.Time `json:"renew_at"`
		LastOK      *bool     `json:"last_ok"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	if len(rows) != 1 {
		t.Fatalf("status --json lists %d certificates, want 1:\n%s", len(rows), r.stdout)
	}
	row := rows[0]
	if row.Name != name || len(row.Identifiers) != 2 || row.Version != 2 {
		t.Errorf("status: name %q, identifiers %v, version %d; want %s, 2 identifiers, version 2", row.Name, row.Identifiers, row.Version, name)
	}
	if row.DaysLeft <= 0 {
		t.Errorf("status: days_left %v, want > 0", row.DaysLeft)
	}
	if !row.RenewAt.After(time.Now()) {
		t.Errorf("status: renew_at %v is not in the future", row.RenewAt)
	}
	if row.LastOK == nil || !*row.LastOK {
		t.Errorf("status: last_ok %v, want true", row.LastOK)
	}

	r = mustRun(t, "--config", cfg, "--state-dir", state, "list")
	wantIn(t, "list output", r.stdout, name, "127.0.0.1")
}

// TestIssueTLSALPN issues through standalone tls-alpn-01 for a name and an
// IP address (RFC 8737, RFC 8738).
func TestIssueTLSALPN(t *testing.T) {
	t.Parallel()
	const name = "alpn.detour.test"
	env := newEnv(t, name)
	state, cfg := t.TempDir(), emptyConfig(t)
	r := mustRun(t, oneOff(env, cfg, state, "-d", name, "-d", "127.0.0.1",
		"--path", "standalone-tls-alpn", "--tls-addr", env.TLSAddr)...)
	wantIn(t, "issue output", r.stdout, "version 1")
	checkCovers(t, checkLive(t, state, name), name, "127.0.0.1")
	rec := loadRecord(t, state, name)
	if len(rec.Paths) != 1 || rec.Paths[0].Name != "standalone-tls-alpn" || rec.Paths[0].Settings["listen"] != env.TLSAddr {
		t.Errorf("record paths %+v, want standalone-tls-alpn listening on %s", rec.Paths, env.TLSAddr)
	}
	mustRun(t, "--config", cfg, "--state-dir", state, "renew", "--force")
	if got := liveTarget(t, state, name); got != "cert2.pem" {
		t.Errorf("live cert.pem -> %s after renewal, want cert2.pem", got)
	}
}

// TestIssueWildcardNeedsDNS01 checks that a wildcard with an http-01 path
// fails before the CA is contacted, saying dns-01 is needed. The CA URL
// points at a closed port, so contacting it would fail differently.
func TestIssueWildcardNeedsDNS01(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	r := run(t, "--config", emptyConfig(t), "--state-dir", state, "issue", "-d", "*.x.detour.test",
		"--path", "standalone-http", "--http-addr", "127.0.0.1:0",
		"--ca", "https://127.0.0.1:1/dir", "--agree-tos", "--profile", "shortlived")
	if r.code != 1 {
		t.Fatalf("want exit 1: %v", r)
	}
	wantIn(t, "stderr", r.stderr, "*.x.detour.test", "dns-01")
	if strings.Contains(r.stderr, "127.0.0.1:1") {
		t.Errorf("the CA was contacted:\n%s", r.stderr)
	}
}

// TestIssueIDN checks that a Unicode name is issued and recorded as its
// A-label.
func TestIssueIDN(t *testing.T) {
	t.Parallel()
	const alabel = "xn--bcher-kva.detour.test"
	env := newEnv(t, alabel)
	state, cfg := t.TempDir(), emptyConfig(t)
	r := mustRun(t, oneOff(env, cfg, state, "-d", "bücher.detour.test")...)
	wantIn(t, "issue output", r.stdout, alabel)
	rec := loadRecord(t, state, alabel)
	if !slices.Equal(rec.Identifiers, []string{alabel}) {
		t.Errorf("record identifiers %v, want [%s]", rec.Identifiers, alabel)
	}
	checkCovers(t, checkLive(t, state, alabel), alabel)
}
