package renew

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/store"
)

func TestRenewAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		life time.Duration
		ari  *store.ARIWindow
		frac float64
		want time.Time
	}{
		{"90 days, no ARI", 90 * 24 * time.Hour, nil, 0, nb.Add(60 * 24 * time.Hour)},
		{"45 days, no ARI", 45 * 24 * time.Hour, nil, 0, nb.Add(30 * 24 * time.Hour)},
		{"160 hours, no ARI", 160 * time.Hour, nil, 0, nb.Add(160 * time.Hour * 2 / 3)},
		{"jitter moves earlier by at most a twentieth", 90 * 24 * time.Hour, nil, 1, nb.Add(60*24*time.Hour - 90*24*time.Hour/20).Add(time.Duration(float64(90*24*time.Hour/20) * 0.000001))},
		{"ARI window start", 90 * 24 * time.Hour, &store.ARIWindow{Start: nb.Add(50 * 24 * time.Hour), End: nb.Add(52 * 24 * time.Hour)}, 0, nb.Add(50 * 24 * time.Hour)},
		{"ARI window middle", 90 * 24 * time.Hour, &store.ARIWindow{Start: nb.Add(50 * 24 * time.Hour), End: nb.Add(52 * 24 * time.Hour)}, 0.5, nb.Add(51 * 24 * time.Hour)},
		{"reversed ARI window ignored", 90 * 24 * time.Hour, &store.ARIWindow{Start: nb.Add(52 * 24 * time.Hour), End: nb.Add(50 * 24 * time.Hour)}, 0, nb.Add(60 * 24 * time.Hour)},
		{"empty ARI window ignored", 90 * 24 * time.Hour, &store.ARIWindow{Start: nb.Add(52 * 24 * time.Hour), End: nb.Add(52 * 24 * time.Hour)}, 0, nb.Add(60 * 24 * time.Hour)},
		{"past ARI window: its start", 90 * 24 * time.Hour, &store.ARIWindow{Start: nb.Add(-2 * time.Hour), End: nb.Add(-time.Hour)}, 0.9, nb.Add(-2*time.Hour + time.Duration(0.9*float64(time.Hour)))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := RenewAt(nb, nb.Add(tc.life), tc.ari, tc.frac)
			if d := got.Sub(tc.want); d < -time.Second || d > time.Second {
				t.Errorf("RenewAt = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDue(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := store.Record{NotBefore: nb, NotAfter: nb.Add(90 * 24 * time.Hour)}
	at := nb.Add(60 * 24 * time.Hour)
	if d := Due(rec, at.Add(-time.Minute), 0); d.Due {
		t.Errorf("due a minute early: %+v", d)
	}
	if d := Due(rec, at, 0); !d.Due {
		t.Errorf("not due at the renewal time: %+v", d)
	}
	failed := rec
	failed.Last = &store.Attempt{Time: at, Failures: 3}
	if d := Due(failed, at.Add(3*time.Minute), 0); d.Due || d.Reason != "backing off after a failure" {
		t.Errorf("third failure must back off 4 minutes: %+v", d)
	}
	if d := Due(failed, at.Add(4*time.Minute), 0); !d.Due {
		t.Errorf("due again after the backoff: %+v", d)
	}
	failed.Last.RetryAfter = at.Add(time.Hour)
	if d := Due(failed, at.Add(30*time.Minute), 0); d.Due {
		t.Errorf("Retry-After must be honoured: %+v", d)
	}
	failed.Last.Failures = 50
	if got := RetryAt(*failed.Last); got.Sub(at) != 6*time.Hour {
		t.Errorf("backoff cap = %v, want 6h", got.Sub(at))
	}
	if d := Due(failed, rec.NotAfter, 0); !d.Due || d.Reason != "expired" {
		t.Errorf("an expired certificate is always due: %+v", d)
	}
}

// A year of renewals of 6-day certificates, decided by the pure function
// alone: every renewal happens before expiry and none is early.
func TestScheduleYear(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	life := 160 * time.Hour
	rec := store.Record{NotBefore: now, NotAfter: now.Add(life)}
	renewals := 0
	for end := now.AddDate(1, 0, 0); now.Before(end); now = now.Add(10 * time.Minute) {
		d := Due(rec, now, 0.3)
		if !d.Due {
			continue
		}
		if left := rec.NotAfter.Sub(now); left < life/4 || left > life/3+life/20 {
			t.Fatalf("renewed with %v left of %v", left, life)
		}
		rec.NotBefore, rec.NotAfter = now, now.Add(life)
		renewals++
	}
	if want := int(365 * 24 * time.Hour / (life * 2 / 3)); renewals < want-2 || renewals > want+2 {
		t.Errorf("renewals in a year = %d, want about %d", renewals, want)
	}
}

func TestBackoff(t *testing.T) {
	p := Policy{BackoffMin: time.Minute, BackoffMax: time.Hour}
	tests := []struct {
		failures int
		frac     float64
		want     time.Duration
	}{
		{1, 1, time.Minute},
		{1, 0, 30 * time.Second},
		{2, 1, 2 * time.Minute},
		{3, 0.5, 3 * time.Minute},
		{7, 1, time.Hour}, // 64m capped
		{7, 0, 30 * time.Minute},
		{1000, 1, time.Hour}, // no overflow
		{0, 1, time.Minute},  // treated as the first failure
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d failures, frac %v", tc.failures, tc.frac), func(t *testing.T) {
			if got := p.Backoff(tc.failures, tc.frac); got != tc.want {
				t.Errorf("Backoff = %v, want %v", got, tc.want)
			}
		})
	}
	// Jitter bounds, over many draws: always inside [d/2, d].
	r := rand.New(rand.NewPCG(1, 2))
	for n := 1; n < 12; n++ {
		full := p.Backoff(n, 1)
		for range 1000 {
			if got := p.Backoff(n, r.Float64()); got < full/2 || got > full {
				t.Fatalf("Backoff(%d) = %v outside [%v, %v]", n, got, full/2, full)
			}
		}
	}
}

func TestRetryAtHonoursRetryAfter(t *testing.T) {
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		a    store.Attempt
		want time.Time
	}{
		{"backoff", store.Attempt{Time: at, Failures: 2}, at.Add(2 * time.Minute)},
		{"later Retry-After wins", store.Attempt{Time: at, Failures: 2, RetryAfter: at.Add(time.Hour)}, at.Add(time.Hour)},
		{"earlier Retry-After ignored", store.Attempt{Time: at, Failures: 2, RetryAfter: at.Add(time.Second)}, at.Add(2 * time.Minute)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DefaultPolicy.RetryAt(tc.a, 1); !got.Equal(tc.want) {
				t.Errorf("RetryAt = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestARIPollAt(t *testing.T) {
	f := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	now := f.Add(time.Hour)
	w := func(retry time.Time) *store.ARIWindow {
		return &store.ARIWindow{Start: f.Add(48 * time.Hour), End: f.Add(72 * time.Hour), Fetched: f, RetryAfter: retry}
	}
	tests := []struct {
		name string
		w    *store.ARIWindow
		want time.Time
	}{
		{"never fetched: now", nil, now},
		{"Retry-After followed", w(f.Add(3 * time.Hour)), f.Add(3 * time.Hour)},
		{"no Retry-After: 6h", w(time.Time{}), f.Add(6 * time.Hour)},
		{"Retry-After below a minute raised", w(f.Add(time.Second)), f.Add(time.Minute)},
		{"Retry-After beyond a day cut", w(f.Add(72 * time.Hour)), f.Add(24 * time.Hour)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DefaultPolicy.ARIPollAt(tc.w, now); !got.Equal(tc.want) {
				t.Errorf("ARIPollAt = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWindowPassedAndGuard(t *testing.T) {
	nb := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(time.Hour)
	// A revoked certificate: Pebble answers with a window that ended an
	// hour before the fetch.
	revoked := &store.ARIWindow{Start: nb.Add(-time.Hour), End: nb.Add(-time.Hour + time.Second), Fetched: nb.Add(time.Minute)}
	if !WindowPassed(revoked) {
		t.Error("a window ended before its fetch is not reported as passed")
	}
	d := DefaultPolicy.Due(store.Record{NotBefore: nb, NotAfter: na, ARI: revoked}, nb.Add(2*time.Minute), 0.7, 1)
	if !d.Due || d.Reason != ReasonARIPassed {
		t.Errorf("revoked certificate: %+v, want due now with %q", d, ReasonARIPassed)
	}
	// A window reaching expiry is cut at a tenth of the lifetime left.
	whole := &store.ARIWindow{Start: nb, End: na, Fetched: nb}
	if got, latest := DefaultPolicy.RenewAt(nb, na, whole, 0.99), na.Add(-6*time.Minute); got.After(latest) {
		t.Errorf("RenewAt = %v, later than %v", got, latest)
	}
	if WindowPassed(whole) {
		t.Error("a future window is reported as passed")
	}
}

func TestCAIndex(t *testing.T) {
	tests := []struct{ failures, after, n, want int }{
		{0, 3, 2, 0}, {2, 3, 2, 0}, {3, 3, 2, 1}, {5, 3, 2, 1}, {6, 3, 2, 0},
		{9, 3, 3, 0}, {4, 1, 3, 1}, {7, 3, 1, 0}, {7, 0, 2, 0},
	}
	for _, tc := range tests {
		if got := CAIndex(tc.failures, tc.after, tc.n); got != tc.want {
			t.Errorf("CAIndex(%d, %d, %d) = %d, want %d", tc.failures, tc.after, tc.n, got, tc.want)
		}
	}
}

// A year of renewals for each lifetime, driven by an injected clock: the
// CA gives a renewal window, polled as its Retry-After says, and fails one
// attempt in four (with a Retry-After now and then). Every renewal happens
// before expiry, none before the window (or the lifetime rule), failures
// back off, and the whole year runs in milliseconds.
func TestPolicyYear(t *testing.T) {
	for _, life := range []time.Duration{160 * time.Hour, 45 * 24 * time.Hour, 90 * 24 * time.Hour} {
		for _, withARI := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v ari=%v", life, withARI), func(t *testing.T) {
				begin := time.Now()
				r := rand.New(rand.NewPCG(uint64(life), 7))
				p := Policy{}
				now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
				end := now.AddDate(1, 0, 0)
				issue := func(rec *store.Record) {
					rec.NotBefore, rec.NotAfter = now, now.Add(life)
					rec.ARI, rec.Last = nil, &store.Attempt{Time: now, OK: true}
				}
				rec := store.Record{}
				issue(&rec)
				frac, renewals, failures, polls := r.Float64(), 0, 0, 0
				for now.Before(end) {
					// The next event: the renewal (or retry) or an ARI poll.
					d := p.Due(rec, now, frac, 0.5)
					next := d.At
					if withARI {
						if poll := p.ARIPollAt(rec.ARI, now); poll.Before(next) {
							next = poll
						}
					}
					if next.Before(now) {
						next = now
					}
					now = next
					if withARI && !p.ARIPollAt(rec.ARI, now).After(now) && !p.Due(rec, now, frac, 0.5).Due {
						polls++
						// The CA's window: a day-wide band around 2/3 of the life.
						mid := rec.NotBefore.Add(life * 2 / 3)
						rec.ARI = &store.ARIWindow{Start: mid.Add(-life / 20), End: mid.Add(life / 20), Fetched: now, RetryAfter: now.Add(6 * time.Hour)}
						frac = r.Float64()
						continue
					}
					if left := rec.NotAfter.Sub(now); left <= 0 {
						t.Fatalf("certificate expired at %v before renewal", rec.NotAfter)
					}
					if r.IntN(4) == 0 {
						failures++
						n := 1
						if rec.Last != nil && !rec.Last.OK {
							n = rec.Last.Failures + 1
						}
						rec.Last = &store.Attempt{Time: now, Failures: n}
						if r.IntN(3) == 0 {
							rec.Last.RetryAfter = now.Add(90 * time.Minute)
						}
						next := p.RetryAt(*rec.Last, 0.5)
						if next.Sub(now) < time.Minute/2 {
							t.Fatalf("retry after only %v", next.Sub(now))
						}
						continue
					}
					if now.Sub(rec.NotBefore) < life/2 {
						t.Fatalf("renewed after only %v of %v", now.Sub(rec.NotBefore), life)
					}
					renewals++
					issue(&rec)
					frac = r.Float64()
				}
				want := int(365 * 24 * time.Hour / (life * 2 / 3))
				if renewals < want-2 || renewals > want+2 {
					t.Errorf("renewals = %d, want about %d", renewals, want)
				}
				if withARI && polls < renewals {
					t.Errorf("polled the CA %d times for %d renewals", polls, renewals)
				}
				t.Logf("%d renewals, %d failures, %d ARI polls; the year took %v to simulate", renewals, failures, polls, time.Since(begin))
			})
		}
	}
}

// An expired certificate that keeps failing is retried after at most
// BackoffMin, and never before the CA's Retry-After.
func TestDueExpiredBacksOff(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := store.Record{NotBefore: nb, NotAfter: nb.Add(time.Hour)}
	at := rec.NotAfter.Add(time.Minute)
	rec.Last = &store.Attempt{Time: at, Failures: 9}
	if d := Due(rec, at.Add(30*time.Second), 0); d.Due {
		t.Errorf("retried 30s after a failure: %+v", d)
	}
	if d := Due(rec, at.Add(time.Minute), 0); !d.Due || d.Reason != ReasonExpired {
		t.Errorf("not retried after BackoffMin: %+v", d)
	}
	rec.Last.RetryAfter = at.Add(time.Hour)
	if d := Due(rec, at.Add(30*time.Minute), 0); d.Due {
		t.Errorf("Retry-After ignored for an expired certificate: %+v", d)
	}
}

// A renewal inside a CA window that reaches expiry starts at the latest
// when Reserve is left, and that leaves room for two retries (BackoffMin,
// then its double, in proportion for short lifetimes) and the last retry's
// run before the certificate expires. Seen before: a 90s certificate
// renewed 7s before expiry, with a one-minute backoff after a failure.
func TestRenewAtLeavesRoomForTwoRetries(t *testing.T) {
	nb := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	const day = 24 * time.Hour
	whole := func(life time.Duration) *store.ARIWindow {
		return &store.ARIWindow{Start: nb, End: nb.Add(life), Fetched: nb}
	}
	// A window that opens after the Guard point, up to expiry.
	late := func(life time.Duration) *store.ARIWindow {
		return &store.ARIWindow{Start: nb.Add(life - life/20), End: nb.Add(life), Fetched: nb}
	}
	tests := []struct {
		name    string
		p       Policy
		life    time.Duration
		ari     func(time.Duration) *store.ARIWindow
		reserve time.Duration // expected time left at the latest renewal
		backoff time.Duration // expected first backoff
		second  time.Duration // expected second backoff; 0: twice the first
	}{
		{"90s whole window", Policy{}, 90 * time.Second, whole, 12 * time.Second, 3 * time.Second, 0},
		{"90s late window", Policy{}, 90 * time.Second, late, 12 * time.Second, 3 * time.Second, 0},
		{"90s no window", Policy{}, 90 * time.Second, nil, 12 * time.Second, 3 * time.Second, 0},
		{"160h whole window", Policy{}, 160 * time.Hour, whole, 16 * time.Hour, time.Minute, 0},
		{"160h late window", Policy{}, 160 * time.Hour, late, 16 * time.Hour, time.Minute, 0},
		{"45d whole window", Policy{}, 45 * day, whole, 45 * day / 10, time.Minute, 0},
		{"45d late window", Policy{}, 45 * day, late, 45 * day / 10, time.Minute, 0},
		{"90d whole window", Policy{}, 90 * day, whole, 9 * day, time.Minute, 0},
		{"90d late window", Policy{}, 90 * day, late, 9 * day, time.Minute, 0},
		// A small Guard: the retries decide.
		{"160h small guard", Policy{Guard: 0.001, BackoffMin: 30 * time.Minute}, 160 * time.Hour, whole, 2 * time.Hour, 30 * time.Minute, 0},
		{"90d small guard, capped doubling", Policy{Guard: 0.0001, BackoffMin: time.Hour, BackoffMax: 90 * time.Minute}, 90 * day, late, 3*time.Hour + 30*time.Minute, time.Hour, 90 * time.Minute},
		{"90s small guard", Policy{Guard: 0.001}, 90 * time.Second, whole, 12 * time.Second, 3 * time.Second, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			na := nb.Add(tc.life)
			var ari *store.ARIWindow
			if tc.ari != nil {
				ari = tc.ari(tc.life)
			}
			if got := tc.p.Reserve(tc.life); got != tc.reserve {
				t.Errorf("Reserve(%v) = %v, want %v", tc.life, got, tc.reserve)
			}
			// The latest point: the end of the window (or of the jitter).
			at := tc.p.RenewAt(nb, na, ari, 0.999999)
			if left := na.Sub(at); left < tc.reserve {
				t.Fatalf("RenewAt leaves %v of %v, want at least %v", left, tc.life, tc.reserve)
			}
			if ari != nil {
				if left := na.Sub(at); left != tc.reserve {
					t.Errorf("a window reaching expiry is cut at %v left, want %v", left, tc.reserve)
				}
				if first := tc.p.RenewAt(nb, na, ari, 0); first.After(at) {
					t.Errorf("frac 0 gives %v, after the latest point %v", first, at)
				}
			}
			// The renewal at that point fails twice; both retries, with
			// their full backoff, come before expiry with the first backoff
			// still left for the last one to run.
			rec := store.Record{NotBefore: nb, NotAfter: na, ARI: ari}
			if d := tc.p.Due(rec, at, 0.999999, 1); !d.Due {
				t.Fatalf("not due at the latest point %v: %+v", at, d)
			}
			now := at
			second := tc.second
			if second == 0 {
				second = 2 * tc.backoff
			}
			for i, wait := range []time.Duration{tc.backoff, second} {
				failures := i + 1
				rec.Last = &store.Attempt{Time: now, Failures: failures}
				d := tc.p.Due(rec, now.Add(time.Nanosecond), 0.999999, 1)
				if d.Due || d.Reason != ReasonBackoff {
					t.Fatalf("failure %d: %+v, want backing off", failures, d)
				}
				if got := d.At.Sub(now); got != wait {
					t.Errorf("failure %d: retry after %v, want %v", failures, got, wait)
				}
				now = d.At
				if d := tc.p.Due(rec, now, 0.999999, 1); !d.Due || d.Reason == ReasonExpired {
					t.Fatalf("retry %d at %v (%v before expiry): %+v, want due before expiry", failures, now, na.Sub(now), d)
				}
			}
			if left := na.Sub(now); left < tc.backoff {
				t.Errorf("the second retry starts %v before expiry, want at least %v for it to run", left, tc.backoff)
			}
		})
	}
}
