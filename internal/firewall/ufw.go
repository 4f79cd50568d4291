package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ufwBackend drives ufw. A window is a rule prepended to ufw's user rules,
// `ufw prepend allow proto tcp to ADDR port PORT comment 'detour-window
// until=UNIX'`, with ADDR any, 0.0.0.0/0 or ::/0 for the families. ufw has
// no timeout: a rule left by a killed run stays until Sweep (run before
// every window) or `detour firewall close` removes it. A rule already open
// for the port is kept, not extended: ufw cannot replace it without a gap.
type ufwBackend struct {
	log *slog.Logger
	run Runner
	now func() time.Time
}

func newUfw(opts Options) *ufwBackend {
	return &ufwBackend{log: opts.Logger, run: opts.Runner, now: opts.Now}
}

// Name implements Backend.
func (b *ufwBackend) Name() string { return NameUfw }

// ufwRule is one of Detour's rules in `ufw status numbered`.
type ufwRule struct {
	num    int
	family Family
	port   int
	until  time.Time
}

var (
	ufwLine = regexp.MustCompile(`^\[\s*(\d+)\]\s+(.*)$`)
	ufwPort = regexp.MustCompile(`(?:^|\s)(\d+)/tcp\b`)
)

// status runs `ufw status numbered` and returns whether ufw is active and
// Detour's rules.
func (b *ufwBackend) status(ctx context.Context) (bool, []ufwRule, error) {
	out, err := b.run.Run(ctx, Command{Name: "ufw", Args: []string{"status", "numbered"}})
	if err != nil {
		return false, nil, b.explain("reading ufw's rules", err)
	}
	text := string(out)
	active := strings.Contains(text, "Status: active")
	var rules []ufwRule
	for _, line := range strings.Split(text, "\n") {
		m := ufwLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		until, ok := parseTag(m[2])
		if !ok {
			continue
		}
		num, _ := strconv.Atoi(m[1])
		rule, _, _ := strings.Cut(m[2], "#")
		pm := ufwPort.FindStringSubmatch(rule)
		if pm == nil {
			continue
		}
		port, _ := strconv.Atoi(pm[1])
		f := IPv4
		if strings.Contains(rule, "(v6)") {
			f = IPv6
		}
		rules = append(rules, ufwRule{num: num, family: f, port: port, until: until})
	}
	return active, rules, nil
}

func (b *ufwBackend) explain(op string, err error) error {
	switch {
	case notFound(err):
		return fmt.Errorf("%s: %w: ufw is not installed; install the Debian package \"ufw\", or choose another firewall (%v)", op, ErrUnsupported, err)
	case permissionDenied(err):
		return fmt.Errorf("%s: %w: ufw needs root; run detour as root (%v)", op, ErrPermission, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Check implements Backend.
func (b *ufwBackend) Check(ctx context.Context, w Window) error {
	if err := w.validate(); err != nil {
		return err
	}
	active, _, err := b.status(ctx)
	if err == nil && !active {
		b.log.InfoContext(ctx, "ufw is inactive, so it does not block the port; the window changes nothing", "port", w.Port)
	}
	return err
}

func ufwTo(f Family) string {
	switch f {
	case IPv4:
		return "0.0.0.0/0"
	case IPv6:
		return "::/0"
	}
	return "any"
}

// Open implements Backend.
func (b *ufwBackend) Open(ctx context.Context, w Window) error {
	if err := w.validate(); err != nil {
		return err
	}
	active, rules, err := b.status(ctx)
	if err != nil {
		return err
	}
	if !active {
		b.log.InfoContext(ctx, "ufw is inactive: nothing to open", "port", w.Port)
		return nil
	}
	now := b.now()
	until := now.Add(w.Timeout).Truncate(time.Second).Add(time.Second)
	// ufw skips a rule that differs from an existing one only in its
	// comment, so a window that is already open is kept as it is (the
	// Keeper's leases say who still needs it); a stale one is replaced.
	need := Family("")
	var stale []ufwRule
	for _, f := range w.Family.Split() {
		open := false
		for _, r := range rules {
			if r.port != w.Port || r.family != f {
				continue
			}
			if r.until.After(now) {
				open = true
			} else {
				stale = append(stale, r)
			}
		}
		if !open {
			need = need.Union(f)
		}
	}
	if need == "" {
		return nil
	}
	if err := b.delete(ctx, stale); err != nil {
		return err
	}
	args := []string{"prepend", "allow", "proto", "tcp", "to", ufwTo(need), "port", strconv.Itoa(w.Port), "comment", tagUntil(until)}
	if _, err := b.run.Run(ctx, Command{Name: "ufw", Args: args}); err != nil {
		return b.explain("opening "+w.String()+" in ufw", err)
	}
	b.log.InfoContext(ctx, "firewall window open", "backend", NameUfw, "port", w.Port, "family", need, "until", until)
	return nil
}

// delete removes rules by number, highest first so that the numbers of
// the others stay valid.
func (b *ufwBackend) delete(ctx context.Context, rules []ufwRule) error {
	slices.SortFunc(rules, func(x, y ufwRule) int { return y.num - x.num })
	var errs []error
	for _, r := range rules {
		if _, err := b.run.Run(ctx, Command{Name: "ufw", Args: []string{"--force", "delete", strconv.Itoa(r.num)}}); err != nil {
			errs = append(errs, b.explain(fmt.Sprintf("removing ufw rule %d (port %d)", r.num, r.port), err))
		}
	}
	return errors.Join(errs...)
}

// Close implements Backend.
func (b *ufwBackend) Close(ctx context.Context, w Window) error {
	if err := b.remove(ctx, func(r ufwRule) bool {
		return r.port == w.Port && w.Family.Intersect(r.family) != ""
	}); err != nil {
		return err
	}
	b.log.InfoContext(ctx, "firewall window closed", "backend", NameUfw, "port", w.Port, "family", w.Family)
	return nil
}

func (b *ufwBackend) remove(ctx context.Context, match func(ufwRule) bool) error {
	_, rules, err := b.status(ctx)
	if err != nil {
		return err
	}
	var del []ufwRule
	for _, r := range rules {
		if match(r) {
			del = append(del, r)
		}
	}
	if len(del) == 0 {
		return nil
	}
	if err := b.delete(ctx, del); err != nil {
		return err
	}
	b.log.InfoContext(ctx, "removed Detour's ufw rules", "count", len(del))
	return nil
}

// Status implements Backend.
func (b *ufwBackend) Status(ctx context.Context) ([]Hole, error) {
	_, rules, err := b.status(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Hole, 0, len(rules))
	for _, r := range rules {
		out = append(out, Hole{Backend: NameUfw, Port: r.port, Family: r.family, Proto: ProtoTCP, Until: r.until,
			Where: fmt.Sprintf("ufw rule %d (no timeout in ufw: removed when Detour closes the window or by the next run)", r.num)})
	}
	return out, nil
}

// Sweep implements Backend.
func (b *ufwBackend) Sweep(ctx context.Context, all bool) error {
	now := b.now()
	return b.remove(ctx, func(r ufwRule) bool { return all || !r.until.After(now) })
}
