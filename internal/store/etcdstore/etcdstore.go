package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/detour-acme/detour/internal/store"
)

// Defaults of Options.
const (
	DefaultPrefix  = "/detour"
	DefaultLockTTL = 30 * time.Second
	DefaultTimeout = 10 * time.Second
)

// Options configure a Store.
type Options struct {
	// Client is the etcd client, dialled by the caller with the fleet's
	// endpoints and TLS material; required. Close leaves it open.
	Client *clientv3.Client
	// Prefix is where the fleet's state lives, such as "/detour" (the
	// default): a leading "/" is added and trailing ones are removed.
	Prefix string
	// FleetID names the fleet (1-64 of A-Z a-z 0-9 . _ -); required. The
	// first node writes it under <Prefix>/id; a node of another fleet is
	// refused the prefix.
	FleetID string
	// Keys encrypt the secrets (see LoadKeys); required.
	Keys Keys
	// Logger receives locking and conflict events; nil discards them.
	Logger *slog.Logger
	// Holder names whoever takes locks through this Store (a fleet's node
	// name), for LockHolders; empty names the host and process only.
	Holder string
	// LockTTL is the TTL of the lease locks are tied to: a node that dies
	// holding a lock, or cannot reach etcd, loses it this long after its
	// last keep-alive. Rounded up to whole seconds; default 30s.
	LockTTL time.Duration
	// Timeout bounds each request Open makes and each release of a lock
	// (which runs even when the caller's context is done); default 10s.
	Timeout time.Duration
}

// Store is the etcd backend: store.Storage, store.Locker and store.Certs
// under one prefix. It is safe for concurrent use, and any number of nodes
// may open the same prefix with the same fleet id.
type Store struct {
	cli     *clientv3.Client
	prefix  string // normalised: "/detour", or "" for the root
	fleet   string
	keys    Keys
	log     *slog.Logger
	ttl     int // lock lease TTL, seconds
	timeout time.Duration
	holder  string // Options.Holder
	// pageValues and pageKeys are rangeAll's page sizes (tests make them
	// small).
	pageValues, pageKeys int64
	// afterCommit, set only by tests, sees the error of PutCertificate's
	// commit and may replace it (an answer lost after the commit).
	afterCommit func(err error) error

	bg   context.Context // ends with Close; the lock sessions' keep-alives run under it
	stop context.CancelFunc

	sessMu chan struct{} // held while the session is checked or replaced
	mu     sync.Mutex
	sess   *concurrency.Session
	sems   map[string]chan struct{} // one holder or waiter per lock name in this Store
	held   map[string]int           // lock names held, for the log when a session ends
	closed bool
}

var (
	_ store.Storage = (*Store)(nil)
	_ store.Locker  = (*Store)(nil)
	_ store.Certs   = (*Store)(nil)
)

// Open checks the options, claims the prefix for opts.FleetID (or checks
// that it belongs to it) and returns the Store. Each request is bounded by
// opts.Timeout; an unreachable cluster gives an error naming the endpoints
// and what to check.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Client == nil {
		return nil, errors.New("opening the etcd store: no etcd client; dial one with the fleet's endpoints")
	}
	prefix, err := normalisePrefix(opts.Prefix)
	if err != nil {
		return nil, err
	}
	if err := validFleetID(opts.FleetID); err != nil {
		return nil, err
	}
	if len(opts.Keys.list) == 0 {
		return nil, errors.New("opening the etcd store: no encryption key; create a key file with `detour fleet init-key FILE`, copy it to every node (mode 0600) and point the fleet configuration at it")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LockTTL <= 0 {
		opts.LockTTL = DefaultLockTTL
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	bg, stop := context.WithCancel(context.Background())
	s := &Store{
		cli:        opts.Client,
		prefix:     prefix,
		fleet:      opts.FleetID,
		keys:       opts.Keys,
		log:        opts.Logger,
		ttl:        int((opts.LockTTL + time.Second - 1) / time.Second),
		timeout:    opts.Timeout,
		holder:     opts.Holder,
		pageValues: defaultPageValues,
		pageKeys:   defaultPageKeys,
		bg:         bg,
		stop:       stop,
		sessMu:     make(chan struct{}, 1),
		sems:       make(map[string]chan struct{}),
		held:       make(map[string]int),
	}
	if err := s.claim(ctx); err != nil {
		stop()
		return nil, err
	}
	return s, nil
}

// normalisePrefix returns p with one leading "/" and no trailing one;
// "" becomes DefaultPrefix and "/" the root ("").
func normalisePrefix(p string) (string, error) {
	if p == "" {
		return DefaultPrefix, nil
	}
	if strings.ContainsAny(p, "\x00\\") {
		return "", fmt.Errorf("invalid etcd prefix %q: must not contain NUL bytes or backslashes; use one such as %q", p, DefaultPrefix)
	}
	clean := path.Clean("/" + p)
	if clean != "/"+strings.Trim(p, "/") {
		return "", fmt.Errorf("invalid etcd prefix %q: empty, \".\" or \"..\" elements; use one such as %q", p, DefaultPrefix)
	}
	if clean == "/" {
		return "", nil
	}
	return clean, nil
}

// validFleetID checks a fleet id.
func validFleetID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("invalid fleet id %q: must be 1-64 characters; set the fleet name in the configuration", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("invalid fleet id %q: use only letters, digits, '.', '-' and '_'", id)
		}
	}
	return nil
}

// claim writes the fleet id under <prefix>/id unless some node already
// has, and refuses a prefix another fleet owns.
func (s *Store) claim(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	key := s.idKey()
	for attempt := 0; ; attempt++ {
		var resp *clientv3.TxnResponse
		err := s.do(ctx, func(ctx context.Context) (err error) {
			resp, err = s.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
				Then(clientv3.OpPut(key, s.fleet)).
				Else(clientv3.OpGet(key)).
				Commit()
			return err
		})
		if err != nil {
			return s.fail(err, "checking the fleet id at %s", key)
		}
		if resp.Succeeded {
			s.log.Info("claimed the etcd prefix for this fleet", "prefix", s.prefixOrRoot(), "fleet", s.fleet)
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 && attempt < 3 {
			continue // deleted between the compare and the read: try again
		}
		if len(kvs) == 1 && string(kvs[0].Value) == s.fleet {
			return nil
		}
		owner := ""
		if len(kvs) == 1 {
			owner = string(kvs[0].Value)
		}
		return fmt.Errorf("etcd prefix %q belongs to fleet %q, but this node is configured for fleet %q: "+
			"two fleets must not share a prefix; give this fleet its own prefix (the fleet's prefix setting), "+
			"or, if this node belongs to fleet %q, set its fleet name to %q",
			s.prefixOrRoot(), owner, s.fleet, owner, owner)
	}
}

// Close releases every lock this Store holds (its session lease is
// revoked; their release functions then return ErrLockLost) and stops its
// keep-alives. Lock and TryLock fail afterwards; the other methods keep
// working. The client stays open: the caller closes it.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	sess := s.sess
	s.sess = nil
	s.mu.Unlock()
	var err error
	if sess != nil {
		sess.Orphan()
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		if _, rerr := s.cli.Revoke(ctx, sess.Lease()); rerr != nil && !errors.Is(rerr, rpctypes.ErrLeaseNotFound) {
			err = s.fail(rerr, "closing the etcd store: revoking the lock session (its locks end when the lease expires)")
		}
		cancel()
	}
	s.stop()
	return err
}

// FleetID returns the fleet id the Store was opened with.
func (s *Store) FleetID() string { return s.fleet }

// Prefix returns the normalised prefix ("" for the root).
func (s *Store) Prefix() string { return s.prefix }

func (s *Store) prefixOrRoot() string {
	if s.prefix == "" {
		return "/"
	}
	return s.prefix
}

// Keys of the layout (see the package documentation).
func (s *Store) idKey() string                   { return s.prefix + "/id" }
func (s *Store) kvRoot() string                  { return s.prefix + "/store/kv/" }
func (s *Store) kvKey(key string) string         { return s.kvRoot() + key }
func (s *Store) certsRoot() string               { return s.prefix + "/store/certs/" }
func (s *Store) certRoot(name string) string     { return s.certsRoot() + name + "/" }
func (s *Store) liveKey(name string) string      { return s.certRoot(name) + "live" }
func (s *Store) versionsRoot(name string) string { return s.certRoot(name) + "versions/" }
func (s *Store) recordsRoot() string             { return s.prefix + "/store/records/" }
func (s *Store) recordKey(name string) string    { return s.recordsRoot() + name + ".json" }
func (s *Store) lockPrefix(name string) string {
	return s.prefix + "/store/locks/" + name
}

// fail wraps err with what was being done; when etcd did not answer, it
// names the endpoints and what to check.
func (s *Store) fail(err error, format string, args ...any) error {
	doing := fmt.Sprintf(format, args...)
	switch {
	case errors.Is(err, rpctypes.ErrPermissionDenied), errors.Is(err, rpctypes.ErrUserEmpty),
		errors.Is(err, rpctypes.ErrInvalidAuthToken), errors.Is(err, rpctypes.ErrAuthFailed):
		return fmt.Errorf("%s: etcd refused the request: %w; grant this node's etcd user read and write on %s/ (and check its user name and password)",
			doing, err, s.prefixOrRoot())
	case unreachable(err):
		return fmt.Errorf("%s: etcd did not answer at %s: check the endpoints' addresses and ports, the TLS material (CA, client certificate and key) and that etcd runs there: %w",
			doing, strings.Join(s.cli.Endpoints(), ", "), unreachableError{err})
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// ErrUnreachable is matched (errors.Is) by the errors of requests etcd did
// not answer: a caller that can wait (the agent starting) tries again.
var ErrUnreachable = errors.New("etcd unreachable")

// unreachableError is an error etcd's silence caused; it reads as its
// cause.
type unreachableError struct{ err error }

func (e unreachableError) Error() string        { return e.err.Error() }
func (e unreachableError) Unwrap() error        { return e.err }
func (e unreachableError) Is(target error) bool { return target == ErrUnreachable }

// unreachable reports whether err means that etcd did not answer.
func unreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable || ee.Code() == codes.DeadlineExceeded
	}
	if st, ok := status.FromError(err); ok {
		return st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded
	}
	return false
}

// transient reports whether err is a failure that a retry can get past: a
// leader change, a member down, a connection being re-established.
func transient(err error) bool {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable
	}
	if st, ok := status.FromError(err); ok {
		return st.Code() == codes.Unavailable
	}
	return false
}

// Retry bounds for transient failures.
const (
	retryMin = 20 * time.Millisecond
	retryMax = 500 * time.Millisecond
)

// do runs op, retrying transient failures with growing, jittered delays
// until it succeeds, fails otherwise, or ctx is done. op must be safe to
// repeat: an idempotent request, or a transaction whose compare detects
// that an earlier try went through.
func (s *Store) do(ctx context.Context, op func(ctx context.Context) error) error {
	delay := retryMin
	for {
		err := op(ctx)
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		s.log.Debug("etcd request failed; retrying", "error", err, "delay", delay)
		if werr := sleep(ctx, delay); werr != nil {
			return err
		}
		delay = min(delay*2, retryMax)
	}
}

// sleep waits d, with up to half of it added at random, or until ctx is
// done.
func sleep(ctx context.Context, d time.Duration) error {
	d += rand.N(d/2 + 1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Default page sizes of rangeAll: values, and keys only.
const (
	defaultPageValues = 256
	defaultPageKeys   = 4096
)

// rangeAll returns every pair with a key in [from, end), ascending, in
// pages so that no response grows past etcd's message limits; every page is
// read at the revision of the first, so the result is one snapshot.
func (s *Store) rangeAll(ctx context.Context, from, end string, keysOnly bool) ([]*mvccpb.KeyValue, error) {
	var out []*mvccpb.KeyValue
	var rev int64
	page := s.pageValues
	if keysOnly {
		page = s.pageKeys
	}
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(page),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		var resp *clientv3.GetResponse
		err := s.do(ctx, func(ctx context.Context) (err error) {
			resp, err = s.cli.Get(ctx, from, opts...)
			return err
		})
		if err != nil {
			return nil, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		out = append(out, resp.Kvs...)
		if !resp.More || len(resp.Kvs) == 0 {
			return out, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// rangePrefix is rangeAll of every key starting with prefix.
func (s *Store) rangePrefix(ctx context.Context, prefix string, keysOnly bool) ([]*mvccpb.KeyValue, error) {
	return s.rangeAll(ctx, prefix, clientv3.GetPrefixRangeEnd(prefix), keysOnly)
}

// get returns the pair under key, or nil when there is none.
func (s *Store) get(ctx context.Context, key string) (*mvccpb.KeyValue, error) {
	var resp *clientv3.GetResponse
	err := s.do(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, key)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0], nil
}
