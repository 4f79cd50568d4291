package script

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/solve"
)

// Bounds of what a hook's output may take.
const (
	// maxOutput is how much of each of standard output and standard
	// error is kept (CERTBOT_AUTH_OUTPUT included); the rest is counted
	// and dropped.
	maxOutput = 64 << 10
	// maxLogged is how much of each the log and an error message show.
	maxLogged = 2 << 10
	// waitDelay is how long a hook that has exited (or was stopped) may
	// leave a process of its own holding its output open.
	waitDelay = 2 * time.Second
)

// errTimeout is the cause of a hook's own deadline.
var errTimeout = errors.New("hook timeout")

// HookError is a hook that failed: it could not start, exited non-zero or
// ran past its timeout.
type HookError struct {
	// Hook is "auth" or "cleanup".
	Hook string
	// Command is the executable run.
	Command string
	// ExitCode is its exit status; -1 when it did not start or was
	// stopped.
	ExitCode int
	// Stderr is what it wrote on standard error, trimmed and bounded.
	Stderr string
	// Timeout is set when it was stopped after running that long.
	Timeout time.Duration
	// Err is the cause.
	Err error
}

func (e *HookError) Error() string {
	var msg string
	switch {
	case e.Timeout > 0:
		msg = fmt.Sprintf("the %s hook %s did not finish within %s and was stopped; make it finish sooner, or raise timeout", e.Hook, e.Command, e.Timeout)
	case e.ExitCode >= 0:
		msg = fmt.Sprintf("the %s hook %s failed with exit code %d", e.Hook, e.Command, e.ExitCode)
	default:
		msg = fmt.Sprintf("running the %s hook %s: %v", e.Hook, e.Command, e.Err)
	}
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// Unwrap returns the cause.
func (e *HookError) Unwrap() error { return e.Err }

// LogValue implements slog.LogValuer.
func (e *HookError) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("hook", e.Hook), slog.String("command", e.Command), slog.Int("exit_code", e.ExitCode)}
	if e.Timeout > 0 {
		attrs = append(attrs, slog.Duration("timeout", e.Timeout))
	}
	if e.Stderr != "" {
		attrs = append(attrs, slog.String("stderr", e.Stderr))
	}
	return slog.GroupValue(append(attrs, slog.String("error", e.Err.Error()))...)
}

// run runs the hook role (the executable command) for ch with vars added
// to the inherited environment, and returns its standard output, trimmed
// and bounded. Its output goes to the log either way.
func (h *hooks) run(ctx context.Context, role, command string, vars []string, ch solve.Challenge) (string, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, h.timeout, errTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, command)
	cmd.Env = append(h.inherited(), vars...)
	var stdout, stderr output
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = waitDelay
	ownGroup(cmd)
	start := time.Now()
	err := cmd.Run()
	attrs := []any{"hook", role, "command", command, "identifier", ch.Identifier.Value, "challenge", ch.Type,
		"elapsed", time.Since(start).Round(time.Millisecond)}
	if s := stdout.logged(); s != "" {
		attrs = append(attrs, "stdout", s)
	}
	if s := stderr.logged(); s != "" {
		attrs = append(attrs, "stderr", s)
	}
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		// It exited 0; a process it started still holds the output.
		h.log.WarnContext(ctx, "a process the hook started keeps its output open; redirect the output of background processes", attrs...)
		err = nil
	}
	if err == nil {
		h.log.InfoContext(ctx, role+" hook ran", attrs...)
		return stdout.kept(), nil
	}
	he := &HookError{Hook: role, Command: command, ExitCode: -1, Stderr: stderr.logged(), Err: err}
	var ee *exec.ExitError
	switch {
	case context.Cause(ctx) == errTimeout:
		he.Timeout = h.timeout
	case errors.As(err, &ee):
		he.ExitCode = ee.ExitCode()
	}
	h.log.WarnContext(ctx, role+" hook failed", append(attrs, "error", he)...)
	return stdout.kept(), he
}

// inherited returns the environment the hooks inherit, without the
// variables Detour sets itself: one that does not apply to a run (the
// token of a dns-01 answer) must not come from Detour's own environment.
func (h *hooks) inherited() []string {
	env := os.Environ()
	if h.environ != nil {
		env = h.environ()
	}
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return slices.Contains(envNames, name)
	})
}

// output keeps the first maxOutput bytes written to it and counts the
// rest, so that a hook that prints without end neither blocks nor fills
// memory.
type output struct {
	buf     []byte
	dropped int64
}

func (o *output) Write(p []byte) (int, error) {
	n := min(len(p), maxOutput-len(o.buf))
	o.buf = append(o.buf, p[:n]...)
	o.dropped += int64(len(p) - n)
	return len(p), nil
}

// kept returns what was kept, trimmed.
func (o *output) kept() string {
	return strings.TrimSpace(strings.ToValidUTF8(string(o.buf), "\uFFFD"))
}

// logged returns what was kept, trimmed and cut to maxLogged bytes for
// the log and messages, saying how much more there was.
func (o *output) logged() string {
	s := o.kept()
	more := o.dropped
	if len(s) > maxLogged {
		cut := maxLogged
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		more += int64(len(s) - cut)
		s = s[:cut]
	}
	if more > 0 {
		s += fmt.Sprintf(" … (%d bytes more)", more)
	}
	return s
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// checkExecutable checks the hook role at path: a regular executable file
// that neither group nor others may change, in a directory they may not
// write to (unless it is sticky, as /tmp is). A warning, not an error,
// comes back for a hook owned by another user than root when Detour runs
// as root.
func checkExecutable(role, path string) (warning string, err error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		msg := fmt.Sprintf("the %s hook %s does not exist; set %s to the absolute path of an executable", role, path, role)
		if strings.ContainsAny(path, " \t") {
			msg += " (it runs without a shell: a command line with arguments belongs in a script)"
		}
		return "", errors.New(msg)
	case err != nil:
		return "", fmt.Errorf("checking the %s hook: %w", role, err)
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("the %s hook %s is not a regular file (%s); set %s to an executable file", role, path, fi.Mode().Type(), role)
	case fi.Mode()&0o111 == 0:
		return "", fmt.Errorf("the %s hook %s is not executable (mode %04o); chmod +x %s", role, path, fi.Mode().Perm(), path)
	case fi.Mode()&0o022 != 0:
		return "", fmt.Errorf("the %s hook %s is writable by group or others (mode %04o): they could change what Detour runs; chmod go-w %s",
			role, path, fi.Mode().Perm(), path)
	}
	dir := filepath.Dir(path)
	if di, err := os.Stat(dir); err == nil && di.Mode()&0o022 != 0 && di.Mode()&fs.ModeSticky == 0 {
		return "", fmt.Errorf("the directory %s of the %s hook is writable by group or others (mode %04o): they could replace the hook; chmod go-w %s",
			dir, role, di.Mode().Perm(), dir)
	}
	if uid, ok := owner(fi); ok && os.Geteuid() == 0 && uid != 0 {
		return fmt.Sprintf("the %s hook is owned by uid %d, not root, and Detour runs as root: that user can run any command as root through it; chown root %s",
			role, uid, path), nil
	}
	return "", nil
}
