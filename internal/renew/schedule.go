package renew

import (
	"time"

	"github.com/detour-acme/detour/internal/store"
)

// RenewAt returns when a certificate valid from notBefore to notAfter should
// be renewed. With a usable ARI window (end after start, RFC 9773 §4.2) it is
// the point frac of the way through the window (frac in [0,1), drawn at
// random by the caller; 0 gives the window's start). A window that has
// already ended means "renew now" and yields its start, which is in the past.
// Without a window it is when a third of the lifetime is left, moved earlier
// by up to frac of a twentieth of the lifetime so that a fleet issued at
// once does not renew at once. The function is pure: the clock and the
// randomness are the caller's.
func RenewAt(notBefore, notAfter time.Time, ari *store.ARIWindow, frac float64) time.Time {
	frac = max(0, min(frac, 0.999999))
	if ari != nil && ari.End.After(ari.Start) {
		span := ari.End.Sub(ari.Start)
		return ari.Start.Add(time.Duration(frac * float64(span)))
	}
	life := notAfter.Sub(notBefore)
	at := notAfter.Add(-life / 3)
	return at.Add(-time.Duration(frac * float64(life/20)))
}

// Decision is the outcome of Due.
type Decision struct {
	Due    bool
	At     time.Time // when the certificate is (or was) due
	Reason string    // for humans: "ARI window", "a third of the lifetime left", "expired", "backing off"
}

// Due decides whether the certificate of r must be renewed at now. Failed
// attempts back off exponentially from the last attempt (1m, 2m, 4m … up
// to 6h, or the CA's Retry-After when later), unless the certificate has
// already expired.
func Due(r store.Record, now time.Time, frac float64) Decision {
	at := RenewAt(r.NotBefore, r.NotAfter, r.ARI, frac)
	reason := "a third of the lifetime left"
	if r.ARI != nil && r.ARI.End.After(r.ARI.Start) {
		reason = "inside the CA's renewal window (ARI)"
	}
	if !now.Before(r.NotAfter) {
		return Decision{Due: true, At: r.NotAfter, Reason: "expired"}
	}
	if r.Last != nil && !r.Last.OK && r.Last.Failures > 0 {
		if next := RetryAt(*r.Last); next.After(at) && now.Before(next) {
			return Decision{Due: false, At: next, Reason: "backing off after a failure"}
		}
	}
	return Decision{Due: !now.Before(at), At: at, Reason: reason}
}

// RetryAt returns the earliest time to try again after the failed attempt a.
func RetryAt(a store.Attempt) time.Time {
	backoff := time.Minute << min(max(a.Failures-1, 0), 9)
	backoff = min(backoff, 6*time.Hour)
	next := a.Time.Add(backoff)
	if a.RetryAfter.After(next) {
		next = a.RetryAfter
	}
	return next
}
