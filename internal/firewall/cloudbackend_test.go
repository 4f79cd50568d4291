package firewall

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall/cloud"
	"github.com/detour-acme/detour/internal/store"
)

// memCloud is a fake cloud firewall API kept in memory (not a provider):
// the engine's own decisions are tested against it; the providers'
// packages test their SDK calls against fakes of the providers' HTTP
// APIs, and cloud_e2e_test.go runs the engine over those.
type memCloud struct {
	mu           sync.Mutex
	rules        []cloud.Rule
	descriptions bool // the provider keeps descriptions (AWS, Hetzner)
	ids          bool // and gives rules IDs (AWS)
	next         int
	addErr       error
	addAnyway    bool  // Add keeps the rule although it returns addErr
	removeErr    error // Remove fails with it
	calls        []string
}

var _ cloud.API = (*memCloud)(nil)

func (m *memCloud) Provider() string { return "memcloud" }
func (m *memCloud) Target(context.Context) (cloud.Target, error) {
	return cloud.Target{ID: "fw-1", Name: "web"}, nil
}
func (m *memCloud) Rules(context.Context) ([]cloud.Rule, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.rules), nil
}
func (m *memCloud) Add(_ context.Context, r cloud.Rule) (cloud.Rule, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, "add "+r.String())
	if m.addErr != nil && !m.addAnyway {
		return cloud.Rule{}, m.addErr
	}
	if !m.descriptions {
		r.Description = ""
	} else if m.ids {
		m.next++
		r.ID = fmt.Sprintf("r%d", m.next)
	}
	m.rules = append(m.rules, r)
	return r, m.addErr
}
func (m *memCloud) Remove(_ context.Context, r cloud.Rule) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, "remove "+r.String())
	if m.removeErr != nil {
		return m.removeErr
	}
	m.rules = slices.DeleteFunc(m.rules, func(x cloud.Rule) bool { return x == r })
	return nil
}

func (m *memCloud) has(port int, ipv6 bool) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, r := range m.rules {
		if r.Covers(port, ipv6) {
			n++
		}
	}
	return n
}

func newMemBackend(t *testing.T, m *memCloud, now *time.Time) (*cloudBackend, *store.FS) {
	t.Helper()
	st, err := store.NewFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := newCloud(m, Options{Store: st, Logger: discard, Now: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	b.descriptions = m.descriptions
	return b, st
}

func TestCloudOpenCloseLeavesOtherRules(t *testing.T) {
	for _, desc := range []bool{false, true} {
		t.Run(fmt.Sprintf("descriptions=%v", desc), func(t *testing.T) {
			user := []cloud.Rule{{FromPort: 22, ToPort: 22}, {FromPort: 443, ToPort: 443, IPv6: true, Description: "https"}}
			m := &memCloud{descriptions: desc, rules: slices.Clone(user)}
			now := time.Unix(1_800_000_000, 0)
			b, _ := newMemBackend(t, m, &now)
			ctx := context.Background()
			w := Window{Port: 80, Family: Inet, Timeout: time.Minute}
			if err := b.Open(ctx, w); err != nil {
				t.Fatal(err)
			}
			if m.has(80, false) != 1 || m.has(80, true) != 1 {
				t.Fatalf("rules after open: %v", m.rules)
			}
			if desc {
				for _, r := range m.rules[2:] {
					if u, ok := parseTag(r.Description); !ok || !u.Equal(now.Add(time.Minute)) {
						t.Errorf("rule %v: description %q does not carry the deadline", r, r.Description)
					}
				}
			}
			holes, err := b.Status(ctx)
			if err != nil || len(holes) != 2 {
				t.Errorf("status: %v, %v", holes, err)
			}
			if err := b.Close(ctx, w); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(m.rules, user) {
				t.Errorf("rules after close: %v, want the user's %v", m.rules, user)
			}
		})
	}
}

// A rule of the user's already accepting the port: nothing is added, and
// closing does not remove it.
func TestCloudRuleAlreadyPresent(t *testing.T) {
	user := []cloud.Rule{{FromPort: 1, ToPort: 65535}, {FromPort: 80, ToPort: 80, IPv6: true}}
	m := &memCloud{rules: slices.Clone(user)}
	now := time.Unix(1_800_000_000, 0)
	b, _ := newMemBackend(t, m, &now)
	ctx := context.Background()
	w := Window{Port: 80, Family: Inet, Timeout: time.Minute}
	if err := b.Open(ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := b.Sweep(ctx, true); err != nil {
		t.Fatal(err)
	}
	if len(m.calls) != 0 || !slices.Equal(m.rules, user) {
		t.Errorf("calls %v, rules %v: the user's rules must be left alone", m.calls, m.rules)
	}
}

// Opening again extends the deadline and never shortens it; the sweep
// removes only what is past its deadline.
func TestCloudDeadlineAndSweep(t *testing.T) {
	m := &memCloud{descriptions: true}
	now := time.Unix(1_800_000_000, 0)
	b, st := newMemBackend(t, m, &now)
	ctx := context.Background()
	if err := b.Open(ctx, Window{Port: 80, Family: IPv4, Timeout: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := b.Open(ctx, Window{Port: 80, Family: IPv4, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if len(m.calls) != 1 {
		t.Errorf("calls %v: the second open must reuse the rule", m.calls)
	}
	now = now.Add(5 * time.Minute)
	if err := b.Sweep(ctx, false); err != nil || m.has(80, false) != 1 {
		t.Fatalf("sweep before the deadline: %v, rules %v", err, m.rules)
	}
	now = now.Add(6 * time.Minute)
	if err := b.Sweep(ctx, false); err != nil || m.has(80, false) != 0 {
		t.Fatalf("sweep after the deadline: %v, rules %v", err, m.rules)
	}
	keys, _ := st.List(ctx, journalPrefix)
	if len(keys) != 0 {
		t.Errorf("journal left: %v", keys)
	}
}

// A run killed after writing its intent but before learning the rule's ID
// (the entry still "opening"): the sweep finds the rule by its
// description and removes it; with no description (DigitalOcean), by the
// rule itself.
func TestCloudSweepOpeningEntry(t *testing.T) {
	for _, desc := range []bool{false, true} {
		t.Run(fmt.Sprintf("descriptions=%v", desc), func(t *testing.T) {
			m := &memCloud{descriptions: desc, rules: []cloud.Rule{{FromPort: 443, ToPort: 443}}}
			now := time.Unix(1_800_000_000, 0)
			b, _ := newMemBackend(t, m, &now)
			ctx := context.Background()
			until := now.Add(time.Minute)
			e := cloudEntry{Provider: m.Provider(), Target: "fw-1", Port: 80, State: stateOpening, Opened: now, Until: until,
				Rule: cloud.Rule{FromPort: 80, ToPort: 80, Description: tagUntil(until)}}
			if err := b.save(ctx, e); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Add(ctx, e.Rule); err != nil { // the call that went through before the kill
				t.Fatal(err)
			}
			now = now.Add(2 * time.Minute)
			if err := b.Sweep(ctx, false); err != nil {
				t.Fatal(err)
			}
			if m.has(80, false) != 0 || m.has(443, false) != 1 {
				t.Errorf("rules after the sweep: %v", m.rules)
			}
		})
	}
}

// A tagged rule the journal does not know (another state directory's) is
// swept once its tag's deadline passes, not before.
func TestCloudSweepStrayTaggedRule(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	stray := cloud.Rule{FromPort: 80, ToPort: 80, ID: "r9", Description: tagUntil(now.Add(time.Minute))}
	m := &memCloud{descriptions: true, rules: []cloud.Rule{stray, {FromPort: 80, ToPort: 80, IPv6: true, Description: "mine"}}}
	b, _ := newMemBackend(t, m, &now)
	ctx := context.Background()
	if err := b.Sweep(ctx, false); err != nil || m.has(80, false) != 1 {
		t.Fatalf("swept early: %v %v", err, m.rules)
	}
	now = now.Add(2 * time.Minute)
	if err := b.Sweep(ctx, false); err != nil || m.has(80, false) != 0 || m.has(80, true) != 1 {
		t.Fatalf("after the deadline: %v %v", err, m.rules)
	}
}

// A refused Add leaves no journal entry (nothing to sweep); an Add whose
// outcome is unknown is undone at once when the rule turns out to exist,
// and its entry stays for the sweep when that fails too.
func TestCloudAddFailure(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	unavailable := &cloud.Error{Provider: "memcloud", Op: "adding", Kind: cloud.ErrUnavailable, Status: 503}
	applyFailed := &cloud.Error{Provider: "memcloud", Op: "applying", Kind: cloud.ErrRejected}
	for _, tc := range []struct {
		name      string
		err       error
		anyway    bool  // the rule was added all the same
		removeErr error // and removing it fails
		keep      bool  // the journal keeps the entry
		sentinel  error
		substr    string
	}{
		{"403", &cloud.Error{Provider: "memcloud", Op: "adding", Kind: cloud.ErrForbidden, Status: 403}, false, nil, false, ErrPermission, "HTTP 403"},
		{"401", &cloud.Error{Provider: "memcloud", Op: "adding", Kind: cloud.ErrAuth, Status: 401}, false, nil, false, ErrPermission, "HTTP 401"},
		{"404", &cloud.Error{Provider: "memcloud", Op: "adding", Kind: cloud.ErrNotFound, Status: 404}, false, nil, false, ErrUnsupported, "HTTP 404"},
		{"503, not added", unavailable, false, nil, false, cloud.ErrUnavailable, "HTTP 503"},
		{"timeout, added", context.DeadlineExceeded, true, nil, false, context.DeadlineExceeded, "deadline"},
		{"accepted then failed to apply", applyFailed, true, nil, false, cloud.ErrRejected, "applying"},
		{"added, and the undo fails", unavailable, true, errors.New("gone away"), true, cloud.ErrUnavailable, "HTTP 503"},
	} {
		for _, m := range []*memCloud{{}, {descriptions: true}, {descriptions: true, ids: true}} {
			t.Run(fmt.Sprintf("%s/descriptions=%v,ids=%v", tc.name, m.descriptions, m.ids), func(t *testing.T) {
				m.addErr, m.addAnyway, m.removeErr = tc.err, tc.anyway, tc.removeErr
				b, st := newMemBackend(t, m, &now)
				err := b.Open(ctx, Window{Port: 80, Family: IPv4, Timeout: time.Minute})
				if !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.substr) {
					t.Errorf("Open: %v; want %v and %q", err, tc.sentinel, tc.substr)
				}
				keys, _ := st.List(ctx, journalPrefix)
				if (len(keys) > 0) != tc.keep {
					t.Errorf("journal %v, want kept=%v", keys, tc.keep)
				}
				if want := tc.keep; (m.has(80, false) > 0) != want {
					t.Errorf("rules %v: a rule is left %v, want %v", m.rules, !want, want)
				}
				if tc.keep {
					// The sweep past the deadline removes it once the
					// provider lets it.
					m.removeErr = nil
					later := now.Add(2 * time.Minute)
					b.now = func() time.Time { return later }
					if err := b.Sweep(ctx, false); err != nil || m.has(80, false) != 0 {
						t.Errorf("sweep: %v, rules %v", err, m.rules)
					}
				}
			})
		}
	}
}

// A two-family window whose second family fails to open leaves nothing
// open: the first family's rule is removed again.
func TestCloudPartialOpenRolledBack(t *testing.T) {
	m := &memCloud{descriptions: true}
	now := time.Unix(1_800_000_000, 0)
	b, st := newMemBackend(t, m, &now)
	ctx := context.Background()
	b.api = &failSecond{memCloud: m}
	err := b.Open(ctx, Window{Port: 80, Family: Inet, Timeout: time.Minute})
	if err == nil {
		t.Fatal("Open succeeded")
	}
	if len(m.rules) != 0 {
		t.Errorf("rules left: %v", m.rules)
	}
	if keys, _ := st.List(ctx, journalPrefix); len(keys) != 0 {
		t.Errorf("journal left: %v", keys)
	}
}

// failSecond refuses the second rule added.
type failSecond struct {
	*memCloud
	n int
}

func (f *failSecond) Add(ctx context.Context, r cloud.Rule) (cloud.Rule, error) {
	if f.n++; f.n == 2 {
		return cloud.Rule{}, &cloud.Error{Provider: "memcloud", Op: "adding", Kind: cloud.ErrRejected, Status: 422, Message: "rule limit reached"}
	}
	return f.memCloud.Add(ctx, r)
}

// Hetzner's model (descriptions, no IDs): a rule of the user's, the same
// port and family without Detour's description, is never taken for
// Detour's, even when Detour's own rule was removed by hand meanwhile.
func TestCloudUserRuleNotTakenForOurs(t *testing.T) {
	m := &memCloud{descriptions: true}
	now := time.Unix(1_800_000_000, 0)
	b, _ := newMemBackend(t, m, &now)
	ctx := context.Background()
	w := Window{Port: 80, Family: IPv4, Timeout: time.Minute}
	if err := b.Open(ctx, w); err != nil {
		t.Fatal(err)
	}
	user := cloud.Rule{FromPort: 80, ToPort: 80} // no description, as a console-made rule may be
	m.rules = []cloud.Rule{user}                 // Detour's removed by hand, the user's added
	if err := b.Close(ctx, w); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	if err := b.Sweep(ctx, true); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.rules, []cloud.Rule{user}) {
		t.Errorf("rules %v: the user's rule was removed", m.rules)
	}
}

// The journal names a firewall this configuration no longer resolves to
// (firewall_id changed): the sweep still removes its stale rule there.
func TestCloudSweepOtherFirewall(t *testing.T) {
	old := &memCloud{descriptions: true, ids: true}
	now := time.Unix(1_800_000_000, 0)
	b, st := newMemBackend(t, old, &now)
	ctx := context.Background()
	if err := b.Open(ctx, Window{Port: 80, Family: IPv4, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	current := &otherTarget{memCloud: &memCloud{descriptions: true, ids: true}, id: "fw-2"}
	b2, err := newCloud(current, Options{Store: st, Logger: discard, Now: func() time.Time { return now.Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	b2.descriptions = true
	b2.forTarget = func(_ context.Context, id string) (cloud.API, error) {
		if id != "fw-1" {
			return nil, &cloud.Error{Provider: "memcloud", Op: "getting firewall " + id, Kind: cloud.ErrNotFound, Status: 404}
		}
		return old, nil
	}
	// A firewall deleted since: its entry is forgotten, and blocks nothing.
	gone := cloudEntry{Provider: "memcloud", Target: "fw-gone", Port: 80, State: stateOpen, Until: now,
		Rule: cloud.Rule{FromPort: 80, ToPort: 80, ID: "r7"}}
	if err := b2.save(ctx, gone); err != nil {
		t.Fatal(err)
	}
	holes, err := b2.Status(ctx)
	if err != nil || len(holes) != 2 || !strings.Contains(holes[0].Where, "no longer uses") {
		t.Errorf("status: %+v, %v", holes, err)
	}
	if err := b2.Sweep(ctx, false); err != nil {
		t.Fatal(err)
	}
	if old.has(80, false) != 0 {
		t.Errorf("the old firewall keeps %v", old.rules)
	}
	if keys, _ := st.List(ctx, journalPrefix); len(keys) != 0 {
		t.Errorf("journal left: %v", keys)
	}
}

type otherTarget struct {
	*memCloud
	id string
}

func (o *otherTarget) Target(context.Context) (cloud.Target, error) {
	return cloud.Target{ID: o.id}, nil
}
