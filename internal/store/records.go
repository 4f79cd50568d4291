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
		return Record{}, fmt.Errorf("reading record %s: %w; fix or remove the file", file, err)
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

// ListRecords returns every record in renewal/, sorted by name. Files not
// ending in ".json" are ignored; a record file that cannot be read or
// parsed is an error naming the file, never silently skipped.
func (f *FS) ListRecords(ctx context.Context) ([]Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir := filepath.Join(f.dir, "renewal")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing records: %w", err)
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, tmpPrefix) || !strings.HasSuffix(n, ".json") {
			continue
		}
		name := strings.TrimSuffix(n, ".json")
		if err := ValidName(name); err != nil {
			return nil, fmt.Errorf("listing records: %s: %w", filepath.Join(dir, n), err)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	out := make([]Record, 0, len(names))
	for _, name := range names {
		raw, err := f.Load(ctx, recordKey(name))
		if err != nil {
			return nil, fmt.Errorf("listing records: %w", err)
		}
		r, err := f.decodeRecord(name, raw)
		if err != nil {
			return nil, fmt.Errorf("listing records: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}
