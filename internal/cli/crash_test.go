package cli_test

import (
	"bytes"
	"context"
	"errors"
	"github.com/detour-acme/detour/internal/testenv"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/store"
)

// buildDetour builds the detour binary into a temporary directory with the
// go command from PATH.
func buildDetour(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("this test builds the detour binary and needs the go command on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "detour")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, gobin, "build", "-o", bin, "github.com/detour-acme/detour/cmd/detour").CombinedOutput()
	if err != nil {
		t.Fatalf("building detour: %v\n%s", err, out)
	}
	return bin
}

// process is one detour subprocess.
type process struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan error
}

// start starts bin with args.
func start(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	p := &process{done: make(chan error, 1)}
	if env, ok := envs.Load(t); ok {
		args = append(args, selfCheckArgs(env.(*testenv.Env))...)
	}
	p.cmd = exec.CommandContext(t.Context(), bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	return p
}

// runBin runs bin with args to completion and fails the test unless it
// exits 0; it returns how long the process took.
func runBin(t *testing.T, bin string, args ...string) time.Duration {
	t.Helper()
	begin := time.Now()
	p := start(t, bin, args...)
	if err := <-p.done; err != nil {
		t.Fatalf("detour %s: %v\n--- stdout:\n%s--- stderr:\n%s", strings.Join(args, " "), err, &p.stdout, &p.stderr)
	}
	return time.Since(begin)
}

// TestSIGKILLDuringRenewal is the crash-safety acceptance test: a renewal
// killed with SIGKILL at any moment leaves a live certificate whose key
// matches its leaf, leaves no lock held, and the next renewal succeeds.
func TestSIGKILLDuringRenewal(t *testing.T) {
	t.Parallel()
	const name = "kill.detour.test"
	bin := buildDetour(t)
	env := newEnv(t, name)
	state, cfg := t.TempDir(), emptyConfig(t)
	renew := []string{"--config", cfg, "--state-dir", state, "renew", "--force"}

	runBin(t, bin, oneOff(env, cfg, state, "-d", name)...)
	checkLive(t, state, name)
	if v := loadRecord(t, state, name).Version; v != 1 {
		t.Fatalf("first issue stored version %d, want 1", v)
	}
	one := runBin(t, bin, renew...)
	checkLive(t, state, name)
	t.Logf("one renewal through the binary takes %v", one)

	const trials = 12
	killed := 0
	for i := range trials {
		// Spread the kills evenly over [0, 2*one): one random point in
		// each of trials equal slices.
		span := 2 * one
		delay := time.Duration((float64(i) + rand.Float64()) / trials * float64(span))
		p := start(t, bin, renew...)
		timer := time.NewTimer(delay)
		select {
		case err := <-p.done:
			timer.Stop()
			if err != nil {
				t.Fatalf("trial %d: renewal ended by itself with %v (before the kill at %v)\n--- stderr:\n%s", i, err, delay, &p.stderr)
			}
		case <-timer.C:
			if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
				t.Fatalf("trial %d: killing: %v", i, err)
			}
			err := <-p.done
			var ee *exec.ExitError
			switch {
			case errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL:
				killed++
			case err != nil:
				t.Fatalf("trial %d: renewal failed: %v\n--- stderr:\n%s", i, err, &p.stderr)
			}
		}
		leaf, err := loadLive(state, name)
		if err != nil {
			t.Fatalf("trial %d (killed after %v): %v\n%s", i, delay, err, describeLive(state, name))
		}
		checkCovers(t, leaf, name)
	}
	t.Logf("%d of %d renewals were killed before they finished", killed, trials)
	if killed == 0 {
		t.Errorf("no renewal was killed while running; the kill delays do not reach into the renewal")
	}

	before := loadRecord(t, state, name).Version
	runBin(t, bin, renew...)
	rec := loadRecord(t, state, name)
	if rec.Version <= before {
		t.Errorf("final renewal stored version %d, live was %d", rec.Version, before)
	}
	leaf := checkLive(t, state, name)
	if got := leaf.SerialNumber.Text(16); got != rec.Serial {
		t.Errorf("live leaf has serial %s, the record says %s", got, rec.Serial)
	}
	st, err := store.NewFS(state, store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := st.TryLock(t.Context(), name)
	if err != nil {
		t.Fatalf("the certificate lock is still held: %v", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(state, "live", name))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("live/%s/%s left behind after a successful renewal", name, e.Name())
		}
	}
}

// describeLive lists live/<name>: each entry and where a symlink points.
func describeLive(state, name string) string {
	dir := filepath.Join(state, "live", name)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	b.WriteString(dir + ":\n")
	for _, e := range ents {
		b.WriteString("  " + e.Name())
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			b.WriteString(" -> " + target)
		}
		b.WriteString("\n")
	}
	return b.String()
}
