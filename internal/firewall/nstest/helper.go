package nstest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Environment of a helper process.
const (
	envHelper       = "DETOUR_NSTEST_HELPER"        // the role's name
	envHelperConfig = "DETOUR_NSTEST_HELPER_CONFIG" // its configuration, JSON
)

// How long Start waits for the helper's line, and a stopped helper for
// its exit, before killing it. Tests shorten them.
var (
	helperStartTimeout = time.Minute
	helperStopTimeout  = 30 * time.Second
)

// Helper is a role this test binary plays in a process of its own inside
// a namespace. A whole process is needed where a server dials from
// goroutines on any OS thread, as Pebble's validation authority does: only
// the thread that entered a namespace is in it (see In). Start runs the
// test binary again with `ip netns exec` and the role's name and
// configuration in its environment; RunIfHelper, called first in
// TestMain, finds them there and serves.
type Helper[C, I any] struct {
	// Name tells the roles of one test binary apart.
	Name string
	// Serve starts serving what config asks for, in the helper process,
	// and returns what the test learns (Start's result, sent as one line
	// of JSON) and a function that stops serving. ctx ends when the test
	// lets the helper go.
	Serve func(ctx context.Context, config C) (I, func() error, error)
}

// RunIfHelper plays h and exits when this process is h's helper;
// otherwise it returns at once. TestMain calls it before anything else.
func (h Helper[C, I]) RunIfHelper() {
	if name, ok := os.LookupEnv(envHelper); !ok || name != h.Name {
		return
	}
	if err := h.serve(); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", h.Name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serve serves until standard input closes or a signal comes.
func (h Helper[C, I]) serve() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	var config C
	if err := json.Unmarshal([]byte(os.Getenv(envHelperConfig)), &config); err != nil {
		return fmt.Errorf("reading its configuration: %w", err)
	}
	info, closeFn, err := h.Serve(ctx, config)
	if err != nil {
		return err
	}
	err = json.NewEncoder(os.Stdout).Encode(info)
	if err == nil {
		<-ctx.Done()
	}
	return errors.Join(err, closeFn())
}

// Start runs h's helper in ns with config and returns what it serves. The
// helper stops when the test ends (its standard input closes); a helper
// that fails then, or does not start, fails the test with its output.
func (h Helper[C, I]) Start(t testing.TB, ns *NS, config C) I {
	t.Helper()
	cfg, err := json.Marshal(config)
	if err != nil {
		t.Fatalf("encoding the configuration of helper %s: %v", h.Name, err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), envHelper+"="+h.Name, envHelperConfig+"="+string(cfg))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder // read only after Wait
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting helper %s in %s: %v", h.Name, ns.Name, err)
	}
	type read struct {
		line []byte
		err  error
	}
	lines := make(chan read, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadBytes('\n')
		lines <- read{line, err}
	}()
	var r read
	select {
	case r = <-lines:
	case <-time.After(helperStartTimeout):
		_ = cmd.Process.Kill()
		<-lines
		r.err = fmt.Errorf("it printed nothing within %s: killed", helperStartTimeout)
	}
	var info I
	if r.err == nil {
		if err := json.Unmarshal(r.line, &info); err != nil {
			r.err = fmt.Errorf("it said %q: %w", r.line, err)
		}
	}
	if r.err != nil {
		_ = cmd.Process.Kill()
		werr := cmd.Wait()
		t.Fatalf("helper %s did not start in %s: %v (%v)\n%s", h.Name, ns.Name, r.err, werr, stderr.String())
	}
	t.Cleanup(func() {
		stdin.Close()
		if err := waitFor(cmd, helperStopTimeout); err != nil {
			t.Errorf("helper %s in %s: %v\n%s", h.Name, ns.Name, err, stderr.String())
		}
	})
	return info
}

// waitFor waits for cmd to exit, killing it after d.
func waitFor(cmd *exec.Cmd, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("still running %s after its standard input closed: killed", d)
	}
}
