package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/store"
)

// DefaultWatchProbe is WatchOptions.Probe's default.
const DefaultWatchProbe = 5 * time.Second

// watchRetryMax is the longest wait between two attempts to read the live
// pointers again while etcd does not answer.
const watchRetryMax = 2 * time.Second

// liveBatch is how many live pointers one transaction of listLive reads
// (etcd refuses transactions of more than 128 operations by default).
const liveBatch = 64

// WatchOptions configure WatchLiveWith.
type WatchOptions struct {
	// Probe is how often the watch asks etcd for a progress notification,
	// to find out that the connection died without telling (a partition,
	// a member gone): a watch that hears nothing in the Probe after a
	// request is dropped and the live pointers are read again. Zero means
	// DefaultWatchProbe.
	Probe time.Duration
}

// errCompacted ends a watch whose history etcd compacted away.
var errCompacted = errors.New("the history of the live pointers was compacted")

// WatchLive is WatchLiveWith with the default options.
func (s *Store) WatchLive(ctx context.Context, fn func(name string, version int)) error {
	return s.WatchLiveWith(ctx, WatchOptions{}, fn)
}

// WatchLiveWith reports the live version of every certificate and then
// every change of one, until ctx ends; it returns ctx's error.
//
// It reads every live pointer (certs/<name>/live) in one snapshot and
// calls fn for each, in name order, then watches them from that snapshot's
// revision and calls fn for each change. A live pointer deleted, or
// holding something that is not a version number (logged), is reported
// as version 0. After a compaction of the history it needs, a watch that
// ends, or a probe that etcd does not answer (see WatchOptions.Probe), it
// reads every pointer again and reports each again, changed or not, and
// version 0 for those gone meanwhile; a caller must therefore take a
// report as "look again", not as news. While etcd does not answer it keeps
// trying, with waits growing to a few seconds; the outage is logged once
// (Warn) and its end once (Info).
//
// fn runs on WatchLive's goroutine, one call at a time: it must return
// quickly (note the name, and do the work elsewhere). The versions are
// those of the shared store, not of any node's own files.
func (s *Store) WatchLiveWith(ctx context.Context, opts WatchOptions, fn func(name string, version int)) error {
	if opts.Probe <= 0 {
		opts.Probe = DefaultWatchProbe
	}
	known := map[string]bool{}
	var down time.Time // when the current outage began; zero when none
	wait := retryMin
	for {
		live, rev, err := s.listLive(ctx)
		if err == nil {
			if !down.IsZero() {
				s.log.InfoContext(ctx, "etcd answers again; the live certificates were read again", "away", time.Since(down).Round(time.Millisecond))
				down = time.Time{}
			}
			wait = retryMin
			names := make([]string, 0, len(known))
			for name := range known {
				if _, ok := live[name]; !ok {
					names = append(names, name)
				}
			}
			slices.Sort(names)
			for _, name := range names {
				delete(known, name)
				fn(name, 0)
			}
			names = names[:0]
			for name := range live {
				names = append(names, name)
			}
			slices.Sort(names)
			for _, name := range names {
				known[name] = true
				fn(name, live[name])
			}
			err = s.watchLive(ctx, rev, opts.Probe, known, fn)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errCompacted) {
			s.log.InfoContext(ctx, "watching the live certificates: reading them again", "reason", err)
			continue
		}
		if down.IsZero() {
			down = time.Now()
			s.log.WarnContext(ctx, "watching the live certificates: etcd does not answer; reading them again once it does",
				"endpoints", strings.Join(s.cli.Endpoints(), ","), "error", err)
		} else {
			s.log.DebugContext(ctx, "watching the live certificates: still no answer", "error", err)
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
		wait = min(2*wait, watchRetryMax)
	}
}

// liveName returns the certificate whose live pointer key is, and whether
// key is one.
func (s *Store) liveName(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, s.certsRoot())
	if !ok {
		return "", false
	}
	name, ok := strings.CutSuffix(rest, "/live")
	if !ok || store.ValidName(name) != nil {
		return "", false
	}
	return name, true
}

// liveValue returns the version a live pointer holds, 0 (logged) when it
// holds no version number.
func (s *Store) liveValue(ctx context.Context, key string, v []byte) int {
	n, err := parseLive(v)
	if err != nil {
		s.log.WarnContext(ctx, "a live pointer holds no version; reported as version 0", "key", key, "error", err)
		return 0
	}
	return n
}

// listLive reads every live pointer in one snapshot: the keys under
// certs/ (keys only, in pages), then the values of the live pointers at
// the same revision, in batches. It returns the versions by name and the
// snapshot's revision. It is bounded by the Store's Timeout.
func (s *Store) listLive(ctx context.Context) (map[string]int, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	root := s.certsRoot()
	from, end := root, clientv3.GetPrefixRangeEnd(root)
	var rev int64
	var keys []string
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(s.pageKeys), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		var resp *clientv3.GetResponse
		err := s.do(ctx, func(ctx context.Context) (err error) {
			resp, err = s.cli.Get(ctx, from, opts...)
			return err
		})
		if err != nil {
			return nil, 0, s.fail(err, "listing the live certificates")
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if _, ok := s.liveName(string(kv.Key)); ok {
				keys = append(keys, string(kv.Key))
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	live := make(map[string]int, len(keys))
	for batch := range slices.Chunk(keys, liveBatch) {
		ops := make([]clientv3.Op, len(batch))
		for i, k := range batch {
			ops[i] = clientv3.OpGet(k, clientv3.WithRev(rev))
		}
		var resp *clientv3.TxnResponse
		err := s.do(ctx, func(ctx context.Context) (err error) {
			resp, err = s.cli.Txn(ctx).Then(ops...).Commit()
			return err
		})
		if err != nil {
			return nil, 0, s.fail(err, "reading the live pointers")
		}
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().GetKvs() {
				name, _ := s.liveName(string(kv.Key))
				live[name] = s.liveValue(ctx, string(kv.Key), kv.Value)
			}
		}
	}
	return live, rev, nil
}

// watchLive watches the live pointers for changes after revision rev, calling fn for
// each change, until ctx ends, the watch fails or ends, its history is
// compacted (errCompacted), or a progress request goes unanswered for a
// whole probe interval.
func (s *Store) watchLive(ctx context.Context, rev int64, probe time.Duration, known map[string]bool, fn func(string, int)) error {
	return s.watchFrom(ctx, rev, probe, "watching the live certificates", func(ev *clientv3.Event) error {
		key := string(ev.Kv.Key)
		name, ok := s.liveName(key)
		if !ok {
			return nil // a version, not a pointer
		}
		switch ev.Type {
		case clientv3.EventTypePut:
			known[name] = true
			fn(name, s.liveValue(ctx, key, ev.Kv.Value))
		case clientv3.EventTypeDelete:
			if known[name] {
				delete(known, name)
				fn(name, 0)
			}
		}
		return nil
	}, s.certsRoot(), clientv3.WithPrefix())
}

// watchFrom watches key (with opts: a prefix or a range) for what changed
// after revision rev (a read's revision), handing each event to each, until ctx ends, each fails, the watch
// fails or ends, its history is compacted (errCompacted), or a progress
// request goes unanswered for a whole probe interval (a member cut off
// from the others, or a stream that silently died). what names the watch
// in errors.
func (s *Store) watchFrom(ctx context.Context, rev int64, probe time.Duration, what string, each func(*clientv3.Event) error, key string, opts ...clientv3.OpOption) error {
	// WithRequireLeader: a member cut off from the others ends the watch
	// instead of keeping it open with nothing to say.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// From rev itself, not rev+1, skipping what rev already held: etcd
	// answers a progress request only once its store has reached the
	// watch's start revision, so a watch from rev+1 in a quiet cluster
	// (no write since the read) never heard its probes, gave up, and read
	// everything again, over and over.
	wch := s.cli.Watch(wctx, key, append(opts, clientv3.WithRev(rev))...)
	tick := time.NewTicker(probe)
	defer tick.Stop()
	heard := true // something came since the last progress request
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if !heard {
				return fmt.Errorf("no answer on the watch within %v", probe)
			}
			heard = false
			// The request goes out on the watch's own stream (same
			// context metadata); its answer comes back on wch.
			pctx, pcancel := context.WithTimeout(wctx, probe)
			err := s.cli.RequestProgress(pctx)
			pcancel()
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("asking for the watch's progress: %w", err)
			}
		case r, ok := <-wch:
			if !ok {
				return errors.New("the watch ended")
			}
			heard = true
			if r.CompactRevision != 0 {
				return fmt.Errorf("%w (at revision %d)", errCompacted, r.CompactRevision)
			}
			if err := r.Err(); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			for _, ev := range r.Events {
				if ev.Kv.ModRevision <= rev {
					continue // in the read already
				}
				if err := each(ev); err != nil {
					return err
				}
			}
		}
	}
}
