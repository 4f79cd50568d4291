package plan

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/detour-acme/detour/internal/agent"
	"github.com/detour-acme/detour/internal/firewall"
	"github.com/detour-acme/detour/internal/statuspage"
	"github.com/detour-acme/detour/internal/store"
)

// StatusPageOptions configure NewStatusPage.
type StatusPageOptions struct {
	// Agent is the running agent whose schedule the page shows.
	Agent *agent.Agent
	// History is where the agent keeps its attempts (Planner.History).
	History agent.History
	// Version is detour's version, Started when the agent started.
	Version string
	Started time.Time
}

// StatusPage is the status page's view of the state: it implements
// statuspage.Source from the records, the running agent, its history,
// the configuration (deploy targets), the firewall leases and the fleet.
// Every string it returns has the configuration's secrets taken out.
type StatusPage struct {
	opts StatusPageOptions
	p    atomic.Pointer[Planner]
}

var _ statuspage.Source = (*StatusPage)(nil)

// NewStatusPage returns the status page's source over p; SetPlanner
// swaps the planner when the configuration is reloaded.
func (p *Planner) NewStatusPage(opts StatusPageOptions) *StatusPage {
	s := &StatusPage{opts: opts}
	s.p.Store(p)
	return s
}

// SetPlanner makes the page follow a reloaded configuration.
func (s *StatusPage) SetPlanner(p *Planner) { s.p.Store(p) }

// History returns the agent's history of attempts, kept in the state
// directory (history/<name>.json).
func (p *Planner) History() agent.History { return &agent.StorageHistory{Storage: p.Store} }

// Page implements statuspage.Source.
func (s *StatusPage) Page(ctx context.Context) (statuspage.Page, error) {
	p := s.p.Load()
	now := time.Now()
	page := statuspage.Page{Generated: now, Certificates: []statuspage.Certificate{}, Windows: []statuspage.Window{},
		Agent: statuspage.Agent{Version: s.opts.Version, Started: s.opts.Started, StateDir: p.Store.Dir()}}
	certs, notes, err := s.certificates(ctx, p, now)
	if err != nil {
		return page, err
	}
	page.Certificates, page.Notes = certs, notes
	wins, err := p.OpenWindows(ctx)
	if err != nil {
		page.Notes = append(page.Notes, "the firewall windows cannot be read: "+err.Error())
	}
	for _, w := range wins {
		page.Windows = append(page.Windows, statuspage.Window{Backend: w.Backend, Port: w.Port, Family: w.Family,
			Identifier: w.Identifier, Opened: w.Opened, Until: w.Until, Overdue: w.Overdue})
	}
	if p.Fleet() {
		f, err := s.fleet(ctx, p)
		if err != nil {
			page.Notes = append(page.Notes, "the fleet's state cannot be read: "+err.Error())
		}
		page.Fleet = f
	}
	statuspage.Redact(&page, p.secrets())
	return page, nil
}

// certificates returns every certificate (only the one named, when only
// is set): the records, broken ones included, with the agent's schedule
// over them.
func (s *StatusPage) certificates(ctx context.Context, p *Planner, now time.Time, only ...string) ([]statuspage.Certificate, []string, error) {
	recs := map[string]store.Record{}
	var rows []CertStatus
	if len(only) == 1 {
		// One certificate: its record alone, unless it does not read.
		r, err := p.shared.LoadRecord(ctx, only[0])
		switch {
		case err == nil:
			recs[r.Name] = r
			rows = append(rows, p.statusOf(r, now))
		case errors.Is(err, fs.ErrNotExist):
		default:
			rows = append(rows, p.brokenRecordStatus(store.BrokenRecord{Name: only[0],
				File: filepath.Join(p.Store.Dir(), "renewal", only[0]+".json"), Err: err}))
		}
	} else {
		scan, err := p.shared.ScanRecords(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("reading the certificate records: %w", err)
		}
		for _, r := range scan.Records {
			recs[r.Name] = r
			rows = append(rows, p.statusOf(r, now))
		}
		for _, b := range scan.Broken {
			rows = append(rows, p.brokenRecordStatus(b))
		}
	}
	var notes []string
	live := map[string]agent.Status{}
	if s.opts.Agent != nil {
		st, err := s.opts.Agent.Status(ctx)
		if err != nil {
			notes = append(notes, "the agent did not answer; its schedule is missing: "+err.Error())
		}
		if len(only) == 1 {
			st = slices.DeleteFunc(st, func(a agent.Status) bool { return a.Name != only[0] })
		}
		for _, a := range st {
			live[a.Name] = a
		}
		rows = mergeLive(rows, st, map[string]bool{})
	}
	slices.SortFunc(rows, func(a, b CertStatus) int { return strings.Compare(a.Name, b.Name) })
	out := make([]statuspage.Certificate, 0, len(rows))
	for _, row := range rows {
		var rec *store.Record
		if r, ok := recs[row.Name]; ok {
			rec = &r
		}
		a, ok := live[row.Name]
		out = append(out, certificateOf(row, rec, a, ok))
	}
	return out, notes, nil
}

// certificateOf is one certificate of the page: the row `detour status`
// shows, the record's dates and last attempt, the agent's schedule.
func certificateOf(row CertStatus, rec *store.Record, a agent.Status, live bool) statuspage.Certificate {
	c := statuspage.Certificate{Name: row.Name, Identifiers: row.Identifiers, State: row.State, Problem: row.Problem, Fix: row.Fix,
		Version: row.Version, NotAfter: row.NotAfter, CA: row.CA, Paths: row.Paths, NextRenewal: row.RenewAt,
		NextReason: row.RenewReason, NextCA: row.NextCA, Failures: row.Failures}
	if c.Identifiers == nil {
		c.Identifiers = []string{}
	}
	if c.Paths == nil {
		c.Paths = []string{}
	}
	if row.ARIStart != nil {
		c.ARIStart, c.ARIEnd = *row.ARIStart, *row.ARIEnd
	}
	if rec != nil {
		c.NotBefore, c.Serial = rec.NotBefore, rec.Serial
		if rec.Last != nil {
			c.Last = &statuspage.Attempt{Time: rec.Last.Time, OK: rec.Last.OK, Path: rec.Last.Path, CA: rec.Last.CA, Error: rec.Last.Error,
				Stage: stageOf(rec.Last.Error)}
			if c.Last.CA == "" && rec.Last.OK {
				c.Last.CA = caLabel(*rec)
			}
			if !rec.Last.OK && c.Failures == 0 {
				c.Failures = rec.Last.Failures
			}
		}
	}
	if live {
		if a.Running && (c.State == StateOK || c.State == StatePending || c.State == StateFailing) {
			c.State = statuspage.StateRenewing
		}
		if a.LastOK != nil && (c.Last == nil || a.LastTime.After(c.Last.Time)) {
			c.Last = &statuspage.Attempt{Time: a.LastTime, OK: *a.LastOK, Error: a.LastError, Stage: stageOf(a.LastError), Path: a.LastPath, CA: a.LastCA}
		}
	}
	if c.Last != nil && !c.Last.OK && c.State == StateFailing {
		c.Fix = failingFix(c)
	}
	if c.Last != nil && c.Last.OK {
		c.Last.Error = ""
	}
	return c
}

// stages are where a renewal fails (renew.Error's stages).
var stages = []string{"preflight", "account", "order", "self-check", "validation", "finalize", "store"}

// stageOf reads the stage out of a renewal's error, which reads
// `certificate "NAME": STAGE: ...` (renew.Error); "" when it does not.
func stageOf(e string) string {
	_, rest, ok := strings.Cut(e, `": `)
	if !ok || !strings.HasPrefix(e, "certificate ") {
		return ""
	}
	st, _, ok := strings.Cut(rest, ": ")
	if ok && slices.Contains(stages, st) {
		return st
	}
	return ""
}

// caLabel names the CA that issued rec: its name in the configuration
// when it has one, else its directory URL.
func caLabel(rec store.Record) string {
	if rec.CAName != "" {
		return rec.CAName
	}
	return rec.CA
}

// failingFix says what to do about a failing certificate: the error's
// own explanation says what to change; then when the agent tries again.
func failingFix(c statuspage.Certificate) string {
	next := ""
	if !c.NextRenewal.IsZero() {
		next = " The agent tries again at " + c.NextRenewal.UTC().Format("2006-01-02 15:04Z") + ";"
	}
	what := "Change what the error names (its explanation above says what and where)."
	if !strings.Contains(c.Last.Error, "\n") {
		what = "Change what the error names."
	}
	return fmt.Sprintf("%s%s `detour renew --force %s` tries at once. The live certificate is untouched meanwhile.", what, next, c.Name)
}

// Detail implements statuspage.Source.
func (s *StatusPage) Detail(ctx context.Context, name string) (statuspage.Detail, error) {
	p := s.p.Load()
	if store.ValidName(name) != nil {
		return statuspage.Detail{}, fmt.Errorf("%q is not a certificate name: %w", name, statuspage.ErrNotFound)
	}
	now := time.Now()
	certs, notes, err := s.certificates(ctx, p, now, name)
	if err != nil {
		return statuspage.Detail{}, err
	}
	if len(certs) != 1 {
		return statuspage.Detail{}, fmt.Errorf("%q is neither configured nor recorded: %w", name, statuspage.ErrNotFound)
	}
	d := statuspage.Detail{Generated: now, Certificate: certs[0], History: []statuspage.Attempt{},
		Versions: []statuspage.Version{}, Deploy: []statuspage.DeployTarget{}, Notes: notes}
	var attempts []agent.Attempt
	if s.opts.History != nil {
		if attempts, err = s.opts.History.Attempts(ctx, name); err != nil {
			d.Notes = append(d.Notes, "the history cannot be read: "+err.Error())
		}
	}
	for _, a := range attempts {
		d.History = append(d.History, attemptOf(a))
	}
	d.Versions, err = p.versions(ctx, name, d.Certificate.Version)
	if err != nil {
		d.Notes = append(d.Notes, "the archive cannot be read: "+err.Error())
	}
	d.Deploy = p.deployTargets(name, attempts)
	if p.Fleet() {
		nodes, err := p.fleetNodes(ctx, name)
		if err != nil {
			d.Notes = append(d.Notes, "the fleet's state cannot be read: "+err.Error())
		}
		d.Nodes = nodes
	}
	statuspage.Redact(&d, p.secrets())
	return d, nil
}

func attemptOf(a agent.Attempt) statuspage.Attempt {
	out := statuspage.Attempt{Time: a.Time, OK: a.OK, Path: a.Path, CA: a.CA, Seconds: a.Took.Seconds(), Stage: a.Stage,
		Error: a.Error, Version: a.Version, Serial: a.Serial, DeployError: a.DeployError}
	for _, st := range a.Steps {
		out.Steps = append(out.Steps, statuspage.Step{Name: st.Name, Seconds: st.Took.Seconds()})
	}
	return out
}

// Window is a firewall window recorded as open on this host.
type Window struct {
	Backend    string
	Port       int
	Family     string
	Identifier string
	Opened     time.Time
	Until      time.Time
	// Overdue: past its deadline on a firewall that does not close it by
	// itself (ufw, exec, a cloud firewall), and not removed.
	Overdue bool
}

// OpenWindows returns the firewall windows recorded in the state
// directory that are open, or may be: before their deadline, or past it
// on a firewall that does not close them by itself. A window past its
// deadline on nftables, iptables or firewalld was closed by the kernel
// (or firewalld) whatever became of its lease.
func (p *Planner) OpenWindows(ctx context.Context) ([]Window, error) {
	leases, err := firewall.RecordedLeases(ctx, p.Store)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var out []Window
	for _, l := range leases {
		past := !l.Until.After(now)
		if past && firewall.ClosesItself(l.Backend) {
			continue
		}
		out = append(out, Window{Backend: l.Backend, Port: l.Port, Family: string(l.Family), Identifier: l.Identifier,
			Opened: l.Opened, Until: l.Until, Overdue: past})
	}
	slices.SortFunc(out, func(a, b Window) int { return a.Until.Compare(b.Until) })
	return out, nil
}

// MetricsWindows is OpenWindows for the agent's metrics.
func (p *Planner) MetricsWindows(ctx context.Context) ([]agent.Window, error) {
	ws, err := p.OpenWindows(ctx)
	out := make([]agent.Window, 0, len(ws))
	for _, w := range ws {
		out = append(out, agent.Window{Backend: w.Backend, Port: w.Port, Family: w.Family, Until: w.Until})
	}
	return out, err
}
