package etcdstore

import (
	"context"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/store"
)

// Load returns the value stored under key, decrypted if key is a secret.
// A missing key gives an error wrapping fs.ErrNotExist; a secret encrypted
// with a key this node lacks gives a *KeyMismatchError.
func (s *Store) Load(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := store.ValidKey(key); err != nil {
		return nil, err
	}
	ek := s.kvKey(key)
	kv, err := s.get(ctx, ek)
	if err != nil {
		return nil, s.fail(err, "loading %q", key)
	}
	if kv == nil {
		return nil, fmt.Errorf("loading %q: %w", key, fs.ErrNotExist)
	}
	if !store.IsSecret(key) {
		return kv.Value, nil
	}
	plain, err := s.keys.open(ek, kv.Value)
	if err != nil {
		return nil, fmt.Errorf("loading %q: %w", key, err)
	}
	return plain, nil
}

// Store writes value under key in one put, which etcd makes atomic.
// Secrets are encrypted with the current key first. A secret encrypted with
// a key this node lacks is not overwritten: Store fails with a
// *KeyMismatchError (see the package documentation).
func (s *Store) Store(ctx context.Context, key string, value []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.ValidKey(key); err != nil {
		return err
	}
	ek := s.kvKey(key)
	if !store.IsSecret(key) {
		err := s.do(ctx, func(ctx context.Context) error {
			_, err := s.cli.Put(ctx, ek, string(value))
			return err
		})
		if err != nil {
			return s.fail(err, "storing %q", key)
		}
		return nil
	}
	sealed, err := s.keys.seal(ek, value)
	if err != nil {
		return fmt.Errorf("storing %q: %w", key, err)
	}
	for attempt := 0; ; attempt++ {
		// Read what is there, refuse to replace a value this node cannot
		// read, and write only if nothing changed in between.
		kv, err := s.get(ctx, ek)
		if err != nil {
			return s.fail(err, "storing %q", key)
		}
		var rev int64
		if kv != nil {
			if err := s.keys.readable(ek, kv.Value); err != nil {
				return fmt.Errorf("storing %q: %w", key, err)
			}
			rev = kv.ModRevision
		}
		var resp *clientv3.TxnResponse
		err = s.do(ctx, func(ctx context.Context) (err error) {
			resp, err = s.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision(ek), "=", rev)).
				Then(clientv3.OpPut(ek, string(sealed))).
				Commit()
			return err
		})
		if err != nil {
			return s.fail(err, "storing %q", key)
		}
		if resp.Succeeded {
			return nil
		}
		if attempt >= maxConflicts {
			return fmt.Errorf("storing %q: it kept changing under this write (%d tries); try again", key, attempt+1)
		}
	}
}

// maxConflicts bounds the retries of a transaction whose compare failed
// because another writer got there first.
const maxConflicts = 50

// Delete removes key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.ValidKey(key); err != nil {
		return err
	}
	err := s.do(ctx, func(ctx context.Context) error {
		_, err := s.cli.Delete(ctx, s.kvKey(key))
		return err
	})
	if err != nil {
		return s.fail(err, "deleting %q", key)
	}
	return nil
}

// List returns, sorted, the keys at or below prefix, which is a key or a
// "directory" of keys ("accounts", "accounts/" and "" for everything), as
// store.FS lists them: "a" lists "a" and "a/x" but not "a-b". The keys are
// read in one snapshot.
func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	prefix = strings.TrimSuffix(prefix, "/")
	root := s.kvRoot()
	var from, end string
	if prefix == "" {
		from, end = root, clientv3.GetPrefixRangeEnd(root)
	} else {
		if err := store.ValidKey(prefix); err != nil {
			return nil, err
		}
		// [p, p+"0") holds p, p+"/"... and keys such as p+"-b", which the
		// loop below leaves out ('0' follows '/').
		from, end = root+prefix, root+prefix+"0"
	}
	kvs, err := s.rangeAll(ctx, from, end, true)
	if err != nil {
		return nil, s.fail(err, "listing %q", prefix)
	}
	var keys []string
	for _, kv := range kvs {
		k := strings.TrimPrefix(string(kv.Key), root)
		if prefix == "" || k == prefix || strings.HasPrefix(k, prefix+"/") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys, nil
}
