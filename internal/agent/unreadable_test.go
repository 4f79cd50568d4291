package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/detour-acme/detour/internal/store"
)

// unreadableStore is a memStore whose records of name cannot be read (a
// permission problem, a file broken while the agent runs).
type unreadableStore struct {
	*memStore
	name string
}

func (s *unreadableStore) LoadRecord(ctx context.Context, name string) (store.Record, error) {
	if name == s.name {
		return store.Record{}, errors.New("open renewal/" + name + ".json: permission denied")
	}
	return s.memStore.LoadRecord(ctx, name)
}

// TestAgentSurvivesAnUnreadableRecord: a record that cannot be read when a
// renewal starts fails that renewal (retried with backoff, the cause
// shown), neither crashes the agent nor stops the other certificates.
func TestAgentSurvivesAnUnreadableRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := newMemStore(t)
		st := &unreadableStore{memStore: mem, name: "broken"}
		f := newFakeCA(t, mem)
		plan := Plan{Certs: []Cert{fakeCert(t, f, "broken", 90*24*time.Hour), fakeCert(t, f, "fine", 90*24*time.Hour)}}
		a, err := New(Options{Obtainer: f, Store: st})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx, plan) }()
		time.Sleep(time.Hour)
		status, err := a.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if f.renewals["fine"] != 1 || f.attempts["broken"] != 0 {
			t.Errorf("renewals %v, attempts %v: want fine issued once and broken never ordered", f.renewals, f.attempts)
		}
		for _, s := range status {
			if s.Name == "broken" && (s.Failures < 3 || !strings.Contains(s.LastError, "permission denied")) {
				t.Errorf("broken: %d failures, last error %q; want it retried with backoff and the cause shown", s.Failures, s.LastError)
			}
		}
	})
}
