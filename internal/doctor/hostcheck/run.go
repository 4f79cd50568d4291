package hostcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// toolTimeout bounds each configuration dump (nginx -T, apache2 -S).
const toolTimeout = 20 * time.Second

// runTool runs a server's own configuration reader and returns its
// standard output. env, when non-nil, is added to the environment. The
// error names the command and carries its standard error.
func runTool(ctx context.Context, env []string, bin string, args ...string) (string, error) {
	stdout, _, err := runToolBoth(ctx, env, bin, args...)
	return stdout, err
}

// runToolBoth is runTool returning standard error too (nginx -V writes
// there).
func runToolBoth(ctx context.Context, env []string, bin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = msg[:2000] + "..."
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) && msg != "" {
			return stdout.String(), stderr.String(), fmt.Errorf("%s %s: %w: %s", bin, strings.Join(quoteArgs(args), " "), err, msg)
		}
		return stdout.String(), stderr.String(), fmt.Errorf("%s %s: %w", bin, strings.Join(quoteArgs(args), " "), err)
	}
	return stdout.String(), stderr.String(), nil
}

// executable reports whether path is an executable regular file.
func executable(path string) bool {
	if path == "" {
		return false
	}
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// quoteArgs quotes the arguments that hold spaces, for evidence.
func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'") {
			a = strconv.Quote(a)
		}
		out[i] = a
	}
	return out
}
