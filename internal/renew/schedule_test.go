package renew

import (
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
