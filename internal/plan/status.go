package plan

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/agent"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
)

// AgentSocket is the status socket of the running agent, in the state
// directory.
const AgentSocket = "agent.sock"

// CertStatus is one row of `detour status` and `detour list`.
type CertStatus struct {
	Name        string     `json:"name"`
	Identifiers []string   `json:"identifiers"`
	CA          string     `json:"ca"`
	Version     int        `json:"version"`
	NotAfter    time.Time  `json:"not_after"`
	DaysLeft    float64    `json:"days_left"`
	RenewAt     time.Time  `json:"renew_at"`
	RenewReason string     `json:"renew_reason"`
	ARIStart    *time.Time `json:"ari_start,omitempty"`
	ARIEnd      *time.Time `json:"ari_end,omitempty"`
	LastOK      *bool      `json:"last_ok,omitempty"`
	LastTime    *time.Time `json:"last_time,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	Paths       []string   `json:"paths"`
	Fullchain   string     `json:"fullchain"`
	Privkey     string     `json:"privkey"`
	// Source is "agent" when the running agent answered (its schedule,
	// next CA and failures are then filled in), else "store".
	Source   string `json:"source"`
	Running  bool   `json:"running,omitempty"`
	NextCA   string `json:"next_ca,omitempty"`
	Failures int    `json:"failures,omitempty"`
	// State is the verdict: "ok"; "failing" (the last renewal failed);
	// "expired"; "broken" (the record cannot be read, or the live pair is
	// not what a server can use: Problem says what, Fix what to do).
	State   string `json:"state"`
	Problem string `json:"problem,omitempty"`
	Fix     string `json:"fix,omitempty"`
	// Alert is what `detour status --check` fails on: broken, expired, or
	// in the last third of its life with the last renewal failed.
	Alert bool `json:"alert"`
}

// States of a certificate.
const (
	StateOK      = "ok"
	StateFailing = "failing"
	StateExpired = "expired"
	StateBroken  = "broken"
	// StateRevoked is a certificate revoked (or one the CA asks to
	// replace now).
	StateRevoked = "revoked"
	// StatePending is a certificate the running agent has to obtain yet.
	StatePending = "pending"
)

// Status returns a row for each certificate named (every one when none
// is), from the records, overlaid with the running agent's view when an
// agent answers on the state directory's socket.
func (p *Planner) Status(ctx context.Context, names []string) ([]CertStatus, error) {
	scan, err := p.shared.ScanRecords(ctx)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	now := time.Now()
	rows := []CertStatus{}
	for _, r := range scan.Records {
		if len(want) > 0 && !want[r.Name] {
			continue
		}
		delete(want, r.Name)
		rows = append(rows, p.statusOf(r, now))
	}
	for _, b := range scan.Broken {
		if len(want) > 0 && !want[b.Name] {
			continue
		}
		delete(want, b.Name)
		rows = append(rows, p.brokenRecordStatus(b))
	}
	for _, file := range scan.Ignored {
		p.log.Warn("ignoring a file in renewal/ that is not a certificate record", "file", file)
	}
	slices.SortFunc(rows, func(a, b CertStatus) int { return strings.Compare(a.Name, b.Name) })
	rows = p.mergeAgentStatus(ctx, rows, want)
	for n := range want {
		return nil, fmt.Errorf("no certificate named %q in %s", n, p.Store.Dir())
	}
	return rows, nil
}

// checkLive verifies the live pair of r. In a fleet, this node's live/
// follows the fleet's version through its deployer, which keeps a record
// of what it wrote in the node's own state directory: the pair is checked
// against that one (nil before the node deployed the certificate; `detour
// fleet status` shows which version each node serves).
func (p *Planner) checkLive(r store.Record, now time.Time) error {
	if p.fleet == nil {
		return p.Store.CheckLive(r.Name, r, now)
	}
	local, err := p.Store.LoadRecord(context.Background(), r.Name)
	if err != nil {
		return nil
	}
	return p.Store.CheckLive(r.Name, local, now)
}

// brokenRecordStatus is the row of a certificate whose record cannot be
// read.
func (p *Planner) brokenRecordStatus(b store.BrokenRecord) CertStatus {
	s := CertStatus{Name: b.Name, Identifiers: []string{}, Paths: []string{}, Source: "store", State: StateBroken, Alert: true,
		Fullchain: p.Store.LivePath(b.Name, "fullchain.pem"), Privkey: p.Store.LivePath(b.Name, "privkey.pem"),
		Problem: fmt.Sprintf("its record %s cannot be read: %v", b.File, b.Err)}
	if _, err := p.cfg.Certificate(b.Name); err == nil {
		s.Fix = fmt.Sprintf("`detour renew %s` (and the agent) rebuild the record from live/%s and the configuration; the broken file is kept beside it", b.Name, b.Name)
	} else {
		s.Fix = fmt.Sprintf("this certificate was issued with flags and its record is the only description of it: restore %s from a backup, or issue it again with `detour issue -d ...` (live/%s is untouched)", b.File, b.Name)
	}
	return s
}
func (p *Planner) statusOf(r store.Record, now time.Time) CertStatus {
	d := renew.Due(r, now, 0)
	s := CertStatus{
		Name: r.Name, Identifiers: r.Identifiers, CA: r.CA, Version: r.Version, NotAfter: r.NotAfter,
		DaysLeft: math.Round(r.NotAfter.Sub(now).Hours()/24*10) / 10,
		RenewAt:  d.At, RenewReason: d.Reason,
		Fullchain: p.Store.LivePath(r.Name, "fullchain.pem"), Privkey: p.Store.LivePath(r.Name, "privkey.pem"),
		Source: "store",
	}
	for _, ref := range r.Paths {
		s.Paths = append(s.Paths, ref.Name)
	}
	if r.ARI != nil {
		s.ARIStart, s.ARIEnd = &r.ARI.Start, &r.ARI.End
	}
	if r.Last != nil {
		s.LastOK, s.LastTime, s.LastError = &r.Last.OK, &r.Last.Time, r.Last.Error
	}
	s.State = StateOK
	if r.Last != nil && !r.Last.OK {
		s.State = StateFailing
		s.Problem = "the last renewal failed: " + firstLine(r.Last.Error)
		s.Fix = "see the error; the next attempt is at " + d.At.UTC().Format(time.RFC3339)
		// In the last third of its life, failing means trouble.
		s.Alert = !now.Before(r.NotAfter.Add(-r.NotAfter.Sub(r.NotBefore) / 3))
	}
	if !r.Revoked.IsZero() {
		s.State, s.Alert = StateRevoked, true
		s.Problem = "revoked with detour revoke at " + r.Revoked.UTC().Format(time.RFC3339)
		s.Fix = fmt.Sprintf("`detour renew %s` replaces it now (cron and the agent do at their next run)", r.Name)
	} else if renew.WindowPassed(r.ARI) {
		s.State, s.Alert = StateRevoked, true
		s.Problem = "the CA asks for it to be replaced now (its renewal window has passed: revoked?)"
		if r.ARI.ExplanationURL != "" {
			s.Problem += "; see " + r.ARI.ExplanationURL
		}
		s.Fix = fmt.Sprintf("`detour renew %s` replaces it now", r.Name)
	}
	var le *store.LiveError
	if err := p.checkLive(r, now); errors.As(err, &le) {
		s.Problem, s.Alert = le.Problem, true
		switch {
		case p.fleet != nil && !le.Expired:
			// A node's own files: no renewal of the fleet's certificate
			// mends them, its deployer does.
			s.State, s.Fix = StateBroken, fmt.Sprintf("restart this node's agent (systemctl restart detour): its deployer writes %s and %s again from the fleet's version when it starts; `detour fleet status` shows what each node serves", s.Fullchain, s.Privkey)
		case le.Expired:
			s.State, s.Fix = StateExpired, fmt.Sprintf("`detour renew %s` renews it now", r.Name)
		default:
			s.State, s.Fix = StateBroken, fmt.Sprintf("`detour renew` (and the agent) renew it at once; the files web servers read are %s and %s", s.Fullchain, s.Privkey)
		}
	}
	return s
}

// firstLine returns the first line of s.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// mergeAgentStatus overlays the running agent's view on rows from the
// store: its next event and reason, the CA its next attempt uses, and
// certificates it manages that have no record yet. want (names asked for;
// empty: all) loses the names the agent knows. Without an agent the rows
// are returned as they are.
func (p *Planner) mergeAgentStatus(ctx context.Context, rows []CertStatus, want map[string]bool) []CertStatus {
	live, err := agent.FetchStatus(ctx, filepath.Join(p.Store.Dir(), AgentSocket))
	if err != nil {
		if !errors.Is(err, agent.ErrNotRunning) {
			p.log.Warn("the running agent did not answer; showing the store", "error", err)
		}
		return rows
	}
	return mergeLive(rows, live, want)
}

// mergeLive overlays live, the agent's view, on rows (see
// mergeAgentStatus).
func mergeLive(rows []CertStatus, live []agent.Status, want map[string]bool) []CertStatus {
	byName := make(map[string]int, len(rows))
	for i, r := range rows {
		byName[r.Name] = i
	}
	asked := len(want) > 0
	for _, s := range live {
		i, ok := byName[s.Name]
		if !ok {
			if asked && !want[s.Name] {
				continue
			}
			delete(want, s.Name)
			rows = append(rows, CertStatus{Name: s.Name, Identifiers: s.Identifiers, Paths: []string{}, State: StatePending})
			i = len(rows) - 1
		}
		r := &rows[i]
		r.Source, r.Running, r.NextCA, r.Failures = "agent", s.Running, s.NextCA, s.Failures
		r.RenewReason = s.Reason
		if s.NextAction == "renew" || r.RenewAt.IsZero() {
			r.RenewAt = s.Next
		}
		if s.LastOK != nil {
			ok, at := *s.LastOK, s.LastTime
			r.LastOK, r.LastTime, r.LastError = &ok, &at, s.LastError
			if !ok && (r.State == StateOK || r.State == StatePending) {
				r.State, r.Problem = StateFailing, "the last attempt failed: "+firstLine(s.LastError)
			}
		}
	}
	return rows
}
