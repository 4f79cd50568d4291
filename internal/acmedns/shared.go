package acmedns

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"time"
)

// Several Servers, one per host of a highly available `detour dns-server`,
// may keep their accounts in one Storage (etcd: etcdstore.Store). Each
// answers the API and DNS from memory, so each must hear of the others'
// writes: a Storage that implements KeyWatcher tells it, and the Server
// then re-reads every account another Server registers, updates or that
// is removed, and serves its TXT values. A client may reach one Server
// for /register and another for /update before the second has heard of
// the registration: a Server that does not know a user reads the account
// once before refusing it. And two updates of one account through two
// Servers at once must not undo each other: with a Storage that
// implements Modifier an update changes the stored account, not the
// Server's copy of it.

// KeyWatcher is a Storage that other writers share, and that reports
// their writes. A Server whose Storage implements it follows them.
type KeyWatcher interface {
	// WatchKeys reports on the channel each key at or below prefix (a
	// key or a "directory" of keys, as List takes it) that is stored or
	// deleted after WatchKeys returns, until ctx ends; then it closes the
	// channel. A report means "look again": keys that did not change may
	// be reported too. It MUST NOT miss a write made after it returns,
	// even across an outage of the storage; it SHOULD report within
	// seconds.
	WatchKeys(ctx context.Context, prefix string) (<-chan string, error)
}

// Modifier is a Storage that changes a value atomically with respect to
// other writers. An update uses it when the Storage has it.
type Modifier interface {
	// Modify replaces the value under key with fn's result; fn gets the
	// current value, nil when there is none. When another writer changes
	// key between the read and the write, Modify MUST read again and call
	// fn again. An error from fn MUST be returned as it is, with nothing
	// written.
	Modify(ctx context.Context, key string, fn func(old []byte) ([]byte, error)) error
}

// errAccountGone is an update of an account that was removed from the
// storage (or replaced) since it was authenticated.
var errAccountGone = errors.New("the account was removed from the storage")

// Bounds of the following of other Servers' writes.
const (
	// refreshTimeout bounds one read of an account.
	refreshTimeout = 10 * time.Second
	// Retries of reads that failed (the storage did not answer) wait
	// from refreshRetryMin, doubling, up to refreshRetryMax.
	refreshRetryMin = 100 * time.Millisecond
	refreshRetryMax = 5 * time.Second
)

// serveLocked makes txt the account's TXT values: the values it no
// longer holds leave the DNS server, the unexpired ones are served until
// they expire. The caller holds a.mu, or owns a not yet published
// account.
func (s *Server) serveLocked(a *account, txt []txtRecord) {
	name := s.fulldomain(a)
	for _, o := range a.TXT {
		if !slices.ContainsFunc(txt, func(t txtRecord) bool { return t.Value == o.Value }) {
			s.dns.RemoveTXT(name, o.Value)
		}
	}
	for _, t := range liveTXT(txt, s.now()) {
		s.dns.AddTXT(name, t.Value, t.Expires)
	}
	a.TXT = txt
}

// sameIdentity reports whether b is the stored form of the same
// registration as a (only the TXT values change after registration).
func sameIdentity(a, b *account) bool {
	return a.PasswordHash == b.PasswordHash && a.Subdomain == b.Subdomain && slices.Equal(a.AllowFrom, b.AllowFrom)
}

// refresh reads the account of user from the storage and makes the
// Server's copy and the DNS server's TXT values match it: it adds an
// account this Server did not know, removes one that is gone, and serves
// the TXT values of one that changed. It returns the account as the
// Server now holds it (nil when there is none). It reads the storage
// once.
func (s *Server) refresh(ctx context.Context, user string) (*account, error) {
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	key := accountKey(user)
	s.mu.RLock()
	a := s.accounts[user]
	s.mu.RUnlock()
	if a == nil {
		stored, err := s.loadAccount(ctx, key)
		if err != nil || stored == nil {
			return nil, err
		}
		return s.install(stored), nil
	}
	// Read under a.mu: an update through this Server cannot come between
	// the read and its use, so a read older than that update is never
	// applied over it.
	a.mu.Lock()
	defer a.mu.Unlock()
	stored, err := s.loadAccount(ctx, key)
	if err != nil {
		return a, err
	}
	if stored != nil && sameIdentity(a, stored) {
		s.serveLocked(a, stored.TXT)
		return a, nil
	}
	// Removed, or replaced by another registration under the same name.
	s.mu.Lock()
	if s.accounts[user] == a {
		delete(s.accounts, user)
	}
	s.mu.Unlock()
	s.serveLocked(a, nil)
	if stored == nil {
		s.log.Info("acme-dns account removed from the storage", "user", user, "name", s.fulldomain(a))
		return nil, nil
	}
	return s.install(stored), nil
}

// loadAccount reads the account stored under key; nil when there is none.
func (s *Server) loadAccount(ctx context.Context, key string) (*account, error) {
	raw, err := s.st.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeAccount(key, raw)
}

// install adds stored, just read, to the Server's accounts and serves its
// TXT values. When another goroutine installed the account meanwhile, that
// one stays and is returned (a newer write is reported to the follower,
// which reads it again).
func (s *Server) install(stored *account) *account {
	stored.mu.Lock()
	defer stored.mu.Unlock()
	s.mu.Lock()
	if cur := s.accounts[stored.Username]; cur != nil {
		s.mu.Unlock()
		return cur
	}
	s.accounts[stored.Username] = stored
	s.mu.Unlock()
	txt := stored.TXT
	stored.TXT = nil
	s.serveLocked(stored, txt)
	s.log.Info("acme-dns account read from the storage", "user", stored.Username, "name", s.fulldomain(stored))
	return stored
}

// follow reads again each account keys reports until ctx ends or keys is
// closed. A read that fails is tried again, with growing waits, until it
// succeeds or the account is reported anew.
func (s *Server) follow(ctx context.Context, keys <-chan string) {
	pending := map[string]bool{} // users whose read failed
	var retry <-chan time.Time
	wait := refreshRetryMin
	try := func(user string) {
		if _, err := s.refresh(ctx, user); err != nil {
			if ctx.Err() != nil {
				return
			}
			if !pending[user] {
				s.log.Warn("reading an acme-dns account changed in the storage; trying again", "user", user, "error", err)
			}
			pending[user] = true
			return
		}
		delete(pending, user)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case key, ok := <-keys:
			if !ok {
				return
			}
			if user, ok := userOfKey(key); ok {
				try(user)
			}
		case <-retry:
			retry = nil
			for user := range pending {
				try(user)
			}
			wait = min(2*wait, refreshRetryMax)
		}
		switch {
		case len(pending) == 0:
			retry, wait = nil, refreshRetryMin
		case retry == nil:
			retry = time.After(wait)
		}
	}
}
