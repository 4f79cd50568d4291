package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLocked is returned (wrapped) by TryLock when another holder, in this
// process or another, has the lock.
var ErrLocked = errors.New("lock is held by another Detour run; wait for it to finish or stop it")

// Polling bounds for Lock while another process holds the flock.
const (
	lockPollMin = 5 * time.Millisecond
	lockPollMax = 200 * time.Millisecond
)

// Lock blocks until the lock for name is held or ctx is done, and returns
// the function that releases it.
//
// The lock is flock(2) on locks/<name>.lock, so the kernel releases it when
// the holding process dies, however it dies. Within one process, goroutines
// are serialised before the flock is tried. Lock files are never removed:
// removing one while another process waits on it would let two holders in.
// Names are 1-128 characters of [A-Za-z0-9._-] not starting with "." or "-".
func (f *FS) Lock(ctx context.Context, name string) (unlock func() error, err error) {
	if err := validLockName(name); err != nil {
		return nil, err
	}
	unlock, err = f.acquire(ctx, lockKey(name), true)
	if err != nil {
		return nil, fmt.Errorf("locking %q: %w", name, err)
	}
	return unlock, nil
}

// TryLock is Lock without waiting: it returns an error wrapping ErrLocked
// when another goroutine or process holds the lock for name.
func (f *FS) TryLock(ctx context.Context, name string) (unlock func() error, err error) {
	if err := validLockName(name); err != nil {
		return nil, err
	}
	unlock, err = f.acquire(ctx, lockKey(name), false)
	if err != nil {
		return nil, fmt.Errorf("locking %q: %w", name, err)
	}
	return unlock, nil
}

// lockKey returns the key of the lock file for a lock name.
func lockKey(name string) string { return "locks/" + name + ".lock" }

// certLockKey returns the key of the lock FS takes around its own work on
// certificate name. It is distinct from Lock(name), which callers hold for a
// whole renewal; the leading "." keeps it apart from every valid lock name.
func certLockKey(name string) string { return "locks/.cert-" + name + ".lock" }

// validLockName checks a lock name.
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

// sem returns the in-process semaphore for a lock file.
func (f *FS) sem(key string) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sems[key]
	if !ok {
		s = make(chan struct{}, 1)
		f.sems[key] = s
	}
	return s
}

// acquire takes the in-process semaphore and then the flock for the lock
// file key, waiting (bounded by ctx) if wait is set and failing with
// ErrLocked otherwise.
func (f *FS) acquire(ctx context.Context, key string, wait bool) (func() error, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := f.sem(key)
	if wait {
		select {
		case s <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	} else {
		select {
		case s <- struct{}{}:
		default:
			return nil, ErrLocked
		}
	}
	release := func() { <-s }

	if err := f.mkdirs(parentKey(key)); err != nil {
		release()
		return nil, err
	}
	fh, err := os.OpenFile(f.path(key), os.O_RDWR|os.O_CREATE, modeSecret)
	if err != nil {
		release()
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	if err := flock(ctx, fh, wait); err != nil {
		_ = fh.Close()
		release()
		return nil, err
	}
	f.log.Debug("lock acquired", "path", filepath.Join(f.dir, key))

	var once sync.Once
	var unlockErr error
	return func() error {
		once.Do(func() {
			// Closing the file releases the flock; unlocking first makes the
			// order explicit.
			err := unix.Flock(int(fh.Fd()), unix.LOCK_UN)
			if cerr := fh.Close(); err == nil {
				err = cerr
			}
			release()
			if err != nil {
				unlockErr = fmt.Errorf("releasing lock %s: %w", key, err)
			}
			f.log.Debug("lock released", "path", filepath.Join(f.dir, key))
		})
		return unlockErr
	}, nil
}

// flock takes an exclusive flock on fh. Without wait it fails with
// ErrLocked when the lock is held; with wait it polls (non-blocking flock
// with growing intervals) until it succeeds or ctx is done, so that a
// cancelled caller never leaves a blocked flock behind.
func flock(ctx context.Context, fh *os.File, wait bool) error {
	fd := int(fh.Fd())
	delay := lockPollMin
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case !errors.Is(err, unix.EWOULDBLOCK):
			return fmt.Errorf("flock %s: %w", fh.Name(), err)
		case !wait:
			return ErrLocked
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		delay = min(delay*2, lockPollMax)
	}
}
