// Package deploy puts a newly stored certificate to use: it runs the
// certificate's deploy hook (a shell command) with the certificate's paths
// and names in its environment.
package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Info describes the certificate a hook deploys.
type Info struct {
	Name     string   // certificate name
	Domains  []string // identifiers
	LiveDir  string   // directory holding cert.pem, chain.pem, fullchain.pem, privkey.pem
	Version  int
	NotAfter time.Time
}

// Hook is a shell command run with /bin/sh -c.
type Hook struct {
	Command string
	Timeout time.Duration // default 5 minutes
}

// Env returns the variables a hook sees: DETOUR_* and, for scripts written
// for certbot, RENEWED_LINEAGE and RENEWED_DOMAINS.
func (i Info) Env() []string {
	return []string{
		"DETOUR_NAME=" + i.Name,
		"DETOUR_DOMAINS=" + strings.Join(i.Domains, " "),
		"DETOUR_LIVE_DIR=" + i.LiveDir,
		"DETOUR_CERT=" + i.LiveDir + "/cert.pem",
		"DETOUR_CHAIN=" + i.LiveDir + "/chain.pem",
		"DETOUR_FULLCHAIN=" + i.LiveDir + "/fullchain.pem",
		"DETOUR_KEY=" + i.LiveDir + "/privkey.pem",
		fmt.Sprintf("DETOUR_VERSION=%d", i.Version),
		"DETOUR_NOT_AFTER=" + i.NotAfter.UTC().Format(time.RFC3339),
		"RENEWED_LINEAGE=" + i.LiveDir,
		"RENEWED_DOMAINS=" + strings.Join(i.Domains, " "),
	}
}

// Run runs the hook for i. The command's output is returned in the error
// when it fails, so the log says why.
func (h Hook) Run(ctx context.Context, i Info) ([]byte, error) {
	if strings.TrimSpace(h.Command) == "" {
		return nil, nil
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", h.Command)
	cmd.Env = append(os.Environ(), i.Env()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return out.Bytes(), fmt.Errorf("deploy hook %q did not finish within %s: %s", h.Command, timeout, tail(out.Bytes()))
		}
		return out.Bytes(), fmt.Errorf("deploy hook %q failed (%v): %s", h.Command, err, tail(out.Bytes()))
	}
	return out.Bytes(), nil
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 500 {
		s = "…" + s[len(s)-500:]
	}
	if s == "" {
		return "no output"
	}
	return s
}
