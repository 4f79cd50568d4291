package statuspage

import (
	"embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"net/url"
	"strings"
	"time"
)

// assets are the templates, the style sheet and the small script: all of
// the page is in the binary, nothing is fetched from the network.
//
//go:embed assets
var assets embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"pct":  func(f float64) string { return fmt.Sprintf("%.2f", f) },
	"join": strings.Join,
	"path": url.PathEscape,
	"sub":  func(a, b float64) float64 { return a - b },
	"add":  func(a, b float64) float64 { return a + b },
	"head": func(title, root string) headView { return headView{Title: title, Root: root} },
}).ParseFS(assets, "assets/*.html"))

// headView is what the documents' head needs: the title, and the way
// back to the root (links are relative, so that the page works behind a
// reverse proxy under any prefix).
type headView struct{ Title, Root string }

// stateText is what the page says for each state.
var stateText = map[string]string{
	StateOK: "OK", StateRenewing: "Renewing", StateFailing: "Failing", StateBroken: "Broken",
	StateExpired: "Expired", StateRevoked: "Revoked", StatePending: "Pending",
}

// stateOrder is the order of the summary's counts.
var stateOrder = []string{StateBroken, StateExpired, StateRevoked, StateFailing, StateRenewing, StatePending, StateOK}

// overviewView is what the overview template renders.
type overviewView struct {
	Page
	Counts []count
	Rows   []rowView
	WinRow []windowView
}

type count struct {
	State, Text string
	N           int
}

// rowView is one certificate with what the template computes nothing of:
// texts and geometry are made here.
type rowView struct {
	Certificate
	StateText string
	Left      string // "34.5 of 90 days left"
	Expires   string // "expires 2026-08-17"
	// Bar is the share of the lifetime left, in percent; Low is set in
	// the last third of the life.
	Bar      float64
	Low      bool
	TL       timeline
	LastText string
	ErrHead  string
	ErrRest  string
	// Why is set when the row is followed by its problem, error and fix.
	Why bool
}

// timeline places the certificate's life on 0..100: where now is, the
// CA's renewal window, the planned renewal and the point where a third of
// the life is left.
type timeline struct {
	Known                   bool
	Now, Third, Plan        float64
	HasARI, HasPlan         bool
	ARIFrom, ARIWidth       float64
	Caption                 string
	NotBefore, NotAfter     string
	PlanText, ARIText, Desc string
}

type windowView struct {
	Window
	UntilText string
}

func newRow(c Certificate, now time.Time) rowView {
	r := rowView{Certificate: c, StateText: stateText[c.State], TL: newTimeline(c, now)}
	if r.StateText == "" {
		r.StateText = c.State
	}
	if life := c.Lifetime(); life > 0 {
		left := c.NotAfter.Sub(now)
		r.Bar, r.Low = clamp(100*float64(left)/float64(life)), left < life/3
		r.Left, r.Expires = fmt.Sprintf("%s of %s days left", days(left), days(life)), "expires "+day(c.NotAfter)
		if left < 0 {
			r.Left, r.Expires = "expired "+ago(-left)+" ago", day(c.NotAfter)
		}
	}
	if a := c.Last; a != nil {
		r.LastText = lastText(*a, now)
		r.ErrHead, r.ErrRest = splitError(a.Error)
		switch {
		case c.State == StateBroken && c.Problem != "":
			// What is broken says more than the attempt that tripped on
			// it (the certificate's page lists the attempt).
			r.ErrHead, r.ErrRest = "", ""
		case r.ErrHead != "" && strings.Contains(c.Problem, r.ErrHead):
			r.Problem = "" // the error below says it in full
		}
	}
	r.Why = c.State != StateOK && (r.Problem != "" || r.ErrHead != "")
	return r
}

func newTimeline(c Certificate, now time.Time) timeline {
	life := c.Lifetime()
	if life <= 0 {
		switch {
		case c.State == StateBroken:
			return timeline{Caption: "no dates: the record cannot be read"}
		case c.Version == 0:
			return timeline{Caption: "not issued yet"}
		}
		return timeline{Caption: "no dates"}
	}
	at := func(t time.Time) float64 { return clamp(100 * float64(t.Sub(c.NotBefore)) / float64(life)) }
	tl := timeline{Known: true, Now: at(now), Third: at(c.NotAfter.Add(-life / 3)),
		NotBefore: day(c.NotBefore), NotAfter: day(c.NotAfter)}
	var desc []string
	if !c.ARIStart.IsZero() && !c.ARIEnd.IsZero() {
		tl.HasARI = true
		tl.ARIFrom = at(c.ARIStart)
		tl.ARIWidth = max(at(c.ARIEnd)-tl.ARIFrom, 0.6)
		tl.ARIText = "CA's window " + span(c.ARIStart, c.ARIEnd)
		desc = append(desc, tl.ARIText)
	}
	if !c.NextRenewal.IsZero() {
		tl.HasPlan, tl.Plan = true, at(c.NextRenewal)
		tl.PlanText = fmt.Sprintf("renewal %s (%s)", stamp(c.NextRenewal), rel(c.NextRenewal, now))
		desc = append(desc, tl.PlanText)
	}
	tl.Desc = strings.Join(desc, " · ")
	return tl
}

// lastText sums up an attempt in a few words.
func lastText(a Attempt, now time.Time) string {
	verb := "renewed"
	if !a.OK {
		verb = "failed"
		if a.Stage != "" {
			verb += " at " + a.Stage
		}
	}
	s := verb + " " + rel(a.Time, now)
	if a.Path != "" {
		s += " via " + a.Path
	}
	if a.CA != "" {
		s += " from " + a.CA
	}
	return s
}

// splitError returns an error's first line and the rest: Detour's errors
// explain themselves and say what to change on the lines after the first.
func splitError(e string) (head, rest string) {
	head, rest, _ = strings.Cut(e, "\n")
	return head, strings.TrimSpace(rest)
}

func clamp(f float64) float64 { return math.Max(0, math.Min(100, f)) }

// days formats a duration in days, with one decimal below ten.
func days(d time.Duration) string {
	n := d.Hours() / 24
	if math.Abs(n) < 10 {
		return fmt.Sprintf("%.1f", n)
	}
	return fmt.Sprintf("%.0f", n)
}

// rel says when t is from now: "in 3d 4h", "5m ago".
func rel(t, now time.Time) string {
	if d := t.Sub(now); d >= 0 {
		return "in " + short(d)
	}
	return ago(now.Sub(t)) + " ago"
}

func ago(d time.Duration) string { return short(d) }

// short formats d coarsely: 3d 4h, 5h 12m, 4m, 12s.
func short(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	case d >= 24*time.Hour:
		return fmt.Sprintf("1d %dh", int(d.Hours())-24)
	case d >= time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	}
	return fmt.Sprintf("%ds", int(d.Seconds()))
}

// stamp is an absolute time in UTC, to the minute.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04Z") }

// span is a period of days, the second date shortened: 2026-07-18 – 07-20.
func span(from, to time.Time) string {
	f, t := from.UTC(), to.UTC()
	switch {
	case f.Year() != t.Year():
		return day(f) + " – " + day(t)
	case f.YearDay() == t.YearDay():
		return day(f)
	}
	return day(f) + " – " + t.Format("01-02")
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02") }

// RenderOverview writes the overview of p as an HTML document.
func RenderOverview(w io.Writer, p Page) error {
	v := overviewView{Page: p}
	n := map[string]int{}
	for _, c := range p.Certificates {
		n[c.State]++
		v.Rows = append(v.Rows, newRow(c, p.Generated))
	}
	for _, s := range stateOrder {
		if n[s] > 0 {
			v.Counts = append(v.Counts, count{State: s, Text: stateText[s], N: n[s]})
		}
	}
	for _, win := range p.Windows {
		v.WinRow = append(v.WinRow, windowView{Window: win, UntilText: stamp(win.Until) + " (" + rel(win.Until, p.Generated) + ")"})
	}
	return templates.ExecuteTemplate(w, "overview.html", v)
}

// detailView is what the certificate's template renders.
type detailView struct {
	Detail
	Row     rowView
	History []attemptView
	Vers    []versionView
}

type attemptView struct {
	Attempt
	When, Took, Steps string
	ErrHead, ErrRest  string
}

type versionView struct {
	Version
	NotAfterText string
}

// RenderDetail writes the page of one certificate as an HTML document.
func RenderDetail(w io.Writer, d Detail) error {
	v := detailView{Detail: d, Row: newRow(d.Certificate, d.Generated)}
	for _, a := range d.History {
		av := attemptView{Attempt: a, When: stamp(a.Time) + " (" + rel(a.Time, d.Generated) + ")"}
		if a.Seconds > 0 {
			av.Took = seconds(a.Seconds)
		}
		var steps []string
		for _, s := range a.Steps {
			steps = append(steps, s.Name+" "+seconds(s.Seconds))
		}
		av.Steps = strings.Join(steps, " · ")
		av.ErrHead, av.ErrRest = splitError(a.Error)
		v.History = append(v.History, av)
	}
	for _, ver := range d.Versions {
		vv := versionView{Version: ver}
		if !ver.NotAfter.IsZero() {
			vv.NotAfterText = stamp(ver.NotAfter)
		}
		v.Vers = append(v.Vers, vv)
	}
	return templates.ExecuteTemplate(w, "certificate.html", v)
}

// seconds formats a duration given in seconds: 12ms, 1.4s, 2m 5s.
func seconds(s float64) string {
	switch {
	case s < 1:
		return fmt.Sprintf("%.0fms", s*1000)
	case s < 60:
		return fmt.Sprintf("%.1fs", s)
	}
	return fmt.Sprintf("%dm %ds", int(s)/60, int(s)%60)
}
