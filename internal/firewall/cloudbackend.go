package firewall

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/detour-acme/detour/internal/firewall/cloud"
	"github.com/detour-acme/detour/internal/store"
)

// A cloud backend opens a window in a provider's firewall (package cloud
// and its providers): one inbound rule per address family, accepting TCP
// on the port from every address of the family. Cloud rules have no
// timeout, so the backend keeps a journal in the state store:
//
//	firewall/cloud/<provider>/<firewall id>/<port>-<4|6>.json
//
// An entry is written, with the window's deadline, before the API call
// that adds the rule, and removed only once the rule is gone. Sweep
// removes the rules of entries past their deadline (a run killed with the
// window open), so the rule outlives its timeout only until the next
// Detour run or `detour firewall close --stale`. Where the provider keeps
// a description (AWS, Hetzner) the rule also carries Detour's tag with
// the deadline, so a rule whose entry was lost (another state directory)
// is swept too. A rule Detour did not add is never removed: when one
// already accepts the port, the window adds nothing.
//
// The Keeper serialises Open, Close and Sweep under its store lock and
// counts holders, so two certificates validating at once share the rule
// and the first to finish does not remove it while the other still holds
// it.
type cloudBackend struct {
	api   cloud.API
	store store.Storage
	log   *slog.Logger
	now   func() time.Time
	// descriptions is whether the provider keeps a rule's description
	// (DigitalOcean does not).
	descriptions bool
	// forTarget builds the API of another firewall of the same provider
	// and credentials: the journal may name a firewall this configuration
	// no longer resolves to (firewall_id changed, another firewall applied
	// to the instance), whose rules the sweep still removes. Nil: none.
	forTarget func(ctx context.Context, id string) (cloud.API, error)

	// scope names the firewall the configuration gives (Keeper leases).
	scope string

	mu     sync.Mutex
	others map[string]cloud.API
}

// Scope names the firewall the configuration points at, so that leases on
// two firewalls of one provider do not count for each other.
func (c *cloudBackend) Scope() string { return c.scope }

// current returns the ID of the firewall the configuration resolves to,
// "" when it cannot be resolved now.
func (c *cloudBackend) current(ctx context.Context) string {
	t, err := c.api.Target(ctx)
	if err != nil {
		return ""
	}
	return t.ID
}

// apiOf returns the API of firewall id.
func (c *cloudBackend) apiOf(ctx context.Context, id string) (cloud.API, error) {
	t, err := c.api.Target(ctx)
	if err != nil {
		return nil, err
	}
	if id == t.ID {
		return c.api, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.others[id]; ok {
		return a, nil
	}
	if c.forTarget == nil {
		return nil, fmt.Errorf("the journal names %s firewall %s, which this configuration does not reach", c.api.Provider(), id)
	}
	a, err := c.forTarget(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("reaching %s firewall %s, named by the journal: %w", c.api.Provider(), id, err)
	}
	if c.others == nil {
		c.others = map[string]cloud.API{}
	}
	c.others[id] = a
	return a, nil
}

var _ Backend = (*cloudBackend)(nil)

// journalPrefix is where the cloud journal lives.
const journalPrefix = "firewall/cloud/"

// Entry states.
const (
	stateOpening = "opening" // written before the API call that adds the rule
	stateOpen    = "open"    // the provider reported the rule applied
)

// cloudEntry is one rule Detour added to a cloud firewall (or is adding).
type cloudEntry struct {
	Provider string     `json:"provider"`
	Target   string     `json:"target"`
	Port     int        `json:"port"`
	IPv6     bool       `json:"ipv6"`
	Rule     cloud.Rule `json:"rule"`
	State    string     `json:"state"`
	Opened   time.Time  `json:"opened"`
	Until    time.Time  `json:"until"`
}

func newCloud(api cloud.API, opts Options) (*cloudBackend, error) {
	if opts.Store == nil {
		return nil, fmt.Errorf("the %s firewall keeps a journal of the rules it adds in the state directory, and none is open here", api.Provider())
	}
	return &cloudBackend{api: api, store: opts.Store, log: opts.Logger, now: opts.Now}, nil
}

func (c *cloudBackend) Name() string { return c.api.Provider() }

// explain marks a provider's error with the sentinel a caller acts on;
// the provider's message already says what to change.
func (c *cloudBackend) explain(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cloud.ErrAuth), errors.Is(err, cloud.ErrForbidden):
		return fmt.Errorf("%w: %w", ErrPermission, err)
	case errors.Is(err, cloud.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return err
}

func (c *cloudBackend) entryKey(target string, port int, ipv6 bool) string {
	fam := "4"
	if ipv6 {
		fam = "6"
	}
	return journalPrefix + c.api.Provider() + "/" + safeKey(target) + "/" + strconv.Itoa(port) + "-" + fam + ".json"
}

// safeKey keeps a provider's ID usable as one store key element.
func safeKey(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}

func (c *cloudBackend) load(ctx context.Context, key string) (cloudEntry, bool, error) {
	data, err := c.store.Load(ctx, key)
	if errors.Is(err, store.ErrNotExist) {
		return cloudEntry{}, false, nil
	}
	if err != nil {
		return cloudEntry{}, false, fmt.Errorf("reading the cloud firewall journal: %w", err)
	}
	var e cloudEntry
	if err := json.Unmarshal(data, &e); err != nil {
		return cloudEntry{}, false, fmt.Errorf("reading the cloud firewall journal %s: %w", key, err)
	}
	return e, true, nil
}

func (c *cloudBackend) save(ctx context.Context, e cloudEntry) error {
	data, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	if err := c.store.Store(ctx, c.entryKey(e.Target, e.Port, e.IPv6), data); err != nil {
		return fmt.Errorf("writing the cloud firewall journal: %w", err)
	}
	return nil
}

// entries returns the journal of target; of every firewall of the
// provider when target is "".
func (c *cloudBackend) entries(ctx context.Context, target string) ([]cloudEntry, error) {
	prefix := journalPrefix + c.api.Provider() + "/"
	if target != "" {
		prefix += safeKey(target) + "/"
	}
	keys, err := c.store.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("listing the cloud firewall journal: %w", err)
	}
	var out []cloudEntry
	for _, k := range keys {
		if !strings.HasSuffix(k, ".json") {
			continue
		}
		e, ok, err := c.load(ctx, k)
		if err != nil {
			c.log.WarnContext(ctx, "skipping an unreadable cloud firewall journal entry", "key", k, "error", err)
			continue
		}
		if ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// isOurs reports whether r is the rule entry e recorded: by the
// provider's rule ID where it has one (AWS), else by Detour's description
// where the provider keeps one (Hetzner: a rule without it, or with
// another, is never Detour's), else (DigitalOcean keeps neither) by the
// rule itself. An entry still "opening" has no ID yet: its rule is found
// by its description, or by the rule itself.
func (c *cloudBackend) isOurs(e cloudEntry, r cloud.Rule) bool {
	if r.IPv6 != e.IPv6 || r.FromPort != e.Port || r.ToPort != e.Port {
		return false
	}
	switch {
	case e.Rule.ID != "":
		return r.ID == e.Rule.ID
	case c.descriptions:
		return r.Description == e.Rule.Description
	}
	return r.Description == ""
}

// findOurs returns the rule of e among rules.
func (c *cloudBackend) findOurs(e cloudEntry, rules []cloud.Rule) (cloud.Rule, bool) {
	for _, r := range rules {
		if c.isOurs(e, r) {
			return r, true
		}
	}
	return cloud.Rule{}, false
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Check implements Backend: the credentials work and the firewall is
// there (a read; nothing changes).
func (c *cloudBackend) Check(ctx context.Context, w Window) error {
	if err := w.validate(); err != nil {
		return err
	}
	if _, err := c.api.Target(ctx); err != nil {
		return c.explain(err)
	}
	if _, err := c.api.Rules(ctx); err != nil {
		return c.explain(err)
	}
	if wc, ok := c.api.(cloud.WriteChecker); ok {
		for _, fam := range w.Family.Split() {
			if err := wc.CheckWrite(ctx, cloud.Rule{FromPort: w.Port, ToPort: w.Port, IPv6: fam == IPv6}); err != nil {
				return c.explain(err)
			}
		}
	}
	return nil
}

// Open implements Backend: for each family of w, a rule Detour added
// already is kept and its deadline extended; a rule of the user's that
// already accepts the port is left alone and nothing is added; otherwise
// the journal entry is written, then the rule added.
func (c *cloudBackend) Open(ctx context.Context, w Window) error {
	if err := w.validate(); err != nil {
		return err
	}
	target, err := c.api.Target(ctx)
	if err != nil {
		return c.explain(err)
	}
	rules, err := c.api.Rules(ctx)
	if err != nil {
		return c.explain(err)
	}
	now := c.now()
	until := now.Add(w.Timeout)
	var added []cloudEntry // by this call, removed again if a later family fails
	fail := func(err error) error {
		for _, e := range added {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			if rerr := c.remove(cctx, e); rerr != nil {
				c.log.ErrorContext(ctx, "removing the rule of a window that failed to open; the next sweep removes it after the timeout",
					"firewall", c.api.Provider(), "target", e.Target, "port", e.Port, "ipv6", e.IPv6, "until", e.Until, "error", rerr)
			}
			cancel()
		}
		return err
	}
	for _, fam := range w.Family.Split() {
		ipv6 := fam == IPv6
		e, have, err := c.load(ctx, c.entryKey(target.ID, w.Port, ipv6))
		if err != nil {
			return fail(err)
		}
		if have {
			if r, ok := c.findOurs(e, rules); ok {
				// Detour's rule is there (another holder's, or one a killed
				// run added): keep it, never shortening its deadline.
				if e.State != stateOpen || until.After(e.Until) {
					e.Rule, e.State, e.Until = r, stateOpen, maxTime(e.Until, until)
					if err := c.save(ctx, e); err != nil {
						return fail(err)
					}
				}
				continue
			}
		}
		if r, ok := covering(rules, w.Port, ipv6); ok {
			c.log.InfoContext(ctx, "the cloud firewall already accepts the port through a rule Detour did not add; adding nothing",
				"firewall", c.api.Provider(), "target", target.ID, "rule", r.String())
			if have {
				if err := c.forget(ctx, e); err != nil {
					return fail(err)
				}
			}
			continue
		}
		e = cloudEntry{Provider: c.api.Provider(), Target: target.ID, Port: w.Port, IPv6: ipv6, State: stateOpening,
			Opened: now, Until: until,
			Rule: cloud.Rule{FromPort: w.Port, ToPort: w.Port, IPv6: ipv6, Description: tagUntil(until)}}
		// The intent first: if Detour dies during the call, the next
		// run's sweep finds the entry and removes whatever was added.
		if err := c.save(ctx, e); err != nil {
			return fail(err)
		}
		rule, err := c.api.Add(ctx, e.Rule)
		if err != nil {
			if definitelyNotAdded(err) {
				_ = c.store.Delete(context.WithoutCancel(ctx), c.entryKey(target.ID, w.Port, ipv6))
			} else {
				added = append(added, e) // may exist: removed if found
			}
			return fail(c.explain(fmt.Errorf("opening %s: %w", w, err)))
		}
		e.Rule, e.State = rule, stateOpen
		if err := c.save(ctx, e); err != nil {
			added = append(added, e)
			return fail(err)
		}
		added = append(added, e)
		c.log.InfoContext(ctx, "cloud firewall rule added", "firewall", c.api.Provider(), "target", target.ID,
			"rule", rule.String(), "until", until.Truncate(time.Second))
	}
	return nil
}

// definitelyNotAdded reports whether a failed Add certainly changed
// nothing: the provider refused the request itself with a 4xx status.
// After a timeout, a provider error, or a change the provider accepted
// and then failed to apply (DigitalOcean's "failed" status, a Hetzner
// action's error), the rule may exist: the entry stays for the sweep.
func definitelyNotAdded(err error) bool {
	var ce *cloud.Error
	return errors.As(err, &ce) && ce.Status >= 400 && ce.Status < 500
}

// covering returns a rule accepting port from every address of the
// family.
func covering(rules []cloud.Rule, port int, ipv6 bool) (cloud.Rule, bool) {
	for _, r := range rules {
		if r.Covers(port, ipv6) {
			return r, true
		}
	}
	return cloud.Rule{}, false
}

// Close implements Backend: the rules Detour added for w are removed;
// anything else stays.
func (c *cloudBackend) Close(ctx context.Context, w Window) error {
	target, err := c.api.Target(ctx)
	if err != nil {
		return c.explain(err)
	}
	var errs []error
	for _, fam := range w.Family.Split() {
		key := c.entryKey(target.ID, w.Port, fam == IPv6)
		e, have, err := c.load(ctx, key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !have {
			continue
		}
		errs = append(errs, c.remove(ctx, e))
	}
	return errors.Join(errs...)
}

// remove removes the rule of e, then e. An entry still "opening" may
// have no rule (the call never reached the provider): it is looked up
// first.
func (c *cloudBackend) remove(ctx context.Context, e cloudEntry) error {
	api, err := c.apiOf(ctx, e.Target)
	if errors.Is(err, cloud.ErrNotFound) {
		c.log.WarnContext(ctx, "the firewall of a journaled cloud rule no longer exists; forgetting the rule",
			"firewall", c.api.Provider(), "target", e.Target, "error", err)
		return c.forget(ctx, e)
	}
	if err != nil {
		return c.explain(err)
	}
	rule := e.Rule
	if e.State != stateOpen || rule.ID == "" {
		rules, err := api.Rules(ctx)
		if errors.Is(err, cloud.ErrNotFound) {
			// The firewall is gone, and its rules with it.
			c.log.WarnContext(ctx, "the firewall of a journaled cloud rule no longer exists; forgetting the rule",
				"firewall", c.api.Provider(), "target", e.Target, "error", err)
			return c.forget(ctx, e)
		}
		if err != nil {
			return c.explain(err)
		}
		r, ok := c.findOurs(e, rules)
		if !ok {
			// Never added, or removed already (by hand, or by a run that
			// died before forgetting it).
			return c.forget(ctx, e)
		}
		rule = r
	}
	if err := api.Remove(ctx, rule); errors.Is(err, cloud.ErrNotFound) && e.Target != c.current(ctx) {
		return c.forget(ctx, e)
	} else if err != nil {
		return c.explain(fmt.Errorf("removing rule %s: %w", rule, err))
	}
	if rule.ID == "" && !c.descriptions {
		// Nothing but the rule itself tells it apart: the entry goes only
		// once the provider no longer lists it.
		rules, err := api.Rules(ctx)
		if err != nil {
			return c.explain(err)
		}
		if _, still := c.findOurs(e, rules); still {
			return fmt.Errorf("the %s firewall %s still lists rule %s after Detour removed it; remove it in the provider's console, "+
				"then run `detour firewall close --stale` again", c.api.Provider(), e.Target, rule)
		}
	}
	c.log.InfoContext(ctx, "cloud firewall rule removed", "firewall", c.api.Provider(), "target", e.Target, "rule", rule.String())
	return c.forget(ctx, e)
}

func (c *cloudBackend) forget(ctx context.Context, e cloudEntry) error {
	if err := c.store.Delete(ctx, c.entryKey(e.Target, e.Port, e.IPv6)); err != nil && !errors.Is(err, store.ErrNotExist) {
		return fmt.Errorf("removing the cloud firewall journal entry: %w", err)
	}
	return nil
}

// Status implements Backend: the journal's rules, and tagged rules the
// journal does not know (another state directory's).
func (c *cloudBackend) Status(ctx context.Context) ([]Hole, error) {
	target, err := c.api.Target(ctx)
	if err != nil {
		return nil, c.explain(err)
	}
	entries, err := c.entries(ctx, "")
	if err != nil {
		return nil, err
	}
	where := c.api.Provider() + " firewall " + target.ID
	if target.Name != "" {
		where += " (" + target.Name + ")"
	}
	var out, mine []Hole
	var here []cloudEntry
	for _, e := range entries {
		h := Hole{Backend: c.Name(), Port: e.Port, Family: familyOf(!e.IPv6, e.IPv6), Proto: ProtoTCP, Until: e.Until, Where: where}
		if e.Target != target.ID {
			h.Where = c.api.Provider() + " firewall " + e.Target + ", which this configuration no longer uses"
		} else {
			here = append(here, e)
		}
		mine = append(mine, h)
	}
	out = mine
	rules, err := c.api.Rules(ctx)
	if err != nil {
		return out, c.explain(err)
	}
	for _, r := range c.strays(rules, here) {
		until, _ := parseTag(r.Description)
		out = append(out, Hole{Backend: c.Name(), Port: r.FromPort, Family: familyOf(!r.IPv6, r.IPv6), Proto: ProtoTCP,
			Until: until, Where: where + ", not in this state directory's journal"})
	}
	return out, nil
}

// strays returns the rules carrying Detour's tag that no entry records.
func (c *cloudBackend) strays(rules []cloud.Rule, entries []cloudEntry) []cloud.Rule {
	var out []cloud.Rule
	for _, r := range rules {
		if _, ok := parseTag(r.Description); !ok {
			continue
		}
		if !c.hasEntry(entries, r) {
			out = append(out, r)
		}
	}
	return out
}

func (c *cloudBackend) hasEntry(entries []cloudEntry, r cloud.Rule) bool {
	for _, e := range entries {
		if c.isOurs(e, r) {
			return true
		}
	}
	return false
}

// Sweep implements Backend: without all, the rules of journal entries
// past their deadline and tagged rules past the deadline in their tag;
// with all, every rule Detour added.
func (c *cloudBackend) Sweep(ctx context.Context, all bool) error {
	target, err := c.api.Target(ctx)
	if err != nil {
		return c.explain(err)
	}
	entries, err := c.entries(ctx, "") // every firewall's: see forTarget
	if err != nil {
		return err
	}
	now := c.now()
	var errs []error
	var here []cloudEntry
	for _, e := range entries {
		if e.Target == target.ID {
			here = append(here, e)
		}
		if all || !e.Until.After(now) {
			if !all {
				c.log.WarnContext(ctx, "removing a cloud firewall rule left open past its timeout (a Detour run was killed)",
					"firewall", c.api.Provider(), "target", e.Target, "port", e.Port, "ipv6", e.IPv6, "until", e.Until)
			}
			errs = append(errs, c.remove(ctx, e))
		}
	}
	rules, err := c.api.Rules(ctx)
	if err != nil {
		return errors.Join(append(errs, c.explain(err))...)
	}
	for _, r := range c.strays(rules, here) {
		until, _ := parseTag(r.Description)
		if !all && until.After(now) {
			continue
		}
		if err := c.api.Remove(ctx, r); err != nil {
			errs = append(errs, c.explain(fmt.Errorf("removing rule %s: %w", r, err)))
			continue
		}
		c.log.InfoContext(ctx, "removed a Detour cloud firewall rule past its timeout", "firewall", c.api.Provider(), "target", target.ID, "rule", r.String())
	}
	return errors.Join(errs...)
}
