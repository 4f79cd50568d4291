package fleet

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store/etcdstore"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// TestQuietFleetWatchesHold: a node's follower and its watch of the live
// certificates share one etcd client (one gRPC stream), as in `detour
// run`. In a quiet fleet (no write after they start) the live watch's
// progress probes are still answered: it never gives up and reads every
// certificate again. A follower watching from beyond the store's revision
// made etcd ignore every probe on the stream.
func TestQuietFleetWatchesHold(t *testing.T) {
	t.Parallel()
	f := onCluster(t, etcdtest.New(t, etcdtest.Options{}))
	n, cli := f.join("web1")
	stop := f.follow(n, map[string]solve.Solver{"web": newFake()})
	defer stop()
	var mu sync.Mutex
	var logs bytes.Buffer
	st, err := etcdstore.Open(context.Background(), etcdstore.Options{Client: cli, Prefix: f.prefix, FleetID: "test",
		Keys: loadKeys(t, keyLine("k1")), Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- st.WatchLiveWith(ctx, etcdstore.WatchOptions{Probe: 100 * time.Millisecond}, func(string, int) {})
	}()
	time.Sleep(3 * time.Second) // quiet for 30 probes: the property is that nothing happens
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchLive = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if l := logs.String(); strings.Contains(l, "does not answer") || strings.Contains(l, "no answer") {
		t.Errorf("the live watch gave up in a quiet fleet:\n%s", l)
	}
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
