package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/store"
)

// keysBuffer is the capacity of the channel WatchKeys returns.
const keysBuffer = 64

// WatchKeys is WatchKeysWith with the default options.
func (s *Store) WatchKeys(ctx context.Context, prefix string) (<-chan string, error) {
	return s.WatchKeysWith(ctx, prefix, WatchOptions{})
}

// WatchKeysWith reports the Storage keys at or below prefix (a key or a
// "directory" of keys, as List takes it) that are stored or deleted after
// it returns, until ctx ends; then the channel is closed. It lets a reader
// that keeps Storage values in memory (the acme-dns API) hear of the writes
// other nodes make.
//
// It reads the keys under prefix and the store's revision first, and
// watches from that revision, so no write made after WatchKeysWith returns
// is missed; it fails only when that first read does. A key is reported,
// never its value: a report means "look again" (Load it; fs.ErrNotExist
// when it was deleted). After a compaction of the history it needs, a
// watch that ends, or a probe that etcd does not answer (see
// WatchOptions.Probe), it reads the keys again and reports every one, and
// every key gone meanwhile, changed or not. While etcd does not answer it
// keeps trying, with waits growing to a few seconds; the outage is logged
// once (Warn) and its end once (Info).
//
// A reader that does not take the reports blocks the watch (they are
// buffered a little), not the Store.
func (s *Store) WatchKeysWith(ctx context.Context, prefix string, opts WatchOptions) (<-chan string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.Probe <= 0 {
		opts.Probe = DefaultWatchProbe
	}
	w, err := s.keyWatch(prefix)
	if err != nil {
		return nil, err
	}
	known, rev, err := w.list(ctx)
	if err != nil {
		return nil, err
	}
	ch := make(chan string, keysBuffer)
	go func() {
		defer close(ch)
		w.follow(ctx, known, rev, opts.Probe, ch)
	}()
	return ch, nil
}

// keyWatcher is one WatchKeysWith: the range of etcd keys it watches and
// the Storage keys it reports.
type keyWatcher struct {
	s        *Store
	prefix   string // Storage prefix without trailing "/"; "" for every key
	from, to string // etcd range [from, to)
}

// keyWatch checks prefix and returns its watcher; the range is List's.
func (s *Store) keyWatch(prefix string) (*keyWatcher, error) {
	prefix = strings.TrimSuffix(prefix, "/")
	root := s.kvRoot()
	w := &keyWatcher{s: s, prefix: prefix}
	if prefix == "" {
		w.from, w.to = root, clientv3.GetPrefixRangeEnd(root)
		return w, nil
	}
	if err := store.ValidKey(prefix); err != nil {
		return nil, err
	}
	// As in List: [p, p+"0") holds p, p+"/"... and keys such as p+"-b",
	// which storageKey leaves out.
	w.from, w.to = root+prefix, root+prefix+"0"
	return w, nil
}

// storageKey returns the Storage key of etcd key k, and whether it is one
// the watch reports.
func (w *keyWatcher) storageKey(k string) (string, bool) {
	key, ok := strings.CutPrefix(k, w.s.kvRoot())
	if !ok {
		return "", false
	}
	if w.prefix == "" || key == w.prefix || strings.HasPrefix(key, w.prefix+"/") {
		return key, true
	}
	return "", false
}

// list reads the Storage keys in the range in one snapshot (keys only, in
// pages) and returns them with the snapshot's revision. It is bounded by
// the Store's Timeout.
func (w *keyWatcher) list(ctx context.Context) (map[string]bool, int64, error) {
	s := w.s
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	from := w.from
	var rev int64
	keys := map[string]bool{}
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(w.to), clientv3.WithLimit(s.pageKeys), clientv3.WithKeysOnly(),
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
			return nil, 0, s.fail(err, "listing %q to watch it", w.prefix)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if k, ok := w.storageKey(string(kv.Key)); ok {
				keys[k] = true
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return keys, rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// follow watches what changes after revision rev and sends the keys that change on ch,
// reading everything again (and reporting it) whenever the watch fails,
// until ctx ends. known holds the keys that exist as of rev.
func (w *keyWatcher) follow(ctx context.Context, known map[string]bool, rev int64, probe time.Duration, ch chan<- string) {
	s := w.s
	var down time.Time // when the current outage began; zero when none
	wait := retryMin
	for {
		err := w.watch(ctx, rev, probe, known, ch)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errCompacted) {
			s.log.InfoContext(ctx, "watching storage keys: reading them again", "prefix", w.prefix, "reason", err)
		} else {
			s.log.DebugContext(ctx, "watching storage keys: the watch stopped; reading them again", "prefix", w.prefix, "reason", err)
		}
		// Read everything again, until etcd answers.
		for {
			var now map[string]bool
			now, rev, err = w.list(ctx)
			if err == nil {
				if !down.IsZero() {
					s.log.InfoContext(ctx, "etcd answers again; the watched storage keys were read again",
						"prefix", w.prefix, "away", time.Since(down).Round(time.Millisecond))
					down = time.Time{}
				}
				wait = retryMin
				for k := range now {
					known[k] = true
				}
				for k := range known {
					if !send(ctx, ch, k) {
						return
					}
					if !now[k] {
						delete(known, k)
					}
				}
				break
			}
			if ctx.Err() != nil {
				return
			}
			if down.IsZero() {
				down = time.Now()
				s.log.WarnContext(ctx, "watching storage keys: etcd does not answer; reading them again once it does",
					"prefix", w.prefix, "endpoints", strings.Join(s.cli.Endpoints(), ","), "error", err)
			} else {
				s.log.DebugContext(ctx, "watching storage keys: still no answer", "prefix", w.prefix, "error", err)
			}
			if sleep(ctx, wait) != nil {
				return
			}
			wait = min(2*wait, watchRetryMax)
		}
	}
}

// send sends key on ch unless ctx ends first.
func send(ctx context.Context, ch chan<- string, key string) bool {
	select {
	case ch <- key:
		return true
	case <-ctx.Done():
		return false
	}
}

// watch watches the range for changes after revision rev, sending each key that
// changes, until ctx ends, the watch fails or ends, its history is
// compacted (errCompacted), or a progress request goes unanswered for a
// whole probe interval (as watchLive does).
func (w *keyWatcher) watch(ctx context.Context, rev int64, probe time.Duration, known map[string]bool, ch chan<- string) error {
	return w.s.watchFrom(ctx, rev, probe, "watching storage keys", func(ev *clientv3.Event) error {
		k, ok := w.storageKey(string(ev.Kv.Key))
		if !ok {
			return nil
		}
		if ev.Type == clientv3.EventTypeDelete {
			delete(known, k)
		} else {
			known[k] = true
		}
		if !send(ctx, ch, k) {
			return ctx.Err()
		}
		return nil
	}, w.from, clientv3.WithRange(w.to))
}

// Modify replaces the value under key with what fn makes of the current
// one, atomically with respect to every other writer: fn gets the current
// value, decrypted if key is a secret (nil when there is none), and its
// result is written only if nothing changed key in between; otherwise the
// value is read again and fn called again. An error from fn is returned as
// it is and nothing is written. fn may thus run more than once, also after
// a write whose answer was lost went through: it must compute from old
// only. A secret encrypted with a key this node lacks is not replaced: the
// error is a *KeyMismatchError.
//
// It serves readers that keep a value in memory and change part of it
// (the TXT values of an acme-dns account): a plain Store from their copy
// would undo what another node wrote meanwhile.
func (s *Store) Modify(ctx context.Context, key string, fn func(old []byte) ([]byte, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.ValidKey(key); err != nil {
		return err
	}
	ek := s.kvKey(key)
	secret := store.IsSecret(key)
	for attempt := 0; ; attempt++ {
		kv, err := s.get(ctx, ek)
		if err != nil {
			return s.fail(err, "modifying %q", key)
		}
		var old []byte
		var rev int64
		if kv != nil {
			rev, old = kv.ModRevision, kv.Value
			if secret {
				if old, err = s.keys.open(ek, kv.Value); err != nil {
					return fmt.Errorf("modifying %q: %w", key, err)
				}
			}
			if old == nil {
				old = []byte{} // present, empty
			}
		}
		value, err := fn(old)
		if err != nil {
			return err
		}
		if secret {
			if value, err = s.keys.seal(ek, value); err != nil {
				return fmt.Errorf("modifying %q: %w", key, err)
			}
		}
		var resp *clientv3.TxnResponse
		err = s.do(ctx, func(ctx context.Context) (err error) {
			resp, err = s.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision(ek), "=", rev)).
				Then(clientv3.OpPut(ek, string(value))).
				Commit()
			return err
		})
		if err != nil {
			return s.fail(err, "modifying %q", key)
		}
		if resp.Succeeded {
			return nil
		}
		if attempt >= maxConflicts {
			return fmt.Errorf("modifying %q: it kept changing under this write (%d tries); try again", key, attempt+1)
		}
	}
}
