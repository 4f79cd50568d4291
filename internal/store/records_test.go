package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testRecord(name string) Record {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return Record{
		Name:        name,
		Identifiers: []string{name, "www." + name},
		CA:          "https://acme.example/directory",
		Account:     "https://acme.example/acct/1",
		KeyType:     "ecdsa-p256",
		Paths:       []PathRef{{Name: "web", Kind: "webroot", Settings: map[string]string{"root": "/srv/www"}}},
		Version:     1,
		NotBefore:   at,
		NotAfter:    at.Add(90 * 24 * time.Hour),
		Issued:      at,
		ARI:         &ARIWindow{Start: at.Add(60 * 24 * time.Hour), End: at.Add(62 * 24 * time.Hour), Fetched: at},
		Last:        &Attempt{Time: at, OK: true, Path: "web"},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	ctx := context.Background()
	f := newFS(t)
	want := testRecord("example.com")
	if err := f.SaveRecord(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := f.LoadRecord(ctx, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		t.Errorf("LoadRecord = %s, want %s", gj, wj)
	}
	raw, err := os.ReadFile(filepath.Join(f.Dir(), "renewal", "example.com.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "\n  \"name\": \"example.com\"") {
		t.Errorf("record file is not indented JSON:\n%s", raw)
	}
	if _, err := f.LoadRecord(ctx, "missing.example"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadRecord of missing name: err = %v, want fs.ErrNotExist", err)
	}
	if err := f.SaveRecord(ctx, Record{Name: "Bad Name"}); err == nil {
		t.Error("SaveRecord accepted an invalid name")
	}
}

func TestListRecords(t *testing.T) {
	ctx := context.Background()
	f := newFS(t)
	if rs, err := f.ListRecords(ctx); err != nil || len(rs) != 0 {
		t.Fatalf("ListRecords on empty store = %v, %v", rs, err)
	}
	for _, n := range []string{"b.example", "a.example", "c.example"} {
		if err := f.SaveRecord(ctx, testRecord(n)); err != nil {
			t.Fatal(err)
		}
	}
	// Files that are not records are ignored.
	if err := os.WriteFile(filepath.Join(f.Dir(), "renewal", "old.conf"), []byte("certbot"), 0o644); err != nil {
		t.Fatal(err)
	}
	rs, err := f.ListRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
	}
	if strings.Join(names, ",") != "a.example,b.example,c.example" {
		t.Errorf("ListRecords names = %v, want sorted a, b, c", names)
	}
}

// TestListRecordsCorrupt: one bad file in renewal/ affects only its own
// certificate. A record that does not read is reported as broken, naming
// its file; a file that is not a record (a copy holding another
// certificate's record, a name no certificate can have) is ignored; every
// good record is still listed, and ListRecords says what it left out.
func TestListRecordsCorrupt(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		content string
		broken  string // the file reported as broken, or ""
		ignored string // the file ignored, or ""
	}{
		{"truncated JSON", "bad.example.json", `{"name": "bad.ex`, "bad.example.json", ""},
		{"empty", "bad.example.json", ``, "bad.example.json", ""},
		{"a copy of another record", "good.example.old.json", `{"name": "good.example"}`, "", "good.example.old.json"},
		{"invalid file name", "Bad Name.json", `{}`, "", "Bad Name.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			var logs bytes.Buffer
			f, err := NewFS(t.TempDir(), FSOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"a.example", "good.example"} {
				if err := f.SaveRecord(ctx, testRecord(n)); err != nil {
					t.Fatal(err)
				}
			}
			p := filepath.Join(f.Dir(), "renewal", tt.file)
			if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			scan, err := f.ScanRecords(ctx)
			if err != nil {
				t.Fatalf("ScanRecords: %v", err)
			}
			var names []string
			for _, r := range scan.Records {
				names = append(names, r.Name)
			}
			if strings.Join(names, ",") != "a.example,good.example" {
				t.Errorf("records = %v, want a.example and good.example", names)
			}
			switch {
			case tt.broken != "":
				if len(scan.Broken) != 1 || scan.Broken[0].File != p || !strings.Contains(scan.Broken[0].Err.Error(), tt.broken) {
					t.Errorf("broken = %+v, want %s", scan.Broken, p)
				}
			case tt.ignored != "":
				if len(scan.Ignored) != 1 || scan.Ignored[0] != p || len(scan.Broken) != 0 {
					t.Errorf("ignored = %v, broken = %v; want %s ignored", scan.Ignored, scan.Broken, p)
				}
			}
			recs, err := f.ListRecords(ctx)
			if err != nil || len(recs) != 2 {
				t.Fatalf("ListRecords = %d records, %v; want the two good ones", len(recs), err)
			}
			if !strings.Contains(logs.String(), tt.file) {
				t.Errorf("ListRecords left %s out silently; logs:\n%s", tt.file, logs.String())
			}
		})
	}
}
