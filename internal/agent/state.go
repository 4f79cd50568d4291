package agent

import (
	"time"

	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
)

// Actions the scheduler takes for a certificate.
const (
	actionRenew = "renew"
	actionARI   = "ari" // ask the CA for its renewal window (RFC 9773)
)

// certState is what the agent knows about one certificate. Only the loop
// goroutine touches it.
type certState struct {
	cert Cert
	rec  *store.Record // nil until the certificate is first issued

	// frac places the renewal inside its window; it is drawn once per
	// window (fracKey names the certificate and window it was drawn for),
	// so that re-evaluating does not move the renewal around.
	frac      float64
	fracKey   string
	retryFrac float64

	// last is the outcome of the last attempt when there is no record to
	// keep it in (a certificate never issued).
	last *store.Attempt
	// ariNotBefore delays the next renewal-info poll after the CA failed
	// to answer or does not offer ARI; notBefore delays the next renewal
	// while another process holds the certificate's lock.
	ariNotBefore, notBefore time.Time

	// Scheduling.
	next    time.Time
	action  string
	reason  string
	running bool
	removed bool // dropped from the plan while running
	index   int  // in the heap; -1 when not queued
}

// failures returns the consecutive failures of the last attempts.
func (s *certState) failures() int {
	if a := s.lastAttempt(); a != nil && !a.OK {
		return a.Failures
	}
	return 0
}

// lastAttempt returns the record's last attempt, or the in-memory one.
func (s *certState) lastAttempt() *store.Attempt {
	if s.rec != nil && s.rec.Last != nil {
		return s.rec.Last
	}
	return s.last
}

// caIndex returns which CA of the certificate's list the next attempt uses.
func (s *certState) caIndex() int {
	return renew.CAIndex(s.failures(), s.cert.AfterFailures, len(s.cert.CAs))
}

// windowKey identifies the certificate and window frac was drawn for.
func windowKey(r *store.Record) string {
	if r == nil {
		return ""
	}
	k := r.Serial + "|" + r.NotAfter.String()
	if r.ARI != nil {
		k += "|" + r.ARI.Start.String() + "|" + r.ARI.End.String()
	}
	return k
}

// schedule decides, purely, what to do next for s and when: renew (now,
// inside the window, or after a backoff) or first poll the CA's renewal
// window when that comes earlier. ari reports whether renewal info is
// polled at all.
func schedule(s *certState, p renew.Policy, now time.Time, ari bool) (at time.Time, action, reason string) {
	at, action, reason = decide(s, p, now, ari)
	if action == actionRenew && s.notBefore.After(at) {
		return s.notBefore, action, "another detour process holds the certificate's lock"
	}
	return at, action, reason
}

// decide is schedule without the lock-contention delay: the renewal step's
// own rule (renew.Policy.DueFor), or first a poll of the CA's renewal
// window when that comes earlier.
func decide(s *certState, p renew.Policy, now time.Time, ari bool) (at time.Time, action, reason string) {
	d := p.DueFor(s.rec, s.last, s.cert.Identifiers, now, s.frac, s.retryFrac)
	if d.Due {
		return now, actionRenew, d.Reason
	}
	if ari && s.rec != nil && (len(s.cert.Identifiers) == 0 || renew.SameNames(s.cert.Identifiers, s.rec.Identifiers)) {
		poll := p.ARIPollAt(s.rec.ARI, now)
		if s.ariNotBefore.After(poll) {
			poll = s.ariNotBefore
		}
		if poll.Before(d.At) {
			if poll.Before(now) {
				poll = now
			}
			return poll, actionARI, "polling the CA's renewal window"
		}
	}
	return d.At, actionRenew, d.Reason
}

// queue is a min-heap of certificates by next event (container/heap).
type queue []*certState

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].next.Before(q[j].next) }
func (q queue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}

func (q *queue) Push(x any) {
	s := x.(*certState)
	s.index = len(*q)
	*q = append(*q, s)
}

func (q *queue) Pop() any {
	old := *q
	s := old[len(old)-1]
	old[len(old)-1] = nil
	s.index = -1
	*q = old[:len(old)-1]
	return s
}
