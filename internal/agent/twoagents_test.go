package agent

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// TestTwoAgentsOneStore: two agents over one store (cron and the agent on
// one host, or two nodes of a fleet), each with its own view of the
// records. When one renews, the other's decision rests on a record that is
// no longer current: it orders nothing and reschedules from the new record.
// Over a year the certificate is renewed as often as by one agent alone.
func TestTwoAgentsOneStore(t *testing.T) {
	const life = 90 * 24 * time.Hour
	year := func(agents int) (renewals, attempts int) {
		synctest.Test(t, func(t *testing.T) {
			st := newMemStore(t)
			f := newFakeCA(t, st)
			f.delay = 20 * time.Second
			ctx, cancel := context.WithCancel(t.Context())
			plan := Plan{Certs: []Cert{fakeCert(t, f, "www", life)}}
			var dones []chan error
			for range agents {
				a, err := New(Options{Obtainer: f, Store: st})
				if err != nil {
					t.Fatal(err)
				}
				done := make(chan error, 1)
				go func() { done <- a.Run(ctx, plan) }()
				dones = append(dones, done)
				time.Sleep(time.Minute) // the second starts once the first has issued
			}
			time.Sleep(365 * 24 * time.Hour)
			cancel()
			for _, d := range dones {
				if err := <-d; err != nil {
					t.Fatal(err)
				}
			}
			for _, p := range f.problems {
				t.Error(p)
			}
			renewals, attempts = f.renewals["www"], f.attempts["www"]
		})
		return renewals, attempts
	}
	one, _ := year(1)
	two, attempts := year(2)
	if two > one+1 {
		t.Errorf("two agents renewed %d times in a year (%d orders), one alone %d: the second renews what the first just renewed", two, attempts, one)
	}
	t.Logf("renewals in a year: one agent %d, two agents %d (%d orders)", one, two, attempts)
}
