package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/store"
)

// LoadRecord returns the record of name, from records/<name>.json. A
// missing record gives an error wrapping fs.ErrNotExist; a value that is
// not a valid record gives an error naming its etcd key.
func (s *Store) LoadRecord(ctx context.Context, name string) (store.Record, error) {
	if err := store.ValidName(name); err != nil {
		return store.Record{}, err
	}
	if err := ctx.Err(); err != nil {
		return store.Record{}, err
	}
	key := s.recordKey(name)
	kv, err := s.get(ctx, key)
	if err != nil {
		return store.Record{}, s.fail(err, "loading record of %q", name)
	}
	if kv == nil {
		return store.Record{}, fmt.Errorf("loading record of %q: %w", name, fs.ErrNotExist)
	}
	var r store.Record
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		return store.Record{}, fmt.Errorf("reading record %s: %w; restore it from a backup, or set it aside: a certificate of the configuration then gets a new record from its live version, one issued with flags must be issued again", key, err)
	}
	if r.Name != name {
		return store.Record{}, fmt.Errorf("reading record %s: it is for %q, not %q; move it to the right key or fix its \"name\"", key, r.Name, name)
	}
	return r, nil
}

// SaveRecord stores r as records/<r.Name>.json (indented JSON, as
// renewal/<name>.json on disk) in one put.
func (s *Store) SaveRecord(ctx context.Context, r store.Record) error {
	if err := store.ValidName(r.Name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding record of %q: %w", r.Name, err)
	}
	raw = append(raw, '\n')
	key := s.recordKey(r.Name)
	err = s.do(ctx, func(ctx context.Context) error {
		_, err := s.cli.Put(ctx, key, string(raw))
		return err
	})
	if err != nil {
		return s.fail(err, "saving record of %q", r.Name)
	}
	return nil
}

// ScanRecords reads every record under records/ in one snapshot, as
// store.FS.ScanRecords reads renewal/: a value that does not decode is
// returned in Broken with its etcd key and the error; a key that is not a
// record (a name no certificate can have, a copy holding another
// certificate's record) in Ignored; every other record is still read.
// Records set aside (".json.broken-<time>") are skipped. The error is for
// etcd itself or ctx.
func (s *Store) ScanRecords(ctx context.Context) (store.RecordScan, error) {
	var scan store.RecordScan
	if err := ctx.Err(); err != nil {
		return scan, err
	}
	root := s.recordsRoot()
	kvs, err := s.rangePrefix(ctx, root, false)
	if err != nil {
		return scan, s.fail(err, "listing records")
	}
	for _, kv := range kvs {
		key := string(kv.Key)
		rel := strings.TrimPrefix(key, root)
		if !strings.HasSuffix(rel, ".json") {
			continue
		}
		name := strings.TrimSuffix(rel, ".json")
		if err := store.ValidName(name); err != nil {
			scan.Ignored = append(scan.Ignored, key)
			continue
		}
		var r store.Record
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			scan.Broken = append(scan.Broken, store.BrokenRecord{Name: name, File: key,
				Err: fmt.Errorf("reading record %s: %w", key, err)})
			continue
		}
		if r.Name != name {
			scan.Ignored = append(scan.Ignored, key)
			continue
		}
		scan.Records = append(scan.Records, r)
	}
	sort.Slice(scan.Records, func(i, j int) bool { return scan.Records[i].Name < scan.Records[j].Name })
	sort.Slice(scan.Broken, func(i, j int) bool { return scan.Broken[i].Name < scan.Broken[j].Name })
	return scan, nil
}

// ListRecords returns every record that reads, sorted by name. Those that
// do not (see ScanRecords) are logged, each once per call, and left out:
// one bad record never hides the others.
func (s *Store) ListRecords(ctx context.Context) ([]store.Record, error) {
	scan, err := s.ScanRecords(ctx)
	if err != nil {
		return nil, err
	}
	for _, b := range scan.Broken {
		s.log.WarnContext(ctx, "a certificate record cannot be read; that certificate is left out", "certificate", b.Name, "key", b.File, "error", b.Err)
	}
	for _, key := range scan.Ignored {
		s.log.WarnContext(ctx, "ignoring a key under records/ that is not a certificate record", "key", key)
	}
	return scan.Records, nil
}

// SetAsideRecord moves records/<name>.json to
// records/<name>.json.broken-<UTC time> in one transaction (the record is
// moved only if it did not change meanwhile; an earlier record set aside in
// the same second is kept, the new one gets a ".N" suffix). ScanRecords
// skips it; it stays for a human to look at. It returns the new etcd key. A
// missing record gives an error wrapping fs.ErrNotExist.
func (s *Store) SetAsideRecord(ctx context.Context, name string) (string, error) {
	if err := store.ValidName(name); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	from := s.recordKey(name)
	for attempt := 0; ; attempt++ {
		kv, err := s.get(ctx, from)
		if err != nil {
			return "", s.fail(err, "setting the record of %q aside", name)
		}
		if kv == nil {
			return "", fmt.Errorf("setting the record of %q aside: %s: %w", name, from, fs.ErrNotExist)
		}
		to := from + ".broken-" + time.Now().UTC().Format("20060102T150405Z")
		if attempt > 0 {
			to += "." + strconv.Itoa(attempt)
		}
		var resp *clientv3.TxnResponse
		err = s.do(ctx, func(ctx context.Context) (err error) {
			resp, err = s.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision(from), "=", kv.ModRevision),
					clientv3.Compare(clientv3.CreateRevision(to), "=", 0)).
				Then(clientv3.OpPut(to, string(kv.Value)), clientv3.OpDelete(from)).
				Commit()
			return err
		})
		if err != nil {
			return "", s.fail(err, "setting the record of %q aside", name)
		}
		if resp.Succeeded {
			s.log.Info("set a record aside", "certificate", name, "key", to)
			return to, nil
		}
		if attempt >= maxConflicts {
			return "", fmt.Errorf("setting the record of %q aside: it kept changing (%d tries); try again", name, attempt+1)
		}
	}
}
