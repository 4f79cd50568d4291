package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Environment variables the exec backend's commands receive.
const (
	EnvAction     = "DETOUR_FIREWALL_ACTION"     // "open" or "close"
	EnvPort       = "DETOUR_FIREWALL_PORT"       // e.g. "80"
	EnvProto      = "DETOUR_FIREWALL_PROTO"      // "tcp"
	EnvFamily     = "DETOUR_FIREWALL_FAMILY"     // "ip", "ip6" or "inet"
	EnvIdentifier = "DETOUR_FIREWALL_IDENTIFIER" // the name or address the CA validates
	EnvTimeout    = "DETOUR_FIREWALL_TIMEOUT"    // seconds the window may stay open
	EnvUntil      = "DETOUR_FIREWALL_UNTIL"      // the deadline, RFC 3339 in UTC
)

// execBackend runs the user's own commands, for firewalls Detour cannot
// drive itself (a cloud provider's firewall API). The commands are
// responsible for closing the port at the deadline if Detour dies: most
// cloud firewalls have no timeout, so the open command should schedule
// its own close.
type execBackend struct {
	log         *slog.Logger
	run         Runner
	now         func() time.Time
	open, close string
}

func newExec(opts Options) (*execBackend, error) {
	for name, p := range map[string]string{"firewall_open": opts.OpenCommand, "firewall_close": opts.CloseCommand} {
		if p == "" {
			return nil, fmt.Errorf("the exec firewall needs %s: the absolute path of an executable", name)
		}
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("%s %q: give an absolute path", name, p)
		}
	}
	return &execBackend{log: opts.Logger, run: opts.Runner, now: opts.Now, open: opts.OpenCommand, close: opts.CloseCommand}, nil
}

// Name implements Backend.
func (b *execBackend) Name() string { return NameExec }

// Check implements Backend: both commands exist and are executable.
func (b *execBackend) Check(ctx context.Context, w Window) error {
	if err := w.validate(); err != nil {
		return err
	}
	var errs []error
	for _, p := range []string{b.open, b.close} {
		fi, err := os.Stat(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			errs = append(errs, fmt.Errorf("firewall command %s does not exist: %w", p, ErrUnsupported))
		case err != nil:
			errs = append(errs, fmt.Errorf("firewall command %s: %w", p, err))
		case fi.IsDir() || fi.Mode()&0o111 == 0:
			errs = append(errs, fmt.Errorf("firewall command %s is not executable: chmod +x it: %w", p, ErrUnsupported))
		}
	}
	return errors.Join(errs...)
}

func (b *execBackend) env(action string, w Window) []string {
	return []string{
		EnvAction + "=" + action,
		EnvPort + "=" + strconv.Itoa(w.Port),
		EnvProto + "=" + w.proto(),
		EnvFamily + "=" + string(w.Family),
		EnvIdentifier + "=" + w.Identifier,
		EnvTimeout + "=" + strconv.Itoa(int(w.Timeout/time.Second)),
		EnvUntil + "=" + b.now().Add(w.Timeout).UTC().Format(time.RFC3339),
	}
}

// Open implements Backend.
func (b *execBackend) Open(ctx context.Context, w Window) error {
	if err := w.validate(); err != nil {
		return err
	}
	if _, err := b.run.Run(ctx, Command{Name: b.open, Env: b.env("open", w)}); err != nil {
		return fmt.Errorf("opening %s with your firewall command: %w", w, err)
	}
	b.log.InfoContext(ctx, "firewall window open", "backend", NameExec, "command", b.open, "port", w.Port, "family", w.Family)
	return nil
}

// Close implements Backend.
func (b *execBackend) Close(ctx context.Context, w Window) error {
	if w.Timeout == 0 {
		w.Timeout = time.Second
	}
	if _, err := b.run.Run(ctx, Command{Name: b.close, Env: b.env("close", w)}); err != nil {
		return fmt.Errorf("closing %s with your firewall command: %w", w, err)
	}
	b.log.InfoContext(ctx, "firewall window closed", "backend", NameExec, "command", b.close, "port", w.Port, "family", w.Family)
	return nil
}

// Status implements Backend: Detour cannot see into the user's firewall;
// the Keeper's leases say what is held.
func (b *execBackend) Status(context.Context) ([]Hole, error) { return nil, nil }

// Sweep implements Backend: nothing to find; the Keeper closes its leases'
// windows.
func (b *execBackend) Sweep(context.Context, bool) error { return nil }
