package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// iptChain is the chain Detour inserts its rules at the top of.
const iptChain = "INPUT"

// iptWait is how long iptables waits for the xtables lock, in seconds.
const iptWait = "10"

// iptBackend drives iptables and ip6tables (one of the system default,
// legacy and nft variants). Each window is one rule per family at the top
// of INPUT:
//
//	-p tcp -m tcp --dport PORT -m time --datestop UNTIL-1s
//	-m comment --comment "detour-window until=UNTIL" -j ACCEPT
//
// xt_time compares against the kernel's clock in UTC, so the rule stops
// accepting at the deadline by itself; Sweep removes it afterwards.
type iptBackend struct {
	name     string
	bin4     string
	bin6     string
	log      *slog.Logger
	run      Runner
	now      func() time.Time
	packages string // what to install when the commands are missing
}

func newIptables(name string, opts Options) *iptBackend {
	b := &iptBackend{name: name, log: opts.Logger, run: opts.Runner, now: opts.Now, packages: "iptables"}
	switch name {
	case NameIptablesLegacy:
		b.bin4, b.bin6 = "iptables-legacy", "ip6tables-legacy"
	case NameIptablesNft:
		b.bin4, b.bin6 = "iptables-nft", "ip6tables-nft"
	default:
		b.bin4, b.bin6 = "iptables", "ip6tables"
	}
	return b
}

// Name implements Backend.
func (b *iptBackend) Name() string { return b.name }

func (b *iptBackend) bin(f Family) string {
	if f == IPv6 {
		return b.bin6
	}
	return b.bin4
}

// iptRule is one of Detour's rules as iptables -S prints it.
type iptRule struct {
	family Family
	port   int
	until  time.Time
	spec   []string // the words after "-A INPUT"
}

// list returns Detour's rules in INPUT for one family.
func (b *iptBackend) list(ctx context.Context, f Family) ([]iptRule, error) {
	out, err := b.run.Run(ctx, Command{Name: b.bin(f), Args: []string{"-w", iptWait, "-S", iptChain}})
	if err != nil {
		return nil, b.explain("listing "+iptChain, f, err)
	}
	var rules []iptRule
	for _, line := range strings.Split(string(out), "\n") {
		words, ok := splitWords(strings.TrimSpace(line))
		if !ok || len(words) < 2 || words[0] != "-A" || words[1] != iptChain {
			continue
		}
		r := iptRule{family: f, spec: words[2:]}
		var tagged bool
		for i := 0; i+1 < len(words); i++ {
			switch words[i] {
			case "--dport":
				r.port, _ = strconv.Atoi(words[i+1])
			case "--comment":
				r.until, tagged = parseTag(words[i+1])
			}
		}
		if tagged && r.port > 0 {
			rules = append(rules, r)
		}
	}
	return rules, nil
}

// explain turns a failed command into an error that says what to do.
func (b *iptBackend) explain(op string, f Family, err error) error {
	bin := b.bin(f)
	switch {
	case notFound(err):
		return fmt.Errorf("%s: %w: %s is not installed; install the Debian package %q, or choose another firewall (%v)",
			op, ErrUnsupported, bin, b.packages, err)
	case permissionDenied(err):
		return fmt.Errorf("%s: %w: %s needs root (or CAP_NET_ADMIN and CAP_NET_RAW); run detour as root (%v)", op, ErrPermission, bin, err)
	}
	var ce *CommandError
	if errors.As(err, &ce) && strings.Contains(ce.Stderr, "Table does not exist") {
		return fmt.Errorf("%s: %w: the kernel has no %s filter table for %s; load it or choose another firewall (%v)",
			op, ErrUnsupported, f, bin, err)
	}
	return fmt.Errorf("%s with %s: %w", op, bin, err)
}

// Check implements Backend.
func (b *iptBackend) Check(ctx context.Context, w Window) error {
	if err := w.validate(); err != nil {
		return err
	}
	for _, f := range w.Family.Split() {
		if _, err := b.list(ctx, f); err != nil {
			return err
		}
	}
	return nil
}

// ruleSpec returns the words of the rule accepting port until until (a
// whole second): xt_time accepts through the second before it.
func ruleSpec(port int, until time.Time) []string {
	return []string{"-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(port),
		"-m", "time", "--datestop", until.Add(-time.Second).UTC().Format("2006-01-02T15:04:05"),
		"-m", "comment", "--comment", tagUntil(until), "-j", "ACCEPT"}
}

// Open implements Backend: a new rule goes in first, then older rules for
// the same port are deleted, so the port never closes in between.
func (b *iptBackend) Open(ctx context.Context, w Window) error {
	if err := w.validate(); err != nil {
		return err
	}
	// xt_time matches up to the end of its --datestop second: the rule
	// stops accepting at until, the deadline rounded up to a second.
	until := b.now().Add(w.Timeout).Add(time.Second - 1).Truncate(time.Second)
	for _, f := range w.Family.Split() {
		rules, err := b.list(ctx, f)
		if err != nil {
			return err
		}
		var old []iptRule
		keep := false
		for _, r := range rules {
			if r.port != w.Port {
				continue
			}
			if !r.until.Before(until.Add(-time.Second)) {
				keep = true
			} else {
				old = append(old, r)
			}
		}
		if keep {
			continue
		}
		args := append([]string{"-w", iptWait, "-I", iptChain, "1"}, ruleSpec(w.Port, until)...)
		if _, err := b.run.Run(ctx, Command{Name: b.bin(f), Args: args}); err != nil {
			return b.explain("opening "+w.String(), f, err)
		}
		if err := b.delete(ctx, old); err != nil {
			return err
		}
	}
	b.log.InfoContext(ctx, "firewall window open", "backend", b.name, "port", w.Port, "family", w.Family, "until", until)
	return nil
}

func (b *iptBackend) delete(ctx context.Context, rules []iptRule) error {
	var errs []error
	for _, r := range rules {
		args := append([]string{"-w", iptWait, "-D", iptChain}, r.spec...)
		if _, err := b.run.Run(ctx, Command{Name: b.bin(r.family), Args: args}); err != nil {
			errs = append(errs, b.explain("removing the rule for port "+strconv.Itoa(r.port), r.family, err))
		}
	}
	return errors.Join(errs...)
}

// Close implements Backend.
func (b *iptBackend) Close(ctx context.Context, w Window) error {
	var errs []error
	for _, f := range w.Family.Split() {
		rules, err := b.list(ctx, f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var mine []iptRule
		for _, r := range rules {
			if r.port == w.Port {
				mine = append(mine, r)
			}
		}
		errs = append(errs, b.delete(ctx, mine))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	b.log.InfoContext(ctx, "firewall window closed", "backend", b.name, "port", w.Port, "family", w.Family)
	return nil
}

// Status implements Backend.
func (b *iptBackend) Status(ctx context.Context) ([]Hole, error) {
	var out []Hole
	now := b.now()
	for _, f := range Inet.Split() {
		rules, err := b.list(ctx, f)
		if err != nil {
			return nil, err
		}
		for _, r := range rules {
			if r.until.After(now) {
				out = append(out, Hole{Backend: b.name, Port: r.port, Family: f, Proto: ProtoTCP, Until: r.until, Where: b.bin(f) + " " + iptChain})
			}
		}
	}
	return out, nil
}

// Sweep implements Backend.
func (b *iptBackend) Sweep(ctx context.Context, all bool) error {
	now := b.now()
	var errs []error
	for _, f := range Inet.Split() {
		rules, err := b.list(ctx, f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var stale []iptRule
		for _, r := range rules {
			if all || !r.until.After(now) {
				stale = append(stale, r)
			}
		}
		if len(stale) > 0 {
			b.log.InfoContext(ctx, "removing Detour's firewall rules", "backend", b.name, "family", f, "count", len(stale), "expired_only", !all)
		}
		errs = append(errs, b.delete(ctx, stale))
	}
	return errors.Join(errs...)
}

// splitWords splits a line of iptables -S output into words: spaces
// separate words, double quotes group them, a backslash escapes the next
// character inside quotes.
func splitWords(s string) ([]string, bool) {
	var (
		words []string
		cur   strings.Builder
		in    bool // inside quotes
		have  bool // cur holds a word (possibly empty "")
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case in && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			in = !in
			have = true
		case !in && (c == ' ' || c == '\t'):
			if have {
				words = append(words, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if in {
		return nil, false
	}
	if have {
		words = append(words, cur.String())
	}
	return words, true
}
