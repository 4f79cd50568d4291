package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync"
	"time"

	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
)

// Attempt is one renewal attempt the agent made: what the status page
// lists under a certificate.
type Attempt struct {
	Time time.Time `json:"time"`
	OK   bool      `json:"ok"`
	// CA is the CA asked (its name in the plan); Path the path that
	// answered (a success) or the paths the attempt could use.
	CA   string `json:"ca,omitempty"`
	Path string `json:"path,omitempty"`
	// Took is the whole attempt, Steps its parts.
	Took  time.Duration `json:"took"`
	Steps []Step        `json:"steps,omitempty"`
	// Stage is where a failure happened (renew.Error's stage, or "plan").
	Stage string `json:"stage,omitempty"`
	Error string `json:"error,omitempty"`
	// Version and Serial are what a success stored; DeployError is set
	// when its deploy step failed (the certificate is live regardless).
	Version     int    `json:"version,omitempty"`
	Serial      string `json:"serial,omitempty"`
	DeployError string `json:"deploy_error,omitempty"`
}

// Step is one part of an attempt.
type Step struct {
	// Name is "wait" (for the certificate's bind addresses and a renewal
	// slot), "plan" (its record read and its paths built), then the steps
	// of the renewal as it reports them (renew.EventKind: "account",
	// "probe", "order", "authz", "self-check", "dns-wait", "validation",
	// "finalize"; "store" and "deploy" for stored and deployed), the
	// stage a failure stopped in after the last of them, and "record"
	// (the outcome saved). An Obtainer that reports no steps gives one
	// "obtain" step instead (and "deploy" after a success).
	Name string        `json:"name"`
	Took time.Duration `json:"took"`
}

// History keeps each certificate's recent attempts.
type History interface {
	// Add records a as the newest attempt of certificate name.
	Add(ctx context.Context, name string, a Attempt) error
	// Attempts returns name's attempts, newest first; none is no error.
	Attempts(ctx context.Context, name string) ([]Attempt, error)
}

// DefaultKeep is how many attempts StorageHistory keeps per certificate.
const DefaultKeep = 20

// StorageHistory keeps the last Keep attempts of each certificate under
// history/<name>.json in a store, so that they outlive a restart. It is
// safe for concurrent use within one process.
type StorageHistory struct {
	Storage store.Storage
	// Keep bounds the attempts kept per certificate; default DefaultKeep.
	Keep int

	mu sync.Mutex
}

var _ History = (*StorageHistory)(nil)

func historyKey(name string) string { return "history/" + name + ".json" }

// Add implements History.
func (h *StorageHistory) Add(ctx context.Context, name string, a Attempt) error {
	if err := store.ValidName(name); err != nil {
		return err
	}
	keep := h.Keep
	if keep <= 0 {
		keep = DefaultKeep
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old, err := h.Attempts(ctx, name)
	if err != nil {
		old = nil // an unreadable history starts again
	}
	all := append([]Attempt{a}, old...)
	if len(all) > keep {
		all = all[:keep]
	}
	data, err := json.Marshal(all)
	if err != nil {
		return err
	}
	if err := h.Storage.Store(ctx, historyKey(name), data); err != nil {
		return fmt.Errorf("recording the attempt in %s: %w", historyKey(name), err)
	}
	return nil
}

// Attempts implements History.
func (h *StorageHistory) Attempts(ctx context.Context, name string) ([]Attempt, error) {
	if err := store.ValidName(name); err != nil {
		return nil, err
	}
	data, err := h.Storage.Load(ctx, historyKey(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Attempt
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("reading %s: %w", historyKey(name), err)
	}
	return out, nil
}

// timedObtainer notes when Obtain starts and ends, so that an attempt
// can be split into its steps.
type timedObtainer struct {
	renew.Obtainer
	start, end time.Time
}

func (o *timedObtainer) Obtain(ctx context.Context, req renew.Request) (renew.Result, error) {
	o.start = time.Now()
	defer func() { o.end = time.Now() }()
	return o.Obtainer.Obtain(ctx, req)
}

// clock holds the moments of one attempt: its own, and the end of each
// step of Obtain the renewal reports (renew.Event).
type clock struct {
	begin, ready, done time.Time // job start, slot taken, step returned
	obtain             *timedObtainer

	mu     sync.Mutex
	events []renew.Event
}

// progress receives the renewal's events (renew.StepOptions.Progress).
func (c *clock) progress(e renew.Event) {
	c.mu.Lock()
	c.events = append(c.events, e)
	c.mu.Unlock()
}

// stepNames are the names the history gives the renewal's events.
var stepNames = map[renew.EventKind]string{renew.EventStored: "store", renew.EventDeployed: "deploy"}

// obtainSteps splits Obtain into its steps: each event ends one, which
// began where the one before ended; a kind that comes once per identifier
// (authorization, self-check, validation) is one step with the time of
// all. What follows the last event is the failing stage's (or, after a
// success, nothing worth a step). Without events (an Obtainer that
// reports none) Obtain is one step, and a success's deploy another.
func (c *clock) obtainSteps(out renew.Outcome, stage string) []Step {
	o := c.obtain
	total := o.end.Sub(o.start)
	c.mu.Lock()
	events := slices.Clone(c.events)
	c.mu.Unlock()
	if len(events) == 0 {
		if out.Err == nil && out.Result.Elapsed > 0 && out.Result.Elapsed <= total {
			// Result.Elapsed runs until the certificate is stored; the
			// deploy follows inside Obtain.
			return []Step{{Name: "obtain", Took: out.Result.Elapsed}, {Name: "deploy", Took: total - out.Result.Elapsed}}
		}
		return []Step{{Name: "obtain", Took: total}}
	}
	var steps []Step
	add := func(name string, d time.Duration) {
		if i := slices.IndexFunc(steps, func(s Step) bool { return s.Name == name }); i >= 0 {
			steps[i].Took += d
			return
		}
		steps = append(steps, Step{Name: name, Took: d})
	}
	prev := o.start
	for _, e := range events {
		name := stepNames[e.Kind]
		if name == "" {
			name = string(e.Kind)
		}
		at := e.At
		if at.Before(prev) {
			at = prev
		}
		if at.After(o.end) {
			at = o.end
		}
		add(name, at.Sub(prev))
		prev = at
	}
	if rest := o.end.Sub(prev); out.Err != nil && stage != "" {
		add(stage, rest)
	} else if rest >= time.Millisecond {
		add("finish", rest)
	}
	return steps
}

// attempt builds the history entry of the outcome out.
func (c *clock) attempt(out renew.Outcome) Attempt {
	a := Attempt{Time: c.ready, Took: c.done.Sub(c.begin), CA: out.CA}
	if out.Err != nil {
		a.Path, a.Error, a.Stage = out.Paths, out.Err.Error(), "plan"
		var re *renew.Error
		if errors.As(out.Err, &re) {
			a.Stage = re.Stage
		} else if !c.obtain.start.IsZero() {
			a.Stage = ""
		}
	}
	a.Steps = append(a.Steps, Step{Name: "wait", Took: c.ready.Sub(c.begin)})
	if o := c.obtain; o.start.IsZero() {
		a.Steps = append(a.Steps, Step{Name: "plan", Took: c.done.Sub(c.ready)})
	} else {
		a.Steps = append(a.Steps, Step{Name: "plan", Took: o.start.Sub(c.ready)})
		a.Steps = append(a.Steps, c.obtainSteps(out, a.Stage)...)
		a.Steps = append(a.Steps, Step{Name: "record", Took: c.done.Sub(o.end)})
	}
	if out.Err != nil {
		return a
	}
	res := out.Result
	a.OK, a.Path, a.Version, a.Serial = true, joinUsed(res.PathUsed), res.Version, res.Serial
	if res.DeployErr != nil {
		a.DeployError = res.DeployErr.Error()
	}
	return a
}

// record adds a to the history of name, if the agent keeps one.
func (l *loop) record(ctx context.Context, name string, a Attempt) {
	h := l.a.opts.History
	if h == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := h.Add(ctx, name, a); err != nil {
		l.a.log.WarnContext(ctx, "keeping the attempt in the history failed", "certificate", name, "error", err)
	}
}
