package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Notice describes a certificate close to expiry whose last renewal failed.
type Notice struct {
	Name        string    `json:"name"`
	Identifiers []string  `json:"identifiers"`
	NotAfter    time.Time `json:"not_after"`
	Error       string    `json:"error"`
	Failures    int       `json:"failures"`
	LastAttempt time.Time `json:"last_attempt"`
}

// Notifier tells someone about a Notice.
type Notifier interface {
	Notify(ctx context.Context, n Notice) error
}

// Notifiers tells every notifier in turn; the errors are joined.
type Notifiers []Notifier

// Notify implements Notifier.
func (ns Notifiers) Notify(ctx context.Context, n Notice) error {
	var errs []error
	for _, x := range ns {
		errs = append(errs, x.Notify(ctx, n))
	}
	return errors.Join(errs...)
}

// CommandNotifier runs a shell command with the notice in its environment:
// DETOUR_NAME, DETOUR_DOMAINS, DETOUR_NOT_AFTER (RFC 3339), DETOUR_ERROR,
// DETOUR_FAILURES.
type CommandNotifier struct {
	Command string
	Timeout time.Duration // default 1 minute
}

// Notify implements Notifier.
func (c CommandNotifier) Notify(ctx context.Context, n Notice) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", c.Command)
	cmd.Env = append(os.Environ(),
		"DETOUR_NAME="+n.Name,
		"DETOUR_DOMAINS="+strings.Join(n.Identifiers, " "),
		"DETOUR_NOT_AFTER="+n.NotAfter.UTC().Format(time.RFC3339),
		"DETOUR_ERROR="+n.Error,
		"DETOUR_FAILURES="+strconv.Itoa(n.Failures),
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("notify_command %q failed (%v): %s", c.Command, err, bytes.TrimSpace(out))
	}
	return nil
}

// WebhookNotifier POSTs the notice as JSON to URL.
type WebhookNotifier struct {
	URL    string
	Client *http.Client // default: 30-second timeout
}

// Notify implements Notifier.
func (w WebhookNotifier) Notify(ctx context.Context, n Notice) error {
	body, err := json.Marshal(struct {
		Text string `json:"text"`
		Notice
	}{fmt.Sprintf("detour: certificate %s expires %s and its renewal failed %d time(s): %s",
		n.Name, n.NotAfter.UTC().Format(time.RFC3339), n.Failures, n.Error), n})
	if err != nil {
		return fmt.Errorf("encoding the notification: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("notify_webhook %q: %w", w.URL, err)
	}
	req.Header.Set("Content-Type", "application/json")
	c := w.Client
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("notify_webhook %q: %w", w.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("notify_webhook %q answered %s: %s", w.URL, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
