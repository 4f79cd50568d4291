package etcdstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/store"
)

// versionDoc is one certificate version as stored under
// certs/<name>/versions/<N>.
type versionDoc struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	Cert    string `json:"cert"`  // PEM, the leaf
	Chain   string `json:"chain"` // PEM, the intermediates
	// Key is the private key's PEM sealed for this document's etcd key
	// (base64 in the JSON).
	Key    []byte    `json:"key"`
	Stored time.Time `json:"stored"`
	// Op identifies the PutCertificate call that wrote it, so that a call
	// whose commit's answer was lost (a leader change) recognises its own
	// version instead of storing a second one.
	Op string `json:"op"`
}

// versionKey returns the etcd key of version n of name.
func (s *Store) versionKey(name string, n int) string {
	return s.versionsRoot(name) + strconv.Itoa(n)
}

// certState is what PutCertificate reads before it writes.
type certState struct {
	live    int   // live version, 0 when none
	liveRev int64 // ModRevision of the live key, 0 when none
	high    int   // highest version stored
}

// readState reads name's live pointer and the numbers of its versions in
// one snapshot (a transaction of two reads; the versions keys only).
func (s *Store) readState(ctx context.Context, name string) (certState, error) {
	var st certState
	var resp *clientv3.TxnResponse
	err := s.do(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).Then(
			clientv3.OpGet(s.liveKey(name)),
			clientv3.OpGet(s.versionsRoot(name), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		).Commit()
		return err
	})
	if err != nil {
		return st, err
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		n, err := parseLive(kvs[0].Value)
		if err != nil {
			return st, fmt.Errorf("%s: %w", kvs[0].Key, err)
		}
		st.live, st.liveRev, st.high = n, kvs[0].ModRevision, n
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if n, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), s.versionsRoot(name))); err == nil {
			st.high = max(st.high, n)
		}
	}
	return st, nil
}

// parseLive parses the value of a live key.
func parseLive(v []byte) (int, error) {
	n, err := strconv.Atoi(string(v))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("live pointer holds %q, not a version number; put the number of a stored version there (etcdctl put)", v)
	}
	return n, nil
}

// PutCertificate stores b as the next version of name and makes it live, in
// one transaction that writes the version and switches live only if live
// has not changed since it was read (and the version is new). A writer that
// loses the race reads again and takes the next number, so concurrent
// writers get distinct versions and the last to commit is live. The bundle
// is verified first; a live version encrypted with a key this node lacks is
// not replaced (*KeyMismatchError). Transient failures (a leader change)
// are retried; a commit whose answer was lost is recognised, not repeated.
func (s *Store) PutCertificate(ctx context.Context, name string, b store.Bundle) (version int, err error) {
	if err := store.ValidName(name); err != nil {
		return 0, err
	}
	if err := b.Verify(); err != nil {
		return 0, fmt.Errorf("storing certificate %q: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var opb [8]byte
	if _, err := rand.Read(opb[:]); err != nil {
		return 0, fmt.Errorf("storing certificate %q: %w", name, err)
	}
	op := hex.EncodeToString(opb[:])
	liveKey := s.liveKey(name)
	checked := false
	// unsure is set after a commit whose outcome is unknown; unsureFrom
	// is the highest version stored before it.
	unsure, unsureFrom := false, 0
	delay := retryMin
	for attempt := 0; ; attempt++ {
		st, err := s.readState(ctx, name)
		if err != nil {
			return 0, s.fail(err, "storing certificate %q", name)
		}
		if unsure {
			// An earlier commit may have gone through: look for it among
			// the versions stored since.
			for n := unsureFrom + 1; n <= st.high; n++ {
				doc, _, err := s.loadVersion(ctx, name, n)
				if err == nil && doc.Op == op {
					s.log.Debug("certificate stored (an earlier try went through)", "certificate", name, "version", n)
					return n, nil
				}
			}
			unsure = false
		}
		if !checked && st.live > 0 {
			if err := s.checkReadable(ctx, name, st.live); err != nil {
				return 0, fmt.Errorf("storing certificate %q: %w", name, err)
			}
			checked = true
		}
		n := st.high + 1
		vkey := s.versionKey(name, n)
		sealed, err := s.keys.seal(vkey, b.KeyPEM)
		if err != nil {
			return 0, fmt.Errorf("storing certificate %q: %w", name, err)
		}
		doc, err := json.Marshal(versionDoc{Name: name, Version: n, Cert: string(b.CertPEM), Chain: string(b.ChainPEM),
			Key: sealed, Stored: time.Now().UTC(), Op: op})
		if err != nil {
			return 0, fmt.Errorf("storing certificate %q: encoding: %w", name, err)
		}
		liveCmp := clientv3.Compare(clientv3.ModRevision(liveKey), "=", st.liveRev)
		resp, err := s.cli.Txn(ctx).
			If(liveCmp, clientv3.Compare(clientv3.CreateRevision(vkey), "=", 0)).
			Then(clientv3.OpPut(vkey, string(doc)), clientv3.OpPut(liveKey, strconv.Itoa(n))).
			Commit()
		if s.afterCommit != nil {
			err = s.afterCommit(err)
		}
		switch {
		case err == nil && resp.Succeeded:
			s.log.Debug("certificate stored", "certificate", name, "version", n, "key", vkey)
			return n, nil
		case err == nil:
			s.log.Debug("another node stored a version first; reading again", "certificate", name, "version", n)
		case transient(err) && ctx.Err() == nil:
			s.log.Debug("storing a certificate version failed; retrying", "certificate", name, "version", n, "error", err)
			unsure, unsureFrom = true, st.high
		default:
			return 0, s.fail(err, "storing certificate %q version %d", name, n)
		}
		if attempt >= maxConflicts {
			return 0, fmt.Errorf("storing certificate %q: other writers kept getting there first (%d tries); try again", name, attempt+1)
		}
		if err := sleep(ctx, delay); err != nil {
			return 0, fmt.Errorf("storing certificate %q: %w", name, err)
		}
		delay = min(delay*2, retryMax)
	}
}

// checkReadable fails with a *KeyMismatchError when version n of name is
// encrypted with a key this node lacks.
func (s *Store) checkReadable(ctx context.Context, name string, n int) error {
	kv, err := s.get(ctx, s.versionKey(name, n))
	if err != nil {
		return s.fail(err, "reading live version %d", n)
	}
	if kv == nil {
		return nil // nothing there to lose
	}
	var doc versionDoc
	if err := json.Unmarshal(kv.Value, &doc); err != nil {
		return nil // unreadable anyway: replacing it loses nothing
	}
	return s.keys.readable(string(kv.Key), doc.Key)
}

// loadVersion reads and decodes version n of name, its key still sealed.
func (s *Store) loadVersion(ctx context.Context, name string, n int) (versionDoc, string, error) {
	key := s.versionKey(name, n)
	kv, err := s.get(ctx, key)
	if err != nil {
		return versionDoc{}, key, s.fail(err, "reading %s", key)
	}
	if kv == nil {
		return versionDoc{}, key, fmt.Errorf("reading %s: %w", key, fs.ErrNotExist)
	}
	var doc versionDoc
	if err := json.Unmarshal(kv.Value, &doc); err != nil {
		return versionDoc{}, key, fmt.Errorf("reading %s: %w; store the certificate again", key, err)
	}
	if doc.Name != name || doc.Version != n {
		return versionDoc{}, key, fmt.Errorf("reading %s: it holds version %d of %q; it was copied here, store the certificate again", key, doc.Version, doc.Name)
	}
	return doc, key, nil
}

// LoadCertificate returns the live version of name. A name never stored
// gives an error wrapping fs.ErrNotExist; a live version encrypted with a
// key this node lacks gives a *KeyMismatchError (which does not: the
// certificate exists, and must not be replaced).
func (s *Store) LoadCertificate(ctx context.Context, name string) (b store.Bundle, version int, err error) {
	if err := store.ValidName(name); err != nil {
		return store.Bundle{}, 0, err
	}
	if err := ctx.Err(); err != nil {
		return store.Bundle{}, 0, err
	}
	kv, err := s.get(ctx, s.liveKey(name))
	if err != nil {
		return store.Bundle{}, 0, s.fail(err, "loading certificate %q", name)
	}
	if kv == nil {
		return store.Bundle{}, 0, fmt.Errorf("loading certificate %q: %w", name, fs.ErrNotExist)
	}
	n, err := parseLive(kv.Value)
	if err != nil {
		return store.Bundle{}, 0, fmt.Errorf("loading certificate %q: %s: %w", name, kv.Key, err)
	}
	// Versions are written once (Reencrypt rewrites the same content), so
	// reading it after live is consistent.
	doc, key, err := s.loadVersion(ctx, name, n)
	if err != nil {
		return store.Bundle{}, 0, fmt.Errorf("loading certificate %q: live version %d: %w", name, n, noNotExist(err))
	}
	keyPEM, err := s.keys.open(key, doc.Key)
	if err != nil {
		return store.Bundle{}, 0, fmt.Errorf("loading certificate %q version %d: %w", name, n, err)
	}
	return store.Bundle{CertPEM: []byte(doc.Cert), ChainPEM: []byte(doc.Chain), KeyPEM: keyPEM}, n, nil
}

// noNotExist turns an error wrapping fs.ErrNotExist into one that does
// not: a live pointer naming a missing version is damage to repair, not a
// certificate that was never issued.
func noNotExist(err error) error {
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return fmt.Errorf("%v (the live pointer names a missing version; point it at a stored one or store the certificate again)", err)
}

// ArchiveVersions returns, ascending numerically, the versions of name
// stored (every version is kept). A name with none gives an error wrapping
// fs.ErrNotExist.
func (s *Store) ArchiveVersions(ctx context.Context, name string) ([]int, error) {
	if err := store.ValidName(name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	root := s.versionsRoot(name)
	kvs, err := s.rangePrefix(ctx, root, true)
	if err != nil {
		return nil, s.fail(err, "listing the versions of %q", name)
	}
	var out []int
	for _, kv := range kvs {
		if n, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), root)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("listing the versions of %q: %w", name, fs.ErrNotExist)
	}
	sort.Ints(out)
	return out, nil
}

// Recover does nothing: PutCertificate is one transaction, which etcd
// applies wholly or not at all, so there is never a half-done store to
// finish or roll back. It exists for store.Certs.
func (s *Store) Recover(ctx context.Context, name string) error {
	if err := store.ValidName(name); err != nil {
		return err
	}
	return ctx.Err()
}
