package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// The JSON of `detour doctor --json`, as documented. These types are the
// test's own, not package doctor's: a field renamed there shows here as a
// missing value.

type report struct {
	Version        int            `json:"version"`
	CA             *caReport      `json:"ca"`
	Host           []checkResult  `json:"host"`
	Names          []nameReport   `json:"names"`
	Recommendation recommendation `json:"recommendation"`
}

type caReport struct {
	Directory string `json:"directory"`
	Reachable bool   `json:"reachable"`
}

type checkResult struct {
	Name     string   `json:"name"`
	Subject  string   `json:"subject"`
	Status   string   `json:"status"`
	Summary  string   `json:"summary"`
	Evidence []string `json:"evidence"`
	Fix      string   `json:"fix"`
}

func (c checkResult) text() string {
	return c.Summary + "\n" + strings.Join(c.Evidence, "\n") + "\n" + c.Fix
}

type nameReport struct {
	Name   string        `json:"name"`
	Checks []checkResult `json:"checks"`
	Paths  []ranked      `json:"paths"`
}

type ranked struct {
	Kind      string            `json:"kind"`
	Challenge string            `json:"challenge"`
	Firewall  string            `json:"firewall"`
	Verdict   string            `json:"verdict"`
	Why       string            `json:"why"`
	Change    string            `json:"change"`
	Snippet   string            `json:"snippet"`
	Settings  map[string]string `json:"settings"`
}

type chosenPath struct {
	Path string   `json:"path"`
	For  []string `json:"for"`
	ranked
}

type recommendation struct {
	Ready    bool         `json:"ready"`
	Paths    []chosenPath `json:"paths"`
	Changes  []string     `json:"changes"`
	Snippets []string     `json:"snippets"`
	TOML     string       `json:"toml"`
	Blocked  string       `json:"blocked"`
}

// diagnosis is one doctor run: its report and exit code.
type diagnosis struct {
	t    testing.TB
	rep  report
	code int
	raw  string
}

// doctor runs `detour doctor --json` on the host with the base
// configuration and parses its report.
func (h *host) doctor(args ...string) *diagnosis {
	h.t.Helper()
	r := h.detour(h.base, append([]string{"doctor", "--json"}, args...)...)
	d := &diagnosis{t: h.t, code: r.code, raw: r.stdout}
	if err := json.Unmarshal([]byte(r.stdout), &d.rep); err != nil {
		h.t.Fatalf("doctor --json printed no report (%v): %s", err, r)
	}
	d.wantShape()
	h.t.Logf("doctor %s: exit %d\n%s", strings.Join(args, " "), r.code, d.summary())
	return d
}

// wantShape checks what the README documents of every report: version 1,
// the CA's directory, each check's status and evidence list, each path's
// verdict.
func (d *diagnosis) wantShape() {
	d.t.Helper()
	if d.rep.Version != 1 {
		d.fail("report version %d, want 1", d.rep.Version)
	}
	if d.rep.CA == nil || !d.rep.CA.Reachable || d.rep.CA.Directory == "" {
		d.fail("the report does not show the CA's directory as reachable: %+v", d.rep.CA)
	}
	statuses := []string{"ok", "warning", "problem", "info", "skipped"}
	checks := slices.Clone(d.rep.Host)
	for _, n := range d.rep.Names {
		checks = append(checks, n.Checks...)
		if len(n.Paths) == 0 {
			d.fail("no path ranked for %s", n.Name)
		}
		for _, p := range n.Paths {
			if !slices.Contains([]string{"works", "after-change", "impossible"}, p.Verdict) || p.Why == "" {
				d.fail("path %s/%s of %s: verdict %q, why %q", p.Kind, p.Challenge, n.Name, p.Verdict, p.Why)
			}
		}
	}
	for _, c := range checks {
		if c.Name == "" || !slices.Contains(statuses, c.Status) || c.Evidence == nil || c.Summary == "" {
			d.fail("malformed check %+v", c)
		}
	}
	if len(d.rep.Names) == 0 {
		d.fail("the report holds no names")
	}
}

// summary renders the report briefly for the test's log.
func (d *diagnosis) summary() string {
	var b strings.Builder
	for _, c := range d.rep.Host {
		fmt.Fprintf(&b, "  host %s %s: %s\n", c.Status, c.Name, c.Summary)
	}
	for _, n := range d.rep.Names {
		for _, c := range n.Checks {
			fmt.Fprintf(&b, "  %s %s %s: %s\n", n.Name, c.Status, c.Name, c.Summary)
		}
		for _, p := range n.Paths {
			fw := ""
			if p.Firewall != "" {
				fw = " firewall " + p.Firewall
			}
			fmt.Fprintf(&b, "  %s path %s/%s%s: %s: %s\n", n.Name, p.Kind, p.Challenge, fw, p.Verdict, p.Why)
		}
	}
	rec := d.rep.Recommendation
	fmt.Fprintf(&b, "  recommendation: ready %v, changes %q, blocked %q\n%s", rec.Ready, rec.Changes, rec.Blocked, rec.TOML)
	return b.String()
}

// fail fails the test with what doctor said.
func (d *diagnosis) fail(format string, a ...any) {
	d.t.Helper()
	d.t.Errorf("%s\ndoctor's whole report:\n%s", fmt.Sprintf(format, a...), d.raw)
}

// wantExit checks doctor's exit code.
func (d *diagnosis) wantExit(code int) {
	d.t.Helper()
	if d.code != code {
		d.fail("doctor exited %d, want %d", d.code, code)
	}
}

// best returns the recommended path, failing the test when there is none.
func (d *diagnosis) best() chosenPath {
	d.t.Helper()
	if len(d.rep.Recommendation.Paths) == 0 {
		d.fail("doctor recommends no path (blocked: %q)", d.rep.Recommendation.Blocked)
		d.t.FailNow()
	}
	return d.rep.Recommendation.Paths[0]
}

// wantBest checks the recommended path's kind, challenge, firewall and
// verdict, and that the name's own ranking starts with it.
func (d *diagnosis) wantBest(kind, challenge, firewall, verdict string) chosenPath {
	d.t.Helper()
	p := d.best()
	if p.Kind != kind || p.Challenge != challenge || p.Firewall != firewall || p.Verdict != verdict {
		d.fail("doctor recommends %s/%s (firewall %q) %s, want %s/%s (firewall %q) %s: %s",
			p.Kind, p.Challenge, p.Firewall, p.Verdict, kind, challenge, firewall, verdict, p.Why)
		d.t.FailNow()
	}
	if len(d.rep.Names) > 0 && len(d.rep.Names[0].Paths) > 0 {
		if r := d.rep.Names[0].Paths[0]; r.Kind != kind || r.Challenge != challenge {
			d.fail("the ranking of %s starts with %s/%s, but the recommendation is %s/%s", d.rep.Names[0].Name, r.Kind, r.Challenge, kind, challenge)
		}
	}
	wantReady := verdict == "works"
	if d.rep.Recommendation.Ready != wantReady {
		d.fail("recommendation.ready = %v with a %s path", d.rep.Recommendation.Ready, verdict)
	}
	if d.rep.Recommendation.TOML == "" {
		d.fail("the recommendation holds no configuration")
	}
	return p
}

// check returns the check named name about subject ("" host-wide).
func (d *diagnosis) check(name, subject string) checkResult {
	d.t.Helper()
	cs := d.rep.Host
	if subject != "" {
		cs = nil
		for _, n := range d.rep.Names {
			if n.Name == subject {
				cs = n.Checks
			}
		}
	}
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	d.fail("no check %s for %q", name, subject)
	d.t.FailNow()
	return checkResult{}
}

// path returns the ranking of kind/challenge for name.
func (d *diagnosis) path(name, kind, challenge string) ranked {
	d.t.Helper()
	for _, n := range d.rep.Names {
		if n.Name != name {
			continue
		}
		for _, p := range n.Paths {
			if p.Kind == kind && p.Challenge == challenge {
				return p
			}
		}
	}
	d.fail("no ranking of %s/%s for %s", kind, challenge, name)
	d.t.FailNow()
	return ranked{}
}

// wantIn fails the test unless text (what a part of the report says)
// contains every one of want, case-insensitively.
func (d *diagnosis) wantIn(what, text string, want ...string) {
	d.t.Helper()
	low := strings.ToLower(text)
	for _, w := range want {
		if !strings.Contains(low, strings.ToLower(w)) {
			d.fail("%s does not name %q:\n%s", what, w, text)
		}
	}
}

// wantStatus checks a check's status.
func (d *diagnosis) wantStatus(c checkResult, status ...string) {
	d.t.Helper()
	for _, s := range status {
		if c.Status == s {
			return
		}
	}
	d.fail("check %s %s is %s, want %s: %s", c.Name, c.Subject, c.Status, strings.Join(status, " or "), c.Summary)
}
