package renew_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
)

// stepRecords is an in-memory fake of renew.Records for the step's unit
// tests; loadErr makes LoadRecord fail, locked makes TryLock fail.
type stepRecords struct {
	mu      sync.Mutex
	recs    map[string]store.Record
	loads   int
	loadErr error
	locked  bool
}

var _ renew.Records = (*stepRecords)(nil)

func (r *stepRecords) LoadRecord(_ context.Context, name string) (store.Record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loads++
	if r.loadErr != nil {
		return store.Record{}, r.loadErr
	}
	rec, ok := r.recs[name]
	if !ok {
		return rec, fmt.Errorf("record %q: %w", name, fs.ErrNotExist)
	}
	return rec, nil
}

func (r *stepRecords) SaveRecord(_ context.Context, rec store.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs[rec.Name] = rec
	return nil
}

func (r *stepRecords) TryLock(context.Context, string) (func() error, error) {
	if r.locked {
		return nil, store.ErrLocked
	}
	return func() error { return nil }, nil
}

// stepCA is a fake Obtainer: it fails with err, or succeeds.
type stepCA struct {
	err  error
	reqs []renew.Request
}

var _ renew.Obtainer = (*stepCA)(nil)

func (c *stepCA) Obtain(_ context.Context, req renew.Request) (renew.Result, error) {
	c.reqs = append(c.reqs, req)
	if c.err != nil {
		return renew.Result{}, c.err
	}
	return renew.Result{Name: req.Name, Version: 2}, nil
}

const stepDir = "https://ca.invalid/directory"

// stepTarget returns a target on CAs "primary" (stepDir, which issued the
// records) and "fallback" (another directory), each getting two failures
// before the next, recording which CA each request was for.
func stepTarget(t *testing.T, asked *[]int, planErr error) renew.Target {
	return renew.Target{
		Name: "www", CAs: []string{"primary", "fallback"}, AfterFailures: 2,
		Request: func(_ context.Context, ca int) (renew.Request, func(), error) {
			*asked = append(*asked, ca)
			if planErr != nil {
				return renew.Request{}, nil, planErr
			}
			dir := stepDir
			if ca > 0 {
				dir = "https://fallback.invalid/directory"
			}
			c, err := acme.New(acme.Options{Directory: dir})
			if err != nil {
				t.Fatal(err)
			}
			return renew.Request{Name: "www", CA: renew.CA{Client: c, Name: []string{"primary", "fallback"}[ca]},
				Paths: []solve.Path{{Name: "web"}}}, func() { c.Close() }, nil
		},
	}
}

// issued is a record of a certificate valid from now-10d for 90 days.
func issued(last *store.Attempt) store.Record {
	now := time.Now()
	return store.Record{Name: "www", Identifiers: []string{"www.example.com"}, CA: stepDir, ARIID: "aaa.bbb",
		NotBefore: now.Add(-10 * 24 * time.Hour), NotAfter: now.Add(80 * 24 * time.Hour), Last: last}
}

func TestStep(t *testing.T) {
	due := issued(nil)
	due.NotAfter = time.Now().Add(24 * time.Hour) // a third of the life is long gone
	failing := func(n int) *store.Attempt { return &store.Attempt{Time: time.Now().Add(-24 * time.Hour), Failures: n} }
	failed := errors.New("the CA said no")
	tests := []struct {
		name     string
		recs     map[string]store.Record
		opt      renew.StepOptions
		caErr    error
		planErr  error
		loadErr  error
		locked   bool
		cancel   bool
		ran      bool
		askedCA  []int  // CAs the target was asked to plan for
		replaces string // the request's Replaces
		failures int    // of the record's last attempt afterwards; -1: no failure recorded
		attempt  bool   // Outcome.Attempt set
		interr   bool
		errHas   string
	}{
		{name: "not due", recs: map[string]store.Record{"www": issued(nil)}, failures: -1},
		{name: "not issued: due", recs: map[string]store.Record{}, ran: true, askedCA: []int{0}, failures: -1},
		{name: "forced", recs: map[string]store.Record{"www": issued(nil)}, opt: renew.StepOptions{Force: true},
			ran: true, askedCA: []int{0}, replaces: "aaa.bbb", failures: -1},
		{name: "due, replaces the ARI id of the same CA", recs: map[string]store.Record{"www": due}, ran: true, askedCA: []int{0}, replaces: "aaa.bbb", failures: -1},
		{name: "failure recorded", recs: map[string]store.Record{"www": due}, caErr: failed, ran: true, askedCA: []int{0},
			replaces: "aaa.bbb", failures: 1, attempt: true, errHas: "the CA said no"},
		{name: "fallback CA after two failures", recs: map[string]store.Record{"www": with(due, failing(2))}, opt: renew.StepOptions{Force: true},
			caErr: failed, ran: true, askedCA: []int{1}, failures: 3, attempt: true},
		{name: "manual: primary CA, failure not recorded", recs: map[string]store.Record{"www": with(due, failing(2))},
			opt: renew.StepOptions{Force: true, Manual: true}, caErr: failed, ran: true, askedCA: []int{0}, replaces: "aaa.bbb", failures: 2, attempt: true},
		{name: "dry run: failure not recorded", recs: map[string]store.Record{"www": due}, opt: renew.StepOptions{Force: true, DryRun: true},
			caErr: failed, ran: true, askedCA: []int{0}, replaces: "aaa.bbb", failures: -1, attempt: true},
		{name: "planning error recorded", recs: map[string]store.Record{"www": due}, planErr: errors.New("no such path"), ran: true, askedCA: []int{0},
			failures: 1, attempt: true, errHas: "planning the renewal: no such path"},
		{name: "unreadable record", loadErr: errors.New("permission denied"), failures: -1, attempt: true, errHas: "reading the certificate's record"},
		{name: "unreadable record while shutting down", loadErr: context.Canceled, cancel: true, failures: -1, interr: true},
		{name: "another process holds the lock", recs: map[string]store.Record{"www": due}, caErr: fmt.Errorf("locking: %w", store.ErrLocked),
			ran: true, askedCA: []int{0}, replaces: "aaa.bbb", failures: -1},
		{name: "cancelled during the attempt", recs: map[string]store.Record{"www": due}, caErr: context.Canceled, cancel: true,
			ran: true, askedCA: []int{0}, replaces: "aaa.bbb", failures: -1, interr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs := &stepRecords{recs: tt.recs, loadErr: tt.loadErr, locked: tt.locked}
			if recs.recs == nil {
				recs.recs = map[string]store.Record{}
			}
			ca := &stepCA{err: tt.caErr}
			var asked []int
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tt.cancel {
				cancel()
			}
			out := renew.Step{Obtainer: ca, Records: recs}.Run(ctx, stepTarget(t, &asked, tt.planErr), tt.opt)
			if out.Ran != tt.ran {
				t.Errorf("Ran = %v (%s), want %v", out.Ran, out.Decision.Reason, tt.ran)
			}
			if fmt.Sprint(asked) != fmt.Sprint(tt.askedCA) {
				t.Errorf("planned for CAs %v, want %v", asked, tt.askedCA)
			}
			if len(ca.reqs) > 0 && ca.reqs[0].Replaces != tt.replaces {
				t.Errorf("Replaces = %q, want %q", ca.reqs[0].Replaces, tt.replaces)
			}
			got := -1
			if r, ok := recs.recs["www"]; ok && r.Last != nil && !r.Last.OK {
				got = r.Last.Failures
			}
			if got != tt.failures {
				t.Errorf("recorded failures = %d, want %d", got, tt.failures)
			}
			if (out.Attempt != nil) != tt.attempt || out.Interrupted != tt.interr {
				t.Errorf("Attempt %+v, Interrupted %v; want attempt %v, interrupted %v", out.Attempt, out.Interrupted, tt.attempt, tt.interr)
			}
			if tt.errHas != "" && (out.Err == nil || !strings.Contains(out.Err.Error(), tt.errHas)) {
				t.Errorf("Err = %v, want it to say %q", out.Err, tt.errHas)
			}
			if out.Attempt != nil && tt.failures > 0 && (out.Attempt.Path != "web" && tt.planErr == nil || out.Attempt.CA == "") {
				t.Errorf("attempt %+v lacks its path or CA", out.Attempt)
			}
		})
	}
}

func with(r store.Record, last *store.Attempt) store.Record {
	r.Last = last
	return r
}

// TestStepUsesTheGivenRecord: a record the caller has just read is not
// read again.
func TestStepUsesTheGivenRecord(t *testing.T) {
	rec := issued(nil)
	recs := &stepRecords{recs: map[string]store.Record{"www": rec}}
	var asked []int
	out := renew.Step{Obtainer: &stepCA{}, Records: recs}.Run(t.Context(), stepTarget(t, &asked, nil), renew.StepOptions{Record: &rec})
	if out.Ran || recs.loads != 0 {
		t.Errorf("ran %v, record loaded %d times; want not due and no load", out.Ran, recs.loads)
	}
}
