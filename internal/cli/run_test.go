package cli_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/testenv"
)

// briefEnv is newEnv with a CA whose "brief" profile issues certificates of
// validity, so that the agent renews every few seconds.
func briefEnv(t *testing.T, validity time.Duration, names ...string) *testenv.Env {
	t.Helper()
	env := testenv.New(t, testenv.Options{KeepPorts: true, CA: sandbox.CAOptions{
		Profiles:       map[string]sandbox.Profile{"brief": {Description: "seconds", Validity: validity}},
		DefaultProfile: "brief",
	}})
	for _, n := range names {
		env.AddName(n)
	}
	envs.Store(t, env)
	t.Cleanup(func() { envs.Delete(t) })
	return env
}

// lockedBuffer is a bytes.Buffer safe to read while a process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// agentProc is a `detour run` subprocess whose log can be read while it
// runs.
type agentProc struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan error
}

// startAgent starts bin with args (plus the self-check arguments of the
// test's environment).
func startAgent(t *testing.T, bin string, args ...string) *agentProc {
	t.Helper()
	if env, ok := envs.Load(t); ok {
		args = append(args, selfCheckArgs(env.(*testenv.Env))...)
	}
	p := &agentProc{stderr: &lockedBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.CommandContext(t.Context(), bin, args...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	return p
}

// waitLog polls the process's log until it holds sub.
func (p *agentProc) waitLog(t *testing.T, sub string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.stderr.String(), sub) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q logged within %v\n--- stderr:\n%s", sub, timeout, p.stderr)
		}
		time.Sleep(time.Millisecond) // polling the log of another process
	}
}

// waitRecord polls name's record until cond holds or timeout passes.
func waitRecord(t *testing.T, state, name string, timeout time.Duration, p *agentProc, cond func(store.Record) bool) store.Record {
	t.Helper()
	st, err := store.NewFS(state, store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for {
		rec, err := st.LoadRecord(t.Context(), name)
		if err == nil && cond(rec) {
			return rec
		}
		select {
		case err := <-p.done:
			t.Fatalf("detour run exited (%v) while waiting\n--- stderr:\n%s", err, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the record of %s is %+v (%v)\n--- stderr:\n%s", timeout, name, rec, err, p.stderr)
		}
		time.Sleep(50 * time.Millisecond) // polling the store: the agent runs in another process
	}
}

// stopProcess sends SIGTERM and requires a clean exit.
func stopProcess(t *testing.T, p *agentProc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("detour run exited with %v after SIGTERM\n--- stderr:\n%s", err, p.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("detour run did not stop within 30s of SIGTERM\n--- stderr:\n%s", p.stderr)
	}
}

// The crash-safety acceptance test of the agent: `detour run` renewing a
// certificate of a few seconds again and again is killed with SIGKILL at
// random moments, 20 times. After every kill live/ holds a key pair that
// matches; after the last, a restarted agent finishes what was interrupted
// and completes a renewal, and leaves nothing behind when stopped.
func TestRunSIGKILL(t *testing.T) {
	t.Parallel()
	const name = "agent-kill.detour.test"
	bin := buildDetour(t)
	env := briefEnv(t, 3*time.Second, name)
	state, cfg := t.TempDir(), emptyConfig(t)
	runBin(t, bin, oneOff(env, cfg, state, "-d", name, "--profile", "brief")...)
	checkLive(t, state, name)
	run := []string{"--config", cfg, "--state-dir", state, "run"}

	// Half the kills land at a random moment of the agent's life, half at a
	// random moment shortly after a renewal starts, so that both the idle
	// agent and every stage of a renewal are hit.
	const trials = 20
	killedDuring, renewals := 0, 0
	for i := range trials {
		before := loadRecord(t, state, name).Version
		p := startAgent(t, bin, run...)
		var delay time.Duration
		if i%2 == 0 {
			delay = time.Duration(100+rand.IntN(2900)) * time.Millisecond
			time.Sleep(delay) // the kill lands at a random moment: that is the test
		} else {
			// A renewal against the local CA takes some 20 ms.
			p.waitLog(t, "msg=renewing", 20*time.Second)
			delay = time.Duration(rand.IntN(20)) * time.Millisecond
			time.Sleep(delay) // a random moment inside the renewal
		}
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Fatalf("trial %d: %v", i, err)
		}
		err := <-p.done
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("trial %d: detour run ended with %v before the kill\n--- stderr:\n%s", i, err, p.stderr)
		}
		if _, err := loadLive(state, name); err != nil {
			t.Fatalf("trial %d (killed after %v): %v\n%s\n--- stderr:\n%s", i, delay, err, describeLive(state, name), p.stderr)
		}
		if strings.Contains(lastLine(p.stderr.String(), "msg=renewing", "msg=renewed"), "msg=renewing") {
			killedDuring++
		}
		renewals += loadRecord(t, state, name).Version - before
	}
	t.Logf("%d of %d kills landed during a renewal; %d renewals completed across the trials", killedDuring, trials, renewals)
	if killedDuring < trials/4 {
		t.Errorf("only %d kills landed during a renewal", killedDuring)
	}

	// A last agent: finishes what the kills left and renews again. The
	// temporary files of writes the kills cut short are swept once older
	// than a minute (younger ones could be another process's write):
	// age them.
	temps := tempFiles(t, state)
	aged := time.Now().Add(-2 * time.Minute)
	for _, p := range temps {
		if err := os.Chtimes(p, aged, aged); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d temporary files left by the kills", len(temps))
	before := loadRecord(t, state, name).Version
	p := startAgent(t, bin, run...)
	rec := waitRecord(t, state, name, 30*time.Second, p, func(r store.Record) bool { return r.Version > before && r.Last != nil && r.Last.OK })
	stopProcess(t, p)
	leaf := checkLive(t, state, name)
	if got := leaf.SerialNumber.Text(16); got != loadRecord(t, state, name).Serial && rec.Version == loadRecord(t, state, name).Version {
		t.Errorf("live serial %s does not match the record's %s", got, loadRecord(t, state, name).Serial)
	}
	if m, _ := filepath.Glob(filepath.Join(state, "pending", "*")); len(m) > 0 {
		t.Errorf("unfinished work left after a clean stop: %v", m)
	}
	if left := tempFiles(t, state); len(left) > 0 {
		t.Errorf("temporary files left after a clean stop: %v", left)
	}
	if _, err := os.Stat(filepath.Join(state, "agent.sock")); !os.IsNotExist(err) {
		t.Errorf("status socket left behind: %v", err)
	}
	st, err := store.NewFS(state, store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := st.TryLock(t.Context(), name)
	if err != nil {
		t.Fatalf("the certificate lock is still held: %v", err)
	}
	_ = unlock()
}

// tempFiles lists the store's temporary files (".tmp-" names) under dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// lastLine returns the last line of log containing any of subs.
func lastLine(log string, subs ...string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		for _, s := range subs {
			if strings.Contains(lines[i], s) {
				return lines[i]
			}
		}
	}
	return ""
}

// configFor writes a config file for env: its CA, one standalone path on
// the CA's validation port, and the certificates certs (TOML fragments).
func configFor(t *testing.T, env *testenv.Env, state, file string, certs ...string) {
	t.Helper()
	writeSandboxConfig(t, env, state, file, map[string]string{"web": fmt.Sprintf("kind = \"standalone\"\nlisten = %q", env.HTTPAddr)}, certs...)
}

// statusJSON runs `detour status --json`.
func statusJSON(t *testing.T, bin, cfg string) []map[string]any {
	t.Helper()
	out, err := exec.Command(bin, "--config", cfg, "status", "--json").Output()
	if err != nil {
		t.Fatalf("detour status: %v", err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("detour status --json: %v\n%s", err, out)
	}
	return rows
}

// The agent issues what the config lists, `detour status` reads the running
// agent, SIGHUP with a broken config keeps the old plan (and says why),
// SIGHUP with a fixed config adds the new certificate, and SIGTERM stops it
// cleanly.
func TestRunReloadAndStatus(t *testing.T) {
	t.Parallel()
	const one, two = "run-one.detour.test", "run-two.detour.test"
	bin := buildDetour(t)
	env := briefEnv(t, time.Hour, one, two)
	state := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "detour.toml")
	certOne := fmt.Sprintf("domains = [%q]\npaths = [\"web\"]", one)
	configFor(t, env, state, cfg, certOne)
	p := startAgent(t, bin, "--config", cfg, "run")
	waitRecord(t, state, one, 30*time.Second, p, func(r store.Record) bool { return r.Version == 1 })

	rows := statusJSON(t, bin, cfg)
	if len(rows) != 1 || rows[0]["name"] != one || rows[0]["source"] != "agent" {
		t.Errorf("status = %v, want %s from the agent", rows, one)
	}

	// A broken config: the agent keeps running with the old plan.
	if err := os.WriteFile(cfg, []byte("state_dir = 42\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "reloading the config failed", 10*time.Second)
	configFor(t, env, state, cfg, certOne, fmt.Sprintf("domains = [%q]\npaths = [\"web\"]", two))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitRecord(t, state, two, 30*time.Second, p, func(r store.Record) bool { return r.Version == 1 })
	if rows := statusJSON(t, bin, cfg); len(rows) != 2 {
		t.Errorf("status after reload lists %d certificates, want 2", len(rows))
	}
	stopProcess(t, p)
	checkLive(t, state, one)
	checkLive(t, state, two)
	if rows := statusJSON(t, bin, cfg); len(rows) != 2 || rows[0]["source"] != "store" {
		t.Errorf("status without the agent = %v, want 2 rows from the store", rows)
	}
}
