// Package check holds the result type every check of `detour doctor`
// reports: a named verdict on one subject, with the evidence it rests on
// and the fix. The checks themselves live in the sibling packages
// (dnscheck, hostcheck, httpprobe); package doctor runs them and ranks the
// path kinds from their facts.
//
// The JSON form of Result is part of `detour doctor --json`, which is
// documented and stable: fields are added, never renamed or removed.
package check

import (
	"fmt"
	"strings"
)

// Status is a check's verdict.
type Status string

const (
	// OK: nothing to do.
	OK Status = "ok"
	// Warning: works, but something may bite (an AAAA record nobody
	// answers on, a CAA record that a future CA change would trip on).
	Warning Status = "warning"
	// Problem: a validation through the paths it concerns would fail.
	Problem Status = "problem"
	// Info: a fact reported without a verdict (which server holds :443).
	Info Status = "info"
	// Skipped: the check could not run here (no permission, no tool); the
	// evidence says why.
	Skipped Status = "skipped"
)

// Result is one check's outcome.
type Result struct {
	// Name identifies the check, dotted and stable: "dns.addresses",
	// "port.80", "web.nginx", "http.webroot", "firewall.inbound",
	// "dns.caa", ...
	Name string `json:"name"`
	// Subject is the DNS name the check is about; empty for a host-wide
	// check (who holds :80).
	Subject string `json:"subject,omitempty"`
	// Status is the verdict.
	Status Status `json:"status"`
	// Summary is one line for people: what was found.
	Summary string `json:"summary"`
	// Evidence lists what the verdict rests on, one fact per line, each
	// as observed: a DNS answer and the server that gave it, a process
	// and its command line, a response status and the URL fetched.
	Evidence []string `json:"evidence"`
	// Fix says what to change, when Status is Warning or Problem.
	Fix string `json:"fix,omitempty"`
}

// New returns a Result with its evidence list non-nil (so JSON has []).
func New(name, subject string, st Status, summary string) Result {
	return Result{Name: name, Subject: subject, Status: st, Summary: summary, Evidence: []string{}}
}

// Add appends a line of evidence, formatted.
func (r *Result) Add(format string, a ...any) {
	r.Evidence = append(r.Evidence, fmt.Sprintf(format, a...))
}

// String renders the result on one line, then its evidence and fix
// indented, as `detour doctor` prints it.
func (r Result) String() string {
	var b strings.Builder
	subj := ""
	if r.Subject != "" {
		subj = " " + r.Subject
	}
	fmt.Fprintf(&b, "%-8s %s%s: %s", r.Status, r.Name, subj, r.Summary)
	for _, e := range r.Evidence {
		fmt.Fprintf(&b, "\n           %s", e)
	}
	if r.Fix != "" {
		fmt.Fprintf(&b, "\n         fix: %s", r.Fix)
	}
	return b.String()
}

// Worst returns the most serious status of rs (Problem > Warning > OK >
// Info > Skipped); Skipped when rs is empty.
func Worst(rs []Result) Status {
	rank := map[Status]int{Skipped: 0, Info: 1, OK: 2, Warning: 3, Problem: 4}
	w := Skipped
	for _, r := range rs {
		if rank[r.Status] > rank[w] {
			w = r.Status
		}
	}
	return w
}
