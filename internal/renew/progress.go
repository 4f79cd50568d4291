package renew

import (
	"slices"
	"sync"
	"time"
)

// EventKind names a step of Obtain as a progress display shows it.
type EventKind string

// The steps Obtain reports, in the order they happen. Authorizations,
// self-checks, waits and validations come once per identifier (and again
// for each path tried after one failed); a failed step carries its Err.
const (
	// EventAccount: the ACME account is ready (URL; Registered when it was
	// created now rather than loaded).
	EventAccount EventKind = "account"
	// EventProbe: a probe challenge of Detour's own, presented on Path and
	// fetched the way the CA will, before any order exists.
	EventProbe EventKind = "probe"
	// EventOrder: the order exists (URL, Identifiers, Profile).
	EventOrder EventKind = "order"
	// EventAuthz: an authorization gets an answer on Path, chosen for
	// Reason after the paths in Skipped were passed over; or, with no
	// Path, the CA holds it valid already.
	EventAuthz EventKind = "authz"
	// EventSelfCheck: the answer on Path was fetched the way the CA will.
	EventSelfCheck EventKind = "self-check"
	// EventWait: a DNS path's record was waited for until it was in place.
	EventWait EventKind = "dns-wait"
	// EventValidation: the CA validated the authorization (Polls: how many
	// times it was fetched).
	EventValidation EventKind = "validation"
	// EventFinalize: the CSR was sent and the certificate downloaded
	// (Serial, NotAfter).
	EventFinalize EventKind = "finalize"
	// EventStored: the certificate is the live version Version in LiveDir.
	EventStored EventKind = "stored"
	// EventDeployed: the deploy plan ran (Hook, Outputs, Reloads).
	EventDeployed EventKind = "deployed"
)

// Event is one step of Obtain, reported while it runs through
// Request.Progress (or StepOptions.Progress). Only the fields its Kind
// names are set.
type Event struct {
	Kind EventKind
	// Name is the certificate's name; At is when the step ended, on the
	// Manager's clock.
	Name string
	At   time.Time

	// Identifier, Path and Challenge: the authorization a step is about,
	// the path answering it and its challenge type.
	Identifier string
	Path       string
	Challenge  string

	// URL is the account's (EventAccount) or the order's (EventOrder).
	URL string
	// Registered: the account was registered now (EventAccount).
	Registered bool
	// Identifiers and Profile: what was ordered (EventOrder).
	Identifiers []string
	Profile     string

	// Reason says why Path was chosen, and Skipped which paths preferred
	// to it were passed over, and why (EventAuthz).
	Reason  string
	Skipped []Skipped

	// Polls counts the CA's answers to polls of the authorization
	// (EventValidation).
	Polls int

	// Serial and NotAfter describe the certificate (EventFinalize,
	// EventStored).
	Serial   string
	NotAfter time.Time
	// Version and LiveDir: where it is live (EventStored); Detail notes
	// anything unusual (a certificate issued by an earlier run).
	Version int
	LiveDir string
	Detail  string

	// Hook, Outputs and Reloads: what was deployed (EventDeployed).
	Hook             string
	Outputs, Reloads int

	// Err is the step's failure.
	Err error
}

// Skipped is a path passed over for an identifier, and why.
type Skipped struct {
	Path   string
	Reason string
	// Kind is the step whose failed event reported it already
	// (EventProbe, EventSelfCheck, EventAuthz); empty when no event did
	// (its check failed, it does not apply, the CA does not offer its
	// challenge).
	Kind EventKind
}

// Reasons an authorization's path was chosen (Event.Reason).
const (
	ReasonPreferred  = "the preferred path; its check passed"
	ReasonFirstCheck = "the first path whose check passed"
	ReasonReused     = "already valid at the CA (authorization reused)"
)

// progress delivers one Obtain's events: one at a time (validations run in
// parallel), stamped with the certificate's name and the time. It also
// keeps the paths passed over per identifier, for the reason of the choice.
// A nil *progress does nothing.
type progress struct {
	mu      sync.Mutex
	f       func(Event)
	name    string
	now     func() time.Time
	order   map[string]int       // path name -> place in the order of preference
	skipped map[string][]Skipped // identifier -> paths passed over, as they were
}

// newProgress returns req's progress reporter, nil when nobody listens.
func newProgress(req Request, now func() time.Time) *progress {
	if req.Progress == nil {
		return nil
	}
	order := make(map[string]int, len(req.Paths))
	for i, p := range req.Paths {
		if _, dup := order[p.Name]; !dup {
			order[p.Name] = i
		}
	}
	return &progress{f: req.Progress, name: req.Name, now: now, order: order, skipped: map[string][]Skipped{}}
}

// emit delivers e.
func (p *progress) emit(e Event) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e.Name, e.At = p.name, p.now()
	p.f(e)
}

// skip notes that path was passed over for identifier id, and why; kind
// is the failed step's event, if one was emitted.
func (p *progress) skip(id, path string, kind EventKind, reason string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.skipped[id] = append(p.skipped[id], Skipped{Path: path, Reason: reason, Kind: kind})
}

// chosen returns the event of path answering identifier id: the reason it
// was chosen and the paths preferred to it that were passed over (the
// last reason of each).
func (p *progress) chosen(id, path, challenge string) Event {
	e := Event{Kind: EventAuthz, Identifier: id, Path: path, Challenge: challenge, Reason: ReasonPreferred}
	if p == nil {
		return e
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	at, known := p.order[path]
	for _, s := range p.skipped[id] {
		if i, ok := p.order[s.Path]; s.Path == path || (known && ok && i > at) {
			continue
		}
		if k := slices.IndexFunc(e.Skipped, func(o Skipped) bool { return o.Path == s.Path }); k >= 0 {
			e.Skipped[k] = s
			continue
		}
		e.Skipped = append(e.Skipped, s)
	}
	slices.SortStableFunc(e.Skipped, func(a, b Skipped) int { return p.order[a.Path] - p.order[b.Path] })
	if len(e.Skipped) > 0 {
		e.Reason = ReasonFirstCheck
	}
	return e
}
