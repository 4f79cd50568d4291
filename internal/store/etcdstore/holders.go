package etcdstore

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// LockHolder is who holds a lock: the holder named in the Options of the
// Store whose session took it, with its process.
type LockHolder struct {
	Holder string    `json:"holder"`
	Host   string    `json:"host,omitempty"`
	PID    int       `json:"pid,omitempty"`
	Since  time.Time `json:"since"` // when the session started
	Lease  string    `json:"lease"` // the session's lease, hex
}

// sessionKey is where a lock session says whose it is, under its lease.
func (s *Store) sessionKey(lease clientv3.LeaseID) string {
	return s.prefix + "/store/sessions/" + strconv.FormatInt(int64(lease), 16)
}

// noteSession writes who holds the session with lease, under that lease
// (it goes when the session ends). It is best effort: a lock works
// without it, LockHolders then names the lease only.
func (s *Store) noteSession(ctx context.Context, lease clientv3.LeaseID) {
	host, _ := os.Hostname()
	raw, err := json.Marshal(LockHolder{Holder: s.holder, Host: host, PID: os.Getpid(), Since: time.Now().UTC().Truncate(time.Second),
		Lease: strconv.FormatInt(int64(lease), 16)})
	if err != nil {
		return
	}
	if _, err := s.cli.Put(ctx, s.sessionKey(lease), string(raw), clientv3.WithLease(lease)); err != nil {
		s.log.Debug("noting who holds the lock session", "error", err)
	}
}

// LockHolders returns, by lock name, who holds each lock now: the
// session of the oldest waiter's key (etcd's mutexes are queues).
func (s *Store) LockHolders(ctx context.Context) (map[string]LockHolder, error) {
	root := s.prefix + "/store/locks/"
	locks, err := s.cli.Get(ctx, root, clientv3.WithPrefix()) // keys only would drop the lease
	if err != nil {
		return nil, s.fail(err, "reading the locks")
	}
	owner := map[string]*struct {
		rev   int64
		lease clientv3.LeaseID
	}{}
	for _, kv := range locks.Kvs {
		name, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), root), "/")
		if o := owner[name]; o == nil || kv.CreateRevision < o.rev {
			owner[name] = &struct {
				rev   int64
				lease clientv3.LeaseID
			}{kv.CreateRevision, clientv3.LeaseID(kv.Lease)}
		}
	}
	out := make(map[string]LockHolder, len(owner))
	if len(owner) == 0 {
		return out, nil
	}
	sessions, err := s.cli.Get(ctx, s.prefix+"/store/sessions/", clientv3.WithPrefix())
	if err != nil {
		return nil, s.fail(err, "reading the lock sessions")
	}
	byLease := map[string]LockHolder{}
	for _, kv := range sessions.Kvs {
		var h LockHolder
		if json.Unmarshal(kv.Value, &h) == nil {
			byLease[h.Lease] = h
		}
	}
	for name, o := range owner {
		lease := strconv.FormatInt(int64(o.lease), 16)
		h, ok := byLease[lease]
		if !ok {
			h = LockHolder{Lease: lease}
		}
		h.Holder = cmp.Or(h.Holder, fmt.Sprintf("lease %s", lease))
		out[name] = h
	}
	return out, nil
}
