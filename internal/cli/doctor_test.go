package cli_test

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/doctor"
)

// TestDoctor runs detour doctor against the sandbox CA and DNS: with the
// validation ports free it recommends standalone, and that configuration,
// appended unchanged, passes config check and issues; --staging orders
// through it at the CA's staging directory and stores nothing (and is
// refused for a CA without one); with the ports held by a process that is
// no web server, no path works without a change and the exit status is 1.
func TestDoctor(t *testing.T) {
	t.Parallel()
	const name, held = "doc.detour.test", "held-doc.detour.test"
	env := newEnv(t, name, held)
	state := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "detour.toml")
	writeSandboxConfig(t, env, state, cfg, nil)
	args := append([]string{"--config", cfg}, selfCheckArgs(env)...)

	r := mustRun(t, append(args, "doctor", "--json", name)...)
	var rep doctor.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, r.stdout)
	}
	if rep.Version != 1 || rep.CA == nil || !rep.CA.Reachable || len(rep.Names) != 1 || rep.Names[0].Name != name {
		t.Fatalf("report = %+v", rep)
	}
	for _, c := range rep.Names[0].Checks {
		if c.Name == "" || c.Status == "" || c.Summary == "" || c.Evidence == nil {
			t.Errorf("check %+v lacks a field", c)
		}
	}
	rec := rep.Recommendation
	if !rec.Ready || len(rec.Paths) != 1 || rec.Paths[0].Kind != "standalone" || rec.Paths[0].Challenge != "http-01" {
		t.Fatalf("recommendation = %+v\n%s", rec, r.stdout)
	}
	_, port, _ := net.SplitHostPort(env.HTTPAddr)
	if !strings.Contains(rec.TOML, `listen = ":`+port+`"`) {
		t.Errorf("the recommendation does not bind the port the CA validates on (%s):\n%s", port, rec.TOML)
	}
	// The text form names the ranking and prints the same configuration.
	r = mustRun(t, append(args, "doctor", name)...)
	wantIn(t, "doctor", r.stdout, "Paths, best first:", "works        standalone (http-01): port "+port+" is free", "impossible   webroot (http-01)",
		"Recommended configuration (works now", rec.TOML)

	// --staging: refused without a staging directory, then a dry run.
	r = run(t, append(args, "doctor", "--staging", name)...)
	if r.code != 2 || !strings.Contains(r.stderr, "has no staging directory") {
		t.Errorf("--staging without a staging directory: %v", r)
	}
	base, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stg := filepath.Join(t.TempDir(), "staging.toml")
	withStaging := strings.Replace(string(base), "[ca.sandbox]\n", "[ca.sandbox]\nstaging = \""+env.CA.DirectoryURL()+"\"\n", 1)
	if err := os.WriteFile(stg, []byte(withStaging), 0o600); err != nil {
		t.Fatal(err)
	}
	r = mustRun(t, append([]string{"--config", stg}, append(selfCheckArgs(env), "doctor", "--staging", name)...)...)
	wantIn(t, "doctor --staging", r.stderr, "staging directory", "validation", "finalize")
	wantIn(t, "doctor --staging", r.stdout, "dry run: doctor-staging would be issued")
	if _, err := os.Stat(filepath.Join(state, "live")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(state, "live"))
		if len(entries) != 0 {
			t.Errorf("--staging stored %v", entries)
		}
	}

	// The recommendation, appended unchanged, checks and issues.
	if err := os.WriteFile(cfg, append(base, []byte("\n"+rec.TOML)...), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "--config", cfg, "config", "check")
	r = mustRun(t, append(args, "issue")...)
	wantIn(t, "issue", r.stdout, name+": version 1")
	checkCovers(t, checkLive(t, state, name), name)

	// Doctor creates nothing, not even a state directory.
	none := filepath.Join(t.TempDir(), "none")
	mustRun(t, append(args, "--state-dir", none, "doctor", "--no-probe", name)...)
	if _, err := os.Stat(none); err == nil {
		t.Errorf("doctor created the state directory %s", none)
	}

	// Without names, the configuration's certificates are diagnosed, and
	// the recommendation lists paths for the certificate it has rather
	// than adding a second one.
	r = mustRun(t, append(args, "doctor", "--json", "--no-probe")...)
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Names) != 1 || rep.Names[0].Name != name {
		t.Errorf("doctor without names diagnosed %+v (%v)", rep.Names, err)
	}
	if toml := rep.Recommendation.TOML; strings.Contains(toml, "[[certificate]]\nname") || !strings.Contains(toml, "# In your [[certificate]] named \""+name+"\", set:") {
		t.Errorf("recommendation for a configured certificate:\n%s", toml)
	}

	// Both ports held by a process that is no web server: nothing works
	// without a change; the exit status says so.
	for _, addr := range []string{env.HTTPAddr, env.TLSAddr} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
	}
	r = run(t, append(args, "doctor", held)...)
	if r.code != 1 || !strings.Contains(r.stderr, "needs a change first") || !strings.Contains(r.stdout, "impossible   standalone (http-01)") ||
		!strings.Contains(r.stdout, "First make this change:") {
		t.Errorf("doctor with the ports held: %v", r)
	}

	// Bad input: no names anywhere, a key file that is not one.
	r = run(t, "--config", emptyConfig(t), "doctor")
	if r.code != 2 || !strings.Contains(r.stderr, "no names to diagnose") {
		t.Errorf("doctor without names: %v", r)
	}
	bad := writeFile(t, "bad.key", "zone x {};\n")
	r = run(t, append(args, "doctor", "--tsig-key-file", bad, name)...)
	if r.code != 2 || !strings.Contains(r.stderr, "bad.key holds no TSIG key") {
		t.Errorf("doctor with a bad key file: %v", r)
	}
}
