package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/store/storetest"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// TestLeaderStopped: the leader is stopped while a node stores version
// after version of a certificate; every call succeeds (transient failures
// are retried), and nothing is lost or doubled: the versions are 1..N in
// the order stored, each holds its bundle, and live is the last.
func TestLeaderStopped(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t, etcdtest.Options{})
	s := open(t, c, Options{})
	const name = "leader.example"
	var bundles []store.Bundle
	stopped := make(chan struct{})
	leader := -1
	// A reader on another node loads the live version all along: every
	// load succeeds and versions never go back.
	reader := open(t, c, Options{Prefix: s.Prefix()})
	readErr := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		last := 0
		for {
			select {
			case <-done:
				readErr <- nil
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			_, v, err := reader.LoadCertificate(ctx, name)
			cancel()
			if errors.Is(err, fs.ErrNotExist) && last == 0 {
				continue
			}
			if err != nil || v < last {
				readErr <- fmt.Errorf("LoadCertificate = version %d after %d: %v", v, last, err)
				return
			}
			last = v
			time.Sleep(5 * time.Millisecond)
		}
	}()
	// Store versions before, during and after the stop, until the old
	// leader is down and a few more went through.
	after := 0
	for i := 0; after < 5; i++ {
		if i == 3 {
			leader = c.WaitLeader(context.Background(), 10*time.Second)
			go func() {
				defer close(stopped)
				c.Stop(leader)
			}()
		}
		select {
		case <-stopped:
			after++
		default:
		}
		bd := storetest.NewBundle(t, name)
		bundles = append(bundles, bd)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		v, err := s.PutCertificate(ctx, name, bd)
		cancel()
		if err != nil {
			t.Fatalf("PutCertificate %d: %v", i+1, err)
		}
		if v != i+1 {
			t.Fatalf("PutCertificate %d stored version %d", i+1, v)
		}
	}
	close(done)
	if err := <-readErr; err != nil {
		t.Error(err)
	}
	total := len(bundles)
	t.Logf("%d versions stored, the leader (member %d) stopped after the third", total, leader)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	want := make([]int, total)
	for i := range want {
		want[i] = i + 1
	}
	if vs, err := s.ArchiveVersions(ctx, name); err != nil || !slices.Equal(vs, want) {
		t.Errorf("ArchiveVersions = %v, %v; want 1..%d", vs, err, total)
	}
	for i, bd := range bundles {
		doc, key, err := s.loadVersion(ctx, name, i+1)
		if err != nil {
			t.Fatal(err)
		}
		if kp, err := s.keys.open(key, doc.Key); err != nil || doc.Cert != string(bd.CertPEM) || string(kp) != string(bd.KeyPEM) {
			t.Errorf("version %d does not hold bundle %d (%v)", i+1, i+1, err)
		}
	}
	got, v, err := s.LoadCertificate(ctx, name)
	if err != nil || v != total {
		t.Fatalf("live = %d, %v; want %d", v, err, total)
	}
	storetest.SameBundle(t, got, bundles[total-1])
	// The old leader comes back and catches up.
	c.Restart(leader)
}
