package cli_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/plan"
)

// statusRows runs `detour status --json` and returns the rows by name.
func statusRows(t *testing.T, args ...string) (map[string]plan.CertStatus, result) {
	t.Helper()
	r := run(t, append(args, "status", "--json")...)
	var rows []plan.CertStatus
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("status --json: %v\n%v", err, r)
	}
	out := map[string]plan.CertStatus{}
	for _, row := range rows {
		out[row.Name] = row
	}
	return out, r
}

// TestOneBadRecord: a truncated record and a stray copy in renewal/ affect
// only their own certificate. status lists the broken one with its file,
// the reason and the fix (and --check fails); renew renews every other
// one and rebuilds the record of a configured certificate from its live
// files; the agent starts.
func TestOneBadRecord(t *testing.T) {
	t.Parallel()
	env := newEnv(t, "a.bad.detour.test", "b.bad.detour.test", "c.bad.detour.test")
	state := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "detour.toml")
	writeSandboxConfig(t, env, state, cfg, map[string]string{"web": "kind = \"standalone\"\nlisten = \"" + env.HTTPAddr + "\""},
		"domains = [\"c.bad.detour.test\"]\npaths = [\"web\"]\nprofile = \"shortlived\"")
	for _, n := range []string{"a.bad.detour.test", "b.bad.detour.test"} {
		mustRun(t, oneOff(env, cfg, state, "-d", n)...)
	}
	mustRun(t, "--config", cfg, "issue", "c.bad.detour.test")
	renewal := filepath.Join(state, "renewal")
	if err := os.WriteFile(filepath.Join(renewal, "a.bad.detour.test.json"), []byte(`{"name": "a.bad`), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(renewal, "b.bad.detour.test.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(renewal, "b.bad.detour.test.old.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}

	rows, r := statusRows(t, "--config", cfg)
	if r.code != 0 {
		t.Fatalf("status: %v", r)
	}
	a := rows["a.bad.detour.test"]
	if a.State != plan.StateBroken || !a.Alert || !strings.Contains(a.Problem, filepath.Join(renewal, "a.bad.detour.test.json")) || !strings.Contains(a.Fix, "issue it again") {
		t.Errorf("a: %+v, want broken naming its file, with the fix", a)
	}
	if rows["b.bad.detour.test"].State != plan.StateOK || rows["c.bad.detour.test"].State != plan.StateOK || len(rows) != 3 {
		t.Errorf("rows = %+v, want b and c ok and the stray copy left out", rows)
	}
	wantIn(t, "status stderr", r.stderr, "b.bad.detour.test.old.json")
	r = run(t, "--config", cfg, "status", "--check")
	if r.code != 1 {
		t.Errorf("status --check: want exit 1: %v", r)
	}
	wantIn(t, "status --check", r.stdout+r.stderr, "a.bad.detour.test: broken", "fix:", "need attention", "a.bad.detour.test (broken)")

	// Another name renews; renewing everything renews all but a, which
	// fails with the fix.
	r = mustRun(t, "--config", cfg, "renew", "b.bad.detour.test", "--force")
	wantIn(t, "renew b", r.stdout, "b.bad.detour.test: version 2")
	r = run(t, "--config", cfg, "renew", "--force")
	if r.code != 1 {
		t.Fatalf("renew: want exit 1 for a: %v", r)
	}
	wantIn(t, "renew", r.stdout, "b.bad.detour.test: version 3", "c.bad.detour.test: version 2")
	wantIn(t, "renew", r.stderr, "a.bad.detour.test", "restore the file from a backup")

	// A configured certificate's record is rebuilt from live/ and the
	// configuration, without a new certificate; the bad file is kept.
	if err := os.WriteFile(filepath.Join(renewal, "c.bad.detour.test.json"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r = mustRun(t, "--config", cfg, "renew", "c.bad.detour.test")
	wantIn(t, "renew c", r.stdout, "not due")
	rec := loadRecord(t, state, "c.bad.detour.test")
	if rec.Version != 2 || rec.Serial == "" || len(rec.Paths) != 1 || rec.Paths[0].Name != "web" {
		t.Errorf("rebuilt record = %+v, want version 2 through path web", rec)
	}
	if kept, _ := filepath.Glob(filepath.Join(renewal, "c.bad.detour.test.json.broken-*")); len(kept) != 1 {
		t.Errorf("the unreadable record was not kept: %v", kept)
	}

	// The agent starts with a still broken, logs it with the fix and
	// shows it in its metrics.
	p := startAgent(t, buildDetour(t), "--config", cfg, "run", "--metrics-listen", "127.0.0.1:0")
	p.waitLog(t, "serving metrics", 30*time.Second)
	m := regexp.MustCompile(`msg="serving metrics" listen=(\S+)`).FindStringSubmatch(p.stderr.String())
	if m == nil {
		t.Fatalf("no metrics address logged:\n%s", p.stderr)
	}
	const gauge = `detour_certificate_record_broken{certificate="a.bad.detour.test"} 1`
	var body []byte
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get("http://" + m[1] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), gauge) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the agent applies its plan once serving
	}
	wantIn(t, "metrics", string(body), gauge)
	if strings.Contains(string(body), `detour_certificate_record_broken{certificate="b.bad.detour.test"}`) {
		t.Errorf("b, whose record is fine, is shown broken:\n%s", body)
	}
	wantIn(t, "agent log", p.stderr.String(), "a certificate record cannot be read", "a.bad.detour.test.json")
	stopProcess(t, p)
}

// TestBrokenLivePair: status and renew verify the live files, not the
// record: a garbage certificate, a dangling live link and a missing one
// are each reported as broken and renewed at once, with exit 0.
func TestBrokenLivePair(t *testing.T) {
	t.Parallel()
	env := newEnv(t, "garbage.live.detour.test", "dangling.live.detour.test", "missing.live.detour.test")
	state, cfg := t.TempDir(), emptyConfig(t)
	breakIt := map[string]func(name string) error{
		"garbage.live.detour.test": func(name string) error {
			return os.WriteFile(filepath.Join(state, "archive", name, "cert1.pem"), []byte("not a certificate\n"), 0o644)
		},
		"dangling.live.detour.test": func(name string) error {
			link := filepath.Join(state, "live", name)
			if err := os.Remove(link); err != nil {
				return err
			}
			return os.Symlink("../archive/"+name+"/.v7", link)
		},
		"missing.live.detour.test": func(name string) error { return os.Remove(filepath.Join(state, "live", name)) },
	}
	want := map[string]string{"garbage.live.detour.test": "does not hold a certificate", "dangling.live.detour.test": "does not exist", "missing.live.detour.test": "does not exist"}
	for name, f := range breakIt {
		mustRun(t, oneOff(env, cfg, state, "-d", name)...)
		if err := f(name); err != nil {
			t.Fatal(err)
		}
	}
	rows, r := statusRows(t, "--config", cfg, "--state-dir", state)
	if r.code != 0 {
		t.Fatalf("status: %v", r)
	}
	for name, problem := range want {
		if row := rows[name]; row.State != plan.StateBroken || !row.Alert || !strings.Contains(row.Problem, problem) {
			t.Errorf("%s: state %q, problem %q; want broken: %s", name, row.State, row.Problem, problem)
		}
	}
	r = mustRun(t, "--config", cfg, "--state-dir", state, "renew")
	for name := range want {
		wantIn(t, "renew", r.stdout, name+": version ")
		checkLive(t, state, name)
	}
	rows, _ = statusRows(t, "--config", cfg, "--state-dir", state)
	for name := range want {
		if rows[name].State != plan.StateOK {
			t.Errorf("%s after renew: %+v", name, rows[name])
		}
	}
}
