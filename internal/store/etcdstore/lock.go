package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/detour-acme/detour/internal/store"
)

// ErrLockLost is returned (wrapped) by a lock's release function when the
// lock had already ended: its session lease expired (etcd unreachable for
// longer than LockTTL), so another node may have held it since. Work done
// under it may have overlapped another node's.
var ErrLockLost = errors.New("the lock was lost before it was released: its etcd session lease expired (etcd unreachable for longer than the lock TTL), so another node may have held it meanwhile")

// errClosed is returned by Lock and TryLock after Close.
var errClosed = errors.New("the etcd store is closed")

// validLockName checks a lock name exactly as store.FS does: 1-128
// characters of [A-Za-z0-9._-], not starting with "." or "-".
func validLockName(name string) error {
	if len(name) == 0 || len(name) > 128 {
		return fmt.Errorf("invalid lock name %q: must be 1-128 characters", name)
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("invalid lock name %q: must not start with %q", name, name[0])
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("invalid lock name %q: use only letters, digits, '.', '-' and '_'", name)
		}
	}
	return nil
}

// Lock blocks until the lock for name is held or ctx is done, and returns
// the function that releases it. The lock is an etcd mutex under
// locks/<name>/ tied to this Store's session lease: if this process dies or
// loses etcd for longer than LockTTL, the lock ends and a waiting node gets
// it. Within one Store, goroutines are serialised before etcd is asked.
func (s *Store) Lock(ctx context.Context, name string) (unlock func() error, err error) {
	return s.lock(ctx, name, true)
}

// TryLock is Lock without waiting: it returns an error wrapping
// store.ErrLocked when another goroutine or node holds the lock for name.
func (s *Store) TryLock(ctx context.Context, name string) (unlock func() error, err error) {
	return s.lock(ctx, name, false)
}

// sem returns the in-Store semaphore of a lock name.
func (s *Store) sem(name string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.sems[name]
	if !ok {
		c = make(chan struct{}, 1)
		s.sems[name] = c
	}
	return c
}

// lock is Lock (wait) and TryLock.
func (s *Store) lock(ctx context.Context, name string, wait bool) (func() error, error) {
	if err := validLockName(name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// One holder or waiter per name in this Store: the Mutexes of one
	// session share a key, so two of them would both count as holders.
	sem := s.sem(name)
	if wait {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	} else {
		select {
		case sem <- struct{}{}:
		default:
			return nil, fmt.Errorf("locking %q: %w", name, store.ErrLocked)
		}
	}
	release := func() { <-sem }

	delay := retryMin
	for attempt := 0; ; attempt++ {
		sess, err := s.session(ctx)
		if err != nil {
			release()
			return nil, fmt.Errorf("locking %q: %w", name, err)
		}
		m := concurrency.NewMutex(sess, s.lockPrefix(name))
		if wait {
			err = m.Lock(ctx)
		} else {
			err = m.TryLock(ctx)
		}
		if err == nil && sessionDone(sess) {
			err = concurrency.ErrSessionExpired
		}
		switch {
		case err == nil:
			s.mu.Lock()
			s.held[name]++
			s.mu.Unlock()
			s.log.Debug("lock acquired", "lock", name, "key", m.Key())
			var once sync.Once
			var uerr error
			return func() error {
				once.Do(func() { uerr = s.unlock(name, m, sess, release) })
				return uerr
			}, nil
		case errors.Is(err, concurrency.ErrLocked):
			release()
			return nil, fmt.Errorf("locking %q: %w", name, store.ErrLocked)
		case ctx.Err() != nil:
			release()
			return nil, ctx.Err()
		case (errors.Is(err, concurrency.ErrSessionExpired) || errors.Is(err, rpctypes.ErrLeaseNotFound)) && attempt < 3:
			// The lease ended under us: start a new session and try again.
			s.dropSession(sess)
			continue
		case transient(err):
			s.log.Debug("locking failed; retrying", "lock", name, "error", err)
			if sleep(ctx, delay) != nil {
				release()
				return nil, ctx.Err()
			}
			delay = min(delay*2, retryMax)
			continue
		default:
			release()
			return nil, s.fail(err, "locking %q", name)
		}
	}
}

// unlock releases a lock: its key is deleted at once, so a waiting node
// gets it without waiting for the lease. It runs under its own timeout, as
// the caller's context may be done. When etcd cannot be reached, the key is
// deleted later in the background (the name stays held in this Store until
// then, or until the session ends).
func (s *Store) unlock(name string, m *concurrency.Mutex, sess *concurrency.Session, release func()) error {
	s.mu.Lock()
	if s.held[name]--; s.held[name] <= 0 {
		delete(s.held, name)
	}
	s.mu.Unlock()
	if sessionDone(sess) {
		release()
		return fmt.Errorf("releasing lock %q: %w", name, ErrLockLost)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	err := s.do(ctx, m.Unlock)
	cancel()
	if err != nil {
		go s.unlockLater(name, m, sess, release)
		return s.fail(err, "releasing lock %q (retried in the background until etcd answers or the lock's lease expires)", name)
	}
	release()
	s.log.Debug("lock released", "lock", name)
	return nil
}

// unlockLater retries deleting a lock's key until it succeeds or the
// session ends (which deletes the key with the lease).
func (s *Store) unlockLater(name string, m *concurrency.Mutex, sess *concurrency.Session, release func()) {
	defer release()
	delay := retryMax
	for {
		t := time.NewTimer(delay)
		select {
		case <-sess.Done():
			t.Stop()
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		err := m.Unlock(ctx)
		cancel()
		if err == nil || errors.Is(err, concurrency.ErrLockReleased) {
			s.log.Info("released a lock after etcd came back", "lock", name)
			return
		}
		delay = min(delay*2, 10*time.Second)
	}
}

func sessionDone(sess *concurrency.Session) bool {
	select {
	case <-sess.Done():
		return true
	default:
		return false
	}
}

// session returns the session locks are tied to, starting one when there
// is none or the last one ended: its lease expired or was revoked, or its
// keep-alives found no etcd for longer than its TTL.
func (s *Store) session(ctx context.Context) (*concurrency.Session, error) {
	select {
	case s.sessMu <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.sessMu }()
	s.mu.Lock()
	cur, closed := s.sess, s.closed
	s.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	if cur != nil && !sessionDone(cur) {
		return cur, nil
	}
	var lease *clientv3.LeaseGrantResponse
	err := s.do(ctx, func(ctx context.Context) (err error) {
		lease, err = s.cli.Grant(ctx, int64(s.ttl))
		return err
	})
	if err != nil {
		return nil, s.fail(err, "starting a lock session")
	}
	// The keep-alives run under the Store's context, not the caller's.
	sess, err := concurrency.NewSession(s.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(s.ttl),
		concurrency.WithContext(s.bg))
	if err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		_, _ = s.cli.Revoke(rctx, lease.ID)
		cancel()
		return nil, s.fail(err, "starting a lock session")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sess.Orphan()
		return nil, errClosed
	}
	s.sess = sess
	s.mu.Unlock()
	s.noteSession(ctx, lease.ID)
	s.log.Debug("lock session started", "lease", fmt.Sprintf("%x", lease.ID), "ttl_seconds", s.ttl)
	go s.watchSession(sess)
	return sess, nil
}

// watchSession logs when a session ends while the Store is open: every
// lock it held is gone.
func (s *Store) watchSession(sess *concurrency.Session) {
	<-sess.Done()
	s.mu.Lock()
	closed := s.closed
	var held []string
	for name := range s.held {
		held = append(held, name)
	}
	s.mu.Unlock()
	if closed {
		return
	}
	s.log.Warn("the etcd lock session ended (its lease expired, or etcd was unreachable for longer than the lock TTL); the next lock starts a new one",
		"lease", fmt.Sprintf("%x", sess.Lease()), "locks_lost", held)
}

// dropSession forgets sess if it is still the current one.
func (s *Store) dropSession(sess *concurrency.Session) {
	s.mu.Lock()
	if s.sess == sess {
		s.sess = nil
	}
	s.mu.Unlock()
	sess.Orphan()
}
