package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/plan"
	"github.com/detour-acme/detour/internal/store"
)

// TestRevocationNoticedFromCron: a revoked certificate is replaced by the
// cron path (detour renew, nothing due by its dates) as by the agent.
// `detour revoke NAME` marks the record and says how it will be replaced;
// a revocation Detour did not make is learnt from the CA's renewal window
// (ARI), which renew asks for once the last answer's Retry-After has
// passed.
func TestRevocationNoticedFromCron(t *testing.T) {
	t.Parallel()
	env := newEnv(t, "marked.revoked.detour.test", "elsewhere.revoked.detour.test")
	state, cfg := t.TempDir(), emptyConfig(t)
	base := []string{"--config", cfg, "--state-dir", state}

	mustRun(t, oneOff(env, cfg, state, "-d", "marked.revoked.detour.test")...)
	r := mustRun(t, append(base, "revoke", "marked.revoked.detour.test")...)
	wantIn(t, "revoke", r.stdout, "replaced by the next `detour renew`", "detour renew marked.revoked.detour.test")
	rows, _ := statusRows(t, base...)
	if row := rows["marked.revoked.detour.test"]; row.State != plan.StateRevoked || !row.Alert {
		t.Errorf("status after revoke: %+v, want revoked", row)
	}
	r = mustRun(t, append(base, "renew")...)
	wantIn(t, "renew", r.stdout, "marked.revoked.detour.test: version 2")

	// Revoked from elsewhere (by file, with the certificate's own key):
	// nothing in the record says so.
	const other = "elsewhere.revoked.detour.test"
	mustRun(t, oneOff(env, cfg, state, "-d", other)...)
	mustRun(t, append(base, "revoke", "--cert-file", filepath.Join(state, "live", other, "cert.pem"),
		"--key-file", filepath.Join(state, "live", other, "privkey.pem"), "--ca", env.CA.DirectoryURL(), "--ca-roots", env.RootsFile)...)
	r = mustRun(t, append(base, "renew")...)
	wantIn(t, "renew before the CA is asked again", r.stdout, "not due")
	// A day later: the window's Retry-After has long passed.
	file := filepath.Join(state, "renewal", other+".json")
	var rec store.Record
	data, err := os.ReadFile(file)
	if err != nil || json.Unmarshal(data, &rec) != nil || rec.ARI == nil {
		t.Fatalf("record: %v %s", err, data)
	}
	rec.ARI.Fetched, rec.ARI.RetryAfter = rec.ARI.Fetched.Add(-25*time.Hour), time.Now().Add(-time.Hour)
	data, _ = json.Marshal(rec)
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r = mustRun(t, append(base, "renew")...)
	wantIn(t, "renew after the Retry-After", r.stdout, other+": version 2")
	wantIn(t, "renew after the Retry-After", r.stderr, "the CA asks for this certificate to be replaced now")
}
