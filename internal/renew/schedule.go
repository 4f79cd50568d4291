package renew

import (
	"slices"
	"time"

	"github.com/detour-acme/detour/internal/store"
)

// Policy holds the tunables of the renewal schedule. The zero value gives
// the defaults below. Every method is pure: the clock and the randomness
// (fractions in [0,1) drawn by the caller) are parameters, so a test can
// run a year of renewals in a loop.
type Policy struct {
	// Jitter is the share of the lifetime by which a renewal without a CA
	// renewal window moves earlier at most (frac 1). Default 1/20.
	Jitter float64
	// BackoffMin is the delay after the first failure; each further
	// consecutive failure doubles it, up to BackoffMax. Defaults 1m and 6h.
	// For a certificate that is still valid, Due starts the backoff at no
	// more than a thirtieth of its lifetime (see RetryAtFor), so that a
	// 90-second certificate is retried within seconds.
	BackoffMin, BackoffMax time.Duration
	// ARIPollMin and ARIPollMax clamp the interval between renewal-info
	// polls that the CA's Retry-After asks for (RFC 9773 §4.3 suggests one
	// minute and one day, the defaults). Without a Retry-After the CA is
	// polled every ARIPollDefault (default 6h), within the same bounds.
	ARIPollMin, ARIPollMax, ARIPollDefault time.Duration
	// Guard is the share of the lifetime that must be left when a renewal
	// starts at the latest: a CA's window reaching up to expiry (as test
	// CAs give for very short certificates) is cut so that a renewal has
	// time to fail and be retried. Whatever the share, at least room for
	// two retries is left (see Reserve). Default 1/10.
	Guard float64
}

// DefaultPolicy is the zero Policy with its defaults spelled out.
var DefaultPolicy = Policy{}.withDefaults()

// WithDefaults returns p with every zero field set to its default.
func (p Policy) WithDefaults() Policy { return p.withDefaults() }

// ARIRetry is how long to wait before asking again after the CA failed to
// answer a renewal-info request: an hour, within [ARIPollMin, ARIPollMax].
func (p Policy) ARIRetry() time.Duration {
	p = p.withDefaults()
	return min(max(time.Hour, p.ARIPollMin), p.ARIPollMax)
}

func (p Policy) withDefaults() Policy {
	if p.Jitter <= 0 {
		p.Jitter = 1.0 / 20
	}
	if p.BackoffMin <= 0 {
		p.BackoffMin = time.Minute
	}
	if p.BackoffMax <= 0 {
		p.BackoffMax = 6 * time.Hour
	}
	p.BackoffMax = max(p.BackoffMax, p.BackoffMin)
	if p.ARIPollMin <= 0 {
		p.ARIPollMin = time.Minute
	}
	if p.ARIPollMax <= 0 {
		p.ARIPollMax = 24 * time.Hour
	}
	p.ARIPollMax = max(p.ARIPollMax, p.ARIPollMin)
	if p.ARIPollDefault <= 0 {
		p.ARIPollDefault = 6 * time.Hour
	}
	if p.Guard <= 0 {
		p.Guard = 1.0 / 10
	}
	return p
}

// clampFrac keeps a caller's random fraction inside [0,1).
func clampFrac(frac float64) float64 { return max(0, min(frac, 0.999999)) }

// usable reports whether w is a window the schedule follows: present, with
// its end after its start (RFC 9773 §4.2).
func usable(w *store.ARIWindow) bool { return w != nil && w.End.After(w.Start) }

// backoffLifeShare: while a certificate is valid, its first retry comes
// after at most this share of its lifetime (BackoffMin otherwise).
const backoffLifeShare = 1.0 / 30

// forLifetime returns p, with defaults, whose BackoffMin is at most
// backoffLifeShare of life (when life is known).
func (p Policy) forLifetime(life time.Duration) Policy {
	p = p.withDefaults()
	if b := time.Duration(backoffLifeShare * float64(life)); b > 0 && b < p.BackoffMin {
		p.BackoffMin = b
	}
	return p
}

// Reserve returns how much of a lifetime of life must be left when a
// renewal starts at the latest: Guard of the lifetime, and at least room for
// two retries before expiry. That room is the first two backoffs (after one
// failure, then after two, as RetryAtFor gives them for this lifetime) and
// one more first backoff for the last retry to run. A 90-day certificate
// keeps its Guard (9 days); a 90-second one, whose backoff starts at 3s,
// keeps 12s rather than 9.
func (p Policy) Reserve(life time.Duration) time.Duration {
	q := p.forLifetime(life)
	retries := 2*q.Backoff(1, 1) + q.Backoff(2, 1)
	return max(time.Duration(q.Guard*float64(life)), retries)
}

// RenewAt returns when a certificate valid from notBefore to notAfter should
// be renewed. With a usable ARI window (end after start, RFC 9773 §4.2) it is
// the point frac of the way through the window (frac in [0,1), drawn at
// random by the caller once per window; 0 gives the window's start). A
// window that has already ended means "renew now" and yields a point of it,
// which is in the past. Without a window it is when a third of the lifetime
// is left, moved earlier by up to frac of Jitter of the lifetime so that a
// fleet issued at once does not renew at once; this suits 160-hour, 45-day
// and 90-day certificates alike. Either way it is no later than when
// Reserve of the lifetime is left, even when that is before the start of a
// window that begins too close to expiry: a failed renewal must still have
// two retries before the certificate expires.
func (p Policy) RenewAt(notBefore, notAfter time.Time, ari *store.ARIWindow, frac float64) time.Time {
	p = p.withDefaults()
	frac = clampFrac(frac)
	life := notAfter.Sub(notBefore)
	latest := notAfter.Add(-p.Reserve(life))
	var at time.Time
	if usable(ari) {
		span := ari.End.Sub(ari.Start)
		at = ari.Start.Add(time.Duration(frac * float64(span)))
	} else {
		at = notAfter.Add(-life / 3)
		at = at.Add(-time.Duration(frac * p.Jitter * float64(life)))
	}
	if at.After(latest) {
		at = latest
	}
	return at
}

// RenewAt is DefaultPolicy.RenewAt.
func RenewAt(notBefore, notAfter time.Time, ari *store.ARIWindow, frac float64) time.Time {
	return DefaultPolicy.RenewAt(notBefore, notAfter, ari, frac)
}

// Decision is the outcome of Due.
type Decision struct {
	Due    bool
	At     time.Time // when the certificate is (or was) due
	Reason string    // for humans: "ARI window", "a third of the lifetime left", "expired", "backing off"
}

// Reasons a Decision gives.
const (
	ReasonLifetime  = "a third of the lifetime left"
	ReasonARI       = "inside the CA's renewal window (ARI)"
	ReasonARIPassed = "the CA's renewal window has passed: the CA asks for renewal now (revoked?)"
	ReasonExpired   = "expired"
	ReasonBackoff   = "backing off after a failure"
	ReasonRevoked   = "revoked with detour revoke: to be replaced now"
)

// WindowPassed reports whether the CA's window w had already ended when it
// was fetched: RFC 9773 §4.2's way of saying "renew now", which Pebble and
// Let's Encrypt use for a revoked certificate.
func WindowPassed(w *store.ARIWindow) bool {
	return usable(w) && !w.Fetched.IsZero() && !w.End.After(w.Fetched)
}

// Due decides whether the certificate of r must be renewed at now. frac
// places the renewal inside its window (see RenewAt); retryFrac jitters the
// backoff after a failure (see Backoff; 1 gives the full delay). Failed
// attempts back off exponentially from the last attempt (see RetryAtFor),
// or until the CA's Retry-After when later. An expired certificate is due
// at once after a success, and after a failure as soon as the backoff,
// capped at BackoffMin, and the CA's Retry-After allow: hammering a CA that
// refuses only earns a longer rate limit.
func (p Policy) Due(r store.Record, now time.Time, frac, retryFrac float64) Decision {
	at := p.RenewAt(r.NotBefore, r.NotAfter, r.ARI, frac)
	reason := ReasonLifetime
	if usable(r.ARI) {
		reason = ReasonARI
		if WindowPassed(r.ARI) || !r.ARI.End.After(now) {
			reason = ReasonARIPassed
		}
	}
	if !r.Revoked.IsZero() && r.Revoked.Before(at) {
		at, reason = r.Revoked, ReasonRevoked
	}
	if !now.Before(r.NotAfter) {
		if r.Last != nil && !r.Last.OK && r.Last.Failures > 0 {
			q := p.withDefaults()
			q.BackoffMax = q.BackoffMin
			if next := q.RetryAt(*r.Last, retryFrac); now.Before(next) {
				return Decision{Due: false, At: next, Reason: ReasonExpired + ", " + ReasonBackoff}
			}
		}
		return Decision{Due: true, At: r.NotAfter, Reason: ReasonExpired}
	}
	if r.Last != nil && !r.Last.OK && r.Last.Failures > 0 {
		if next := p.RetryAtFor(r.NotBefore, r.NotAfter, *r.Last, retryFrac); next.After(at) && now.Before(next) {
			return Decision{Due: false, At: next, Reason: ReasonBackoff}
		}
	}
	return Decision{Due: !now.Before(at), At: at, Reason: reason}
}

// Reasons DueFor gives besides those of Due.
const (
	ReasonNotIssued    = "not issued yet"
	ReasonNamesChanged = "the configured names differ from the certificate's"
)

// DueFor decides whether a certificate must be renewed at now, given its
// record (nil: never issued), the last attempt kept elsewhere when there is
// no record (nil: none), and the names it must cover (empty: whatever the
// record says). A certificate never issued, or whose names changed, is due
// at once unless it is backing off after a failure; otherwise Due decides.
func (p Policy) DueFor(rec *store.Record, last *store.Attempt, want []string, now time.Time, frac, retryFrac float64) Decision {
	backingOff := func(a *store.Attempt) (Decision, bool) {
		if a != nil && !a.OK {
			if retry := p.RetryAt(*a, retryFrac); retry.After(now) {
				return Decision{At: retry, Reason: ReasonBackoff}, true
			}
		}
		return Decision{}, false
	}
	if rec == nil {
		if d, ok := backingOff(last); ok {
			return d
		}
		return Decision{Due: true, At: now, Reason: ReasonNotIssued}
	}
	if len(want) > 0 && !SameNames(want, rec.Identifiers) {
		if a := rec.Last; a != nil && !a.OK {
			if retry := p.RetryAtFor(rec.NotBefore, rec.NotAfter, *a, retryFrac); retry.After(now) {
				return Decision{At: retry, Reason: ReasonBackoff}
			}
		}
		return Decision{Due: true, At: now, Reason: ReasonNamesChanged}
	}
	return p.Due(*rec, now, frac, retryFrac)
}

// SameNames reports whether a and b hold the same names, in any order.
func SameNames(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// Due is DefaultPolicy.Due with the full (unjittered) backoff.
func Due(r store.Record, now time.Time, frac float64) Decision {
	return DefaultPolicy.Due(r, now, frac, 1)
}

// Backoff returns the delay after the given number of consecutive failures:
// BackoffMin doubled for each failure after the first, capped at
// BackoffMax, then jittered into its upper half ("equal jitter": frac 0
// gives half the delay, frac 1 all of it) so that clients that failed
// together do not retry together.
func (p Policy) Backoff(failures int, frac float64) time.Duration {
	p = p.withDefaults()
	shift := min(max(failures-1, 0), 30)
	d := p.BackoffMin << shift
	if d <= 0 || d > p.BackoffMax {
		d = p.BackoffMax
	}
	frac = max(0, min(frac, 1))
	return d/2 + time.Duration(frac*float64(d/2))
}

// RetryAt returns the earliest time to try again after the failed attempt
// a: its time plus Backoff, or the CA's Retry-After when later.
func (p Policy) RetryAt(a store.Attempt, frac float64) time.Time {
	next := a.Time.Add(p.Backoff(a.Failures, frac))
	if a.RetryAfter.After(next) {
		next = a.RetryAfter
	}
	return next
}

// RetryAtFor is RetryAt for a failed renewal of a certificate valid from
// notBefore to notAfter: the backoff starts at BackoffMin or a thirtieth of
// the lifetime, whichever is shorter, so that the retries Reserve leaves
// room for fit before expiry. Due uses it while the certificate is valid.
func (p Policy) RetryAtFor(notBefore, notAfter time.Time, a store.Attempt, frac float64) time.Time {
	return p.forLifetime(notAfter.Sub(notBefore)).RetryAt(a, frac)
}

// RetryAt is DefaultPolicy.RetryAt with the full (unjittered) backoff: 1m,
// 2m, 4m … up to 6h, or the CA's Retry-After when later.
func RetryAt(a store.Attempt) time.Time { return DefaultPolicy.RetryAt(a, 1) }

// ARIPollAt returns when to ask the CA for the renewal window again, given
// the window w last fetched (nil: never fetched, poll at now). It follows
// the CA's Retry-After, clamped to [ARIPollMin, ARIPollMax] after the fetch
// (RFC 9773 §4.3); without one, ARIPollDefault after the fetch.
func (p Policy) ARIPollAt(w *store.ARIWindow, now time.Time) time.Time {
	p = p.withDefaults()
	if w == nil || w.Fetched.IsZero() {
		return now
	}
	next := w.Fetched.Add(p.ARIPollDefault)
	if !w.RetryAfter.IsZero() {
		next = w.RetryAfter
	}
	lo, hi := w.Fetched.Add(p.ARIPollMin), w.Fetched.Add(p.ARIPollMax)
	if next.Before(lo) {
		next = lo
	}
	if next.After(hi) {
		next = hi
	}
	return next
}

// CAIndex returns which of n CAs (the primary first, then the fallbacks) a
// certificate uses after failures consecutive failed attempts when each CA
// gets afterFailures attempts before the next one is tried. After the last
// fallback it comes back to the primary, so a CA that recovers is used
// again.
func CAIndex(failures, afterFailures, n int) int {
	if n <= 1 || afterFailures <= 0 || failures <= 0 {
		return 0
	}
	return (failures / afterFailures) % n
}
