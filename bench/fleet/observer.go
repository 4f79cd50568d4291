package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/fleet"
)

// observer watches a fleet's live pointers (<prefix>/store/certs/<name>/live)
// and the nodes' deploy reports (<prefix>/fleet/deployed/<node>/<name>) and
// notes when it first saw each version: the clock of the convergence
// figures. Its client is counted (clientCounter) so that its watch is left
// out of the fleet's etcd traffic.
type observer struct {
	prefix string

	mu      sync.Mutex
	changed chan struct{}                         // closed and replaced on every event
	live    map[string]map[int]time.Time          // cert -> version -> first seen
	served  map[string]map[string]map[int]seenRep // cert -> node -> version -> first report
}

type seenRep struct {
	at  time.Time
	err string
}

func newObserver(prefix string) *observer {
	return &observer{prefix: prefix, changed: make(chan struct{}),
		live: map[string]map[int]time.Time{}, served: map[string]map[string]map[int]seenRep{}}
}

// run watches until ctx ends; ready is closed once both watches are
// established.
func (o *observer) run(ctx context.Context, cli *clientv3.Client, ready chan<- struct{}) error {
	certs := o.prefix + "/store/certs/"
	deployed := o.prefix + "/fleet/deployed/"
	// Two watches on one stream; created with progress notify so that the
	// first response proves each is registered.
	wl := cli.Watch(ctx, certs, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	wd := cli.Watch(ctx, deployed, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	created := 0
	for {
		var r clientv3.WatchResponse
		var ok bool
		select {
		case r, ok = <-wl:
		case r, ok = <-wd:
		}
		now := time.Now()
		if !ok {
			return ctx.Err()
		}
		if err := r.Err(); err != nil {
			return fmt.Errorf("observer watch: %w", err)
		}
		if r.Created {
			if created++; created == 2 {
				close(ready)
			}
			continue
		}
		o.mu.Lock()
		for _, ev := range r.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			key := string(ev.Kv.Key)
			if rest, ok := strings.CutPrefix(key, certs); ok {
				name, ok := strings.CutSuffix(rest, "/live")
				if !ok {
					continue
				}
				v, err := strconv.Atoi(string(ev.Kv.Value))
				if err != nil {
					continue
				}
				if o.live[name] == nil {
					o.live[name] = map[int]time.Time{}
				}
				if _, seen := o.live[name][v]; !seen {
					o.live[name][v] = now
				}
			} else if rest, ok := strings.CutPrefix(key, deployed); ok {
				nd, name, ok := strings.Cut(rest, "/")
				if !ok {
					continue
				}
				var d fleet.Deployed
				if json.Unmarshal(ev.Kv.Value, &d) != nil {
					continue
				}
				if o.served[name] == nil {
					o.served[name] = map[string]map[int]seenRep{}
				}
				if o.served[name][nd] == nil {
					o.served[name][nd] = map[int]seenRep{}
				}
				if _, seen := o.served[name][nd][d.Version]; !seen {
					o.served[name][nd][d.Version] = seenRep{at: now, err: d.Error}
				}
			}
		}
		close(o.changed)
		o.changed = make(chan struct{})
		o.mu.Unlock()
	}
}

// liveAt returns when version v of name was first seen live.
func (o *observer) liveAt(name string, v int) (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	t, ok := o.live[name][v]
	return t, ok
}

// newestLive returns the highest live version of name seen.
func (o *observer) newestLive(name string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	high := 0
	for v := range o.live[name] {
		high = max(high, v)
	}
	return high
}

// waitServed waits until every node in nodes has reported serving version
// v of name, and returns when each first did.
func (o *observer) waitServed(ctx context.Context, name string, v int, nodes []string) (map[string]time.Time, error) {
	for {
		o.mu.Lock()
		out := map[string]time.Time{}
		for _, n := range nodes {
			if s, ok := o.served[name][n][v]; ok {
				if s.err != "" {
					o.mu.Unlock()
					return nil, fmt.Errorf("node %s reports version %d of %s with an error: %s", n, v, name, s.err)
				}
				out[n] = s.at
			}
		}
		ch := o.changed
		o.mu.Unlock()
		if len(out) == len(nodes) {
			return out, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %d nodes to serve %s version %d: %d did: %w", len(nodes), name, v, len(out), ctx.Err())
		}
	}
}
