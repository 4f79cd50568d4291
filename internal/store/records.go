package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// recordKey returns the key of the record of certificate name.
func recordKey(name string) string { return "renewal/" + name + ".json" }

// LoadRecord returns the record of name, from renewal/<name>.json. A
// missing record gives an error wrapping fs.ErrNotExist; a file that is not
// a valid record gives an error naming the file.
func (f *FS) LoadRecord(ctx context.Context, name string) (Record, error) {
	if err := ValidName(name); err != nil {
		return Record{}, err
	}
	raw, err := f.Load(ctx, recordKey(name))
	if err != nil {
		return Record{}, fmt.Errorf("loading record of %q: %w", name, err)
	}
	return f.decodeRecord(name, raw)
}

// decodeRecord parses a record file's content and checks it belongs to name.
func (f *FS) decodeRecord(name string, raw []byte) (Record, error) {
	file := f.path(recordKey(name))
	var r Record
	if err := json.Unmarshal(raw, &r); err != nil {
		return Record{}, fmt.Errorf("reading record %s: %w; restore it from a backup, or move it away: a certificate of the configuration then gets a new record from its live files, one issued with flags must be issued again", file, err)
	}
	if r.Name != name {
		return Record{}, fmt.Errorf("reading record %s: it is for %q, not %q; rename the file or fix its \"name\"", file, r.Name, name)
	}
	return r, nil
}

// SaveRecord stores r as renewal/<r.Name>.json, indented, atomically.
func (f *FS) SaveRecord(ctx context.Context, r Record) error {
	if err := ValidName(r.Name); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding record of %q: %w", r.Name, err)
	}
	raw = append(raw, '\n')
	if err := f.Store(ctx, recordKey(r.Name), raw); err != nil {
		return fmt.Errorf("saving record of %q: %w", r.Name, err)
	}
	return nil
}

// BrokenRecord is a record file that cannot be read: its certificate is
// affected, no other one.
type BrokenRecord struct {
	// Name is the certificate's name, File the record file.
	Name, File string
	// Err says what is wrong with it.
	Err error
}

// RecordScan is what renewal/ holds.
type RecordScan struct {
	// Records are the records that read, sorted by name.
	Records []Record
	// Broken are the record files that do not (truncated, empty, not
	// JSON), sorted by name.
	Broken []BrokenRecord
	// Ignored are files that are not records (a copy such as
	// www.old.json holding www's record, a name no certificate can have).
	Ignored []string
}

// ScanRecords reads every file of renewal/. One bad file affects only its
// certificate: it is returned in Broken or Ignored, and every other record
// is still read. The error is for renewal/ itself (unreadable) or ctx.
func (f *FS) ScanRecords(ctx context.Context) (RecordScan, error) {
	var scan RecordScan
	if err := ctx.Err(); err != nil {
		return scan, err
	}
	dir := filepath.Join(f.dir, "renewal")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return scan, nil
	}
	if err != nil {
		return scan, fmt.Errorf("listing records: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, tmpPrefix) || !strings.HasSuffix(n, ".json") {
			continue
		}
		file := filepath.Join(dir, n)
		name := strings.TrimSuffix(n, ".json")
		if err := ValidName(name); err != nil {
			scan.Ignored = append(scan.Ignored, file)
			continue
		}
		raw, err := f.Load(ctx, recordKey(name))
		if err != nil {
			if ctx.Err() != nil {
				return scan, ctx.Err()
			}
			scan.Broken = append(scan.Broken, BrokenRecord{Name: name, File: file, Err: err})
			continue
		}
		var r Record
		if err := json.Unmarshal(raw, &r); err != nil {
			scan.Broken = append(scan.Broken, BrokenRecord{Name: name, File: file,
				Err: fmt.Errorf("reading record %s: %w", file, err)})
			continue
		}
		if r.Name != name {
			// A copy of another certificate's record, e.g. www.old.json.
			scan.Ignored = append(scan.Ignored, file)
			continue
		}
		scan.Records = append(scan.Records, r)
	}
	sort.Slice(scan.Records, func(i, j int) bool { return scan.Records[i].Name < scan.Records[j].Name })
	return scan, nil
}

// ListRecords returns every record of renewal/ that reads, sorted by name.
// Files that do not (see ScanRecords) are logged, once each per call, and
// left out: one bad file never hides the others.
func (f *FS) ListRecords(ctx context.Context) ([]Record, error) {
	scan, err := f.ScanRecords(ctx)
	if err != nil {
		return nil, err
	}
	for _, b := range scan.Broken {
		f.log.WarnContext(ctx, "a certificate record cannot be read; that certificate is left out", "certificate", b.Name, "file", b.File, "error", b.Err)
	}
	for _, file := range scan.Ignored {
		f.log.WarnContext(ctx, "ignoring a file in renewal/ that is not a certificate record", "file", file)
	}
	return scan.Records, nil
}

// SetAsideRecord renames renewal/<name>.json to
// renewal/<name>.json.broken-<UTC time>, which ScanRecords ignores, so
// that a new record can be written while the old file is kept for a human
// to look at. It returns the new file name.
func (f *FS) SetAsideRecord(ctx context.Context, name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	from := f.path(recordKey(name))
	to := from + ".broken-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(from, to); err != nil {
		return "", fmt.Errorf("setting the record of %q aside: %w", name, err)
	}
	return to, nil
}
