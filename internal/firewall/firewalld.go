package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// fwdBackend drives firewalld through firewall-cmd. A window is a runtime
// rich rule added with firewalld's own --timeout, so firewalld removes it
// by itself when the timeout runs out:
//
//	rule [family="ipv4"|"ipv6"] port port="PORT" protocol="tcp" accept
//
// Rich rules carry no comment, so Detour never removes a rule that is also
// in the permanent configuration (the user's own), and leaves alone a
// runtime rule that was there before it opened the window.
type fwdBackend struct {
	log  *slog.Logger
	run  Runner
	zone string
}

func newFirewalld(opts Options) *fwdBackend {
	return &fwdBackend{log: opts.Logger, run: opts.Runner, zone: opts.Zone}
}

// Name implements Backend.
func (b *fwdBackend) Name() string { return NameFirewalld }

// richRule returns the rich rule accepting port for f.
func richRule(f Family, port int) string {
	fam := ""
	switch f {
	case IPv4:
		fam = `family="ipv4" `
	case IPv6:
		fam = `family="ipv6" `
	}
	return fmt.Sprintf(`rule %sport port="%d" protocol="tcp" accept`, fam, port)
}

// cmd returns a firewall-cmd invocation in the configured zone.
func (b *fwdBackend) cmd(args ...string) Command {
	if b.zone != "" {
		args = append([]string{"--zone=" + b.zone}, args...)
	}
	return Command{Name: "firewall-cmd", Args: args}
}

func (b *fwdBackend) explain(op string, err error) error {
	var ce *CommandError
	switch {
	case notFound(err):
		return fmt.Errorf("%s: %w: firewall-cmd is not installed; install the Debian package \"firewalld\", or choose another firewall (%v)",
			op, ErrUnsupported, err)
	case permissionDenied(err):
		return fmt.Errorf("%s: %w: firewalld refused (polkit); run detour as root (%v)", op, ErrPermission, err)
	case errors.As(err, &ce) && ce.ExitCode == 252:
		return fmt.Errorf("%s: %w: firewalld is not running; start it (systemctl start firewalld) or choose another firewall (%v)",
			op, ErrUnsupported, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// query reports whether firewall-cmd answers "yes" to args (exit 0);
// exit 1 means "no".
func (b *fwdBackend) query(ctx context.Context, args ...string) (bool, error) {
	_, err := b.run.Run(ctx, b.cmd(args...))
	var ce *CommandError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ce) && ce.ExitCode == 1:
		return false, nil
	}
	return false, b.explain("querying firewalld", err)
}

// Check implements Backend.
func (b *fwdBackend) Check(ctx context.Context, w Window) error {
	if err := w.validate(); err != nil {
		return err
	}
	if _, err := b.run.Run(ctx, Command{Name: "firewall-cmd", Args: []string{"--state"}}); err != nil {
		return b.explain("checking firewalld", err)
	}
	// Reading the runtime rules needs the same authorization as changing
	// them.
	_, err := b.query(ctx, "--query-rich-rule="+richRule(w.Family, w.Port))
	return err
}

// Open implements Backend.
func (b *fwdBackend) Open(ctx context.Context, w Window) error {
	if err := w.validate(); err != nil {
		return err
	}
	rule := richRule(w.Family, w.Port)
	there, err := b.query(ctx, "--query-rich-rule="+rule)
	if err != nil {
		return err
	}
	if there {
		b.log.InfoContext(ctx, "firewalld already accepts the port with this rich rule; leaving it as it is", "rule", rule)
		return nil
	}
	secs := int((w.Timeout + time.Second - 1) / time.Second)
	if _, err := b.run.Run(ctx, b.cmd("--add-rich-rule="+rule, "--timeout="+strconv.Itoa(secs)+"s")); err != nil {
		return b.explain("opening "+w.String()+" in firewalld", err)
	}
	b.log.InfoContext(ctx, "firewall window open", "backend", NameFirewalld, "rule", rule, "timeout", w.Timeout)
	return nil
}

// Close implements Backend.
func (b *fwdBackend) Close(ctx context.Context, w Window) error {
	return b.removeRule(ctx, richRule(w.Family, w.Port))
}

// removeRule removes a runtime rich rule unless it is also permanent.
func (b *fwdBackend) removeRule(ctx context.Context, rule string) error {
	there, err := b.query(ctx, "--query-rich-rule="+rule)
	if err != nil || !there {
		return err
	}
	permanent, err := b.query(ctx, "--permanent", "--query-rich-rule="+rule)
	if err != nil {
		return err
	}
	if permanent {
		b.log.InfoContext(ctx, "the rich rule is in firewalld's permanent configuration, so it is yours: not removing it", "rule", rule)
		return nil
	}
	if _, err := b.run.Run(ctx, b.cmd("--remove-rich-rule="+rule)); err != nil {
		return b.explain("closing the firewalld rule "+rule, err)
	}
	b.log.InfoContext(ctx, "firewall window closed", "backend", NameFirewalld, "rule", rule)
	return nil
}

// richRuleRE matches the rich rules richRule writes.
var richRuleRE = regexp.MustCompile(`^rule (?:family="(ipv4|ipv6)" )?port port="(\d+)" protocol="tcp" accept$`)

// runtimeRules lists the runtime rich rules of Detour's shape that are not
// in the permanent configuration.
func (b *fwdBackend) runtimeRules(ctx context.Context) (map[string]Hole, error) {
	out, err := b.run.Run(ctx, b.cmd("--list-rich-rules"))
	if err != nil {
		return nil, b.explain("listing firewalld's rich rules", err)
	}
	holes := map[string]Hole{}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		m := richRuleRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		f := Inet
		switch m[1] {
		case "ipv4":
			f = IPv4
		case "ipv6":
			f = IPv6
		}
		port, _ := strconv.Atoi(m[2])
		if richRule(f, port) != line {
			continue
		}
		permanent, err := b.query(ctx, "--permanent", "--query-rich-rule="+line)
		if err != nil {
			return nil, err
		}
		if !permanent {
			holes[line] = Hole{Backend: NameFirewalld, Port: port, Family: f, Proto: ProtoTCP,
				Where: "firewalld runtime rich rule (firewalld removes it at its timeout)"}
		}
	}
	return holes, nil
}

// Status implements Backend. firewalld does not say when a rule's
// timeout runs out, so Until is zero.
func (b *fwdBackend) Status(ctx context.Context) ([]Hole, error) {
	rules, err := b.runtimeRules(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Hole, 0, len(rules))
	for _, h := range rules {
		out = append(out, h)
	}
	return out, nil
}

// Sweep implements Backend: firewalld's timeout already removes stale
// rules, so only all does anything.
func (b *fwdBackend) Sweep(ctx context.Context, all bool) error {
	if !all {
		return nil
	}
	rules, err := b.runtimeRules(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for rule := range rules {
		if _, err := b.run.Run(ctx, b.cmd("--remove-rich-rule="+rule)); err != nil {
			errs = append(errs, b.explain("removing the firewalld rule "+rule, err))
		}
	}
	return errors.Join(errs...)
}
