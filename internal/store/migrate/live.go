package migrate

// The store's API cannot store a certificate version under a number of
// the caller's choosing: PutCertificate takes one more than the highest
// of the live pointer and the stored versions. That keeps this host's
// numbers as long as they run 1, 2, 3...; a number this host never
// completed (a store interrupted half-way, a damaged old version) would
// shift every later one, and the records name the live version by number.
// So before storing version n over such a gap, reserve moves the live
// pointer to n-1, the one etcd value the store's documentation lets an
// operator set by hand (etcdctl put). This is the only use of the client,
// under the certificate's lock, on a certificate the fleet does not hold
// yet; if the store gains a way to import a version under its number,
// reserve goes.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdCert is what etcd holds of one certificate.
type etcdCert struct {
	versions []int // stored, ascending
	hasLive  bool
	live     int   // the live pointer's number; -1 when it holds no number
	liveRev  int64 // the live pointer's ModRevision; 0 when there is none
}

// liveText describes the live pointer for messages.
func (st etcdCert) liveText() string {
	switch {
	case !st.hasLive:
		return "none"
	case st.live < 0:
		return "unreadable"
	}
	return strconv.Itoa(st.live)
}

// high is the number PutCertificate stores the next version above.
func (st etcdCert) high() int {
	h := max(st.live, 0)
	if len(st.versions) > 0 {
		h = max(h, st.versions[len(st.versions)-1])
	}
	return h
}

// liveKey is the etcd key of name's live pointer (package etcdstore's
// layout).
func (m *migrator) liveKey(name string) string { return m.certEtcdKey(name) + "live" }

// etcdState reads name's versions and live pointer.
func (m *migrator) etcdState(ctx context.Context, name string) (etcdCert, error) {
	var st etcdCert
	vs, err := m.To.ArchiveVersions(ctx, name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return st, err
	}
	st.versions = slices.Clone(vs)
	resp, err := m.Client.Get(ctx, m.liveKey(name))
	if err != nil {
		return st, fmt.Errorf("reading %s: %w", m.liveKey(name), err)
	}
	if len(resp.Kvs) == 1 {
		st.hasLive, st.liveRev, st.live = true, resp.Kvs[0].ModRevision, -1
		if n, err := strconv.Atoi(string(resp.Kvs[0].Value)); err == nil && n > 0 {
			st.live = n
		}
	}
	return st, nil
}

// undoTimeout bounds putting a live pointer back after a failed store.
const undoTimeout = 10 * time.Second

// reserve makes the next PutCertificate of name store version n: when the
// highest number etcd knows of is below n-1, it moves the live pointer to
// n-1 (if nobody moved it meanwhile). The returned function puts the
// pointer back, for when the store then fails.
func (m *migrator) reserve(ctx context.Context, name string, n int) (undo func(), err error) {
	st, err := m.etcdState(ctx, name)
	if err != nil {
		return nil, err
	}
	switch h := st.high(); {
	case h == n-1:
		return func() {}, nil
	case h > n-1:
		return nil, fmt.Errorf("storing version %d: etcd holds number %d of %s already, so it cannot keep its number", n, h, name)
	}
	key := m.liveKey(name)
	resp, err := m.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", st.liveRev)).
		Then(clientv3.OpPut(key, strconv.Itoa(n-1))).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("storing version %d: moving %s over the gap below it: %w", n, key, err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("storing version %d: %s changed meanwhile", n, key)
	}
	m.log.DebugContext(ctx, "moved a live pointer over a version number this host never completed", "certificate", name, "etcd_key", key, "version", n-1)
	rev := resp.Header.Revision
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		back := clientv3.OpDelete(key)
		if st.hasLive {
			back = clientv3.OpPut(key, strconv.Itoa(st.live))
		}
		if _, err := m.Client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(back).Commit(); err != nil {
			m.log.WarnContext(ctx, "putting a live pointer back after a failed store; the next run carries on from it", "certificate", name, "etcd_key", key, "error", err)
		}
	}, nil
}
