package firewall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Command is one command a backend runs: no shell is involved.
type Command struct {
	Name string   // the executable, looked up in PATH unless absolute
	Args []string // the arguments
	Env  []string // extra environment variables (KEY=value)
}

func (c Command) String() string {
	return strings.TrimSpace(c.Name + " " + strings.Join(c.Args, " "))
}

// Runner runs commands for the command-driven backends. Tests substitute
// one that records the command lines.
type Runner interface {
	// Run runs c and returns its standard output. A command that exits
	// non-zero returns a *CommandError.
	Run(ctx context.Context, c Command) ([]byte, error)
}

// CommandError is a command that failed: it could not start, or exited
// non-zero.
type CommandError struct {
	Command  Command
	ExitCode int    // -1 when it did not start or was killed
	Stderr   string // trimmed
	Err      error
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("running %s: %v", e.Command, e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// Unwrap returns the cause.
func (e *CommandError) Unwrap() error { return e.Err }

// ExecRunner runs commands with os/exec, with the process's environment
// plus the command's own variables.
type ExecRunner struct{}

// Run implements Runner.
func (ExecRunner) Run(ctx context.Context, c Command) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.Name, c.Args...)
	cmd.Env = append(os.Environ(), c.Env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	ce := &CommandError{Command: c, ExitCode: -1, Stderr: strings.TrimSpace(stderr.String()), Err: err}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ce.ExitCode = ee.ExitCode()
	}
	return stdout.Bytes(), ce
}

// notFound reports whether err says the command is not installed.
func notFound(err error) bool {
	return errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist)
}

// permissionDenied reports whether a command's failure reads as a lack
// of privilege.
func permissionDenied(err error) bool {
	var ce *CommandError
	if !errors.As(err, &ce) {
		return errors.Is(err, os.ErrPermission)
	}
	s := strings.ToLower(ce.Stderr)
	for _, m := range []string{"permission denied", "you must be root", "need to be root", "not authorized",
		"authorization failed", "operation not permitted", "access_denied", "must be run as root"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return errors.Is(ce.Err, os.ErrPermission)
}
