package store

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
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

func TestListRecordsCorrupt(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		content string
		wantErr string
	}{
		{"truncated JSON", "bad.example.json", `{"name": "bad.ex`, "bad.example.json"},
		{"wrong name inside", "bad.example.json", `{"name": "other.example"}`, "not \"bad.example\""},
		{"invalid file name", "Bad Name.json", `{}`, "Bad Name.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFS(t)
			if err := f.SaveRecord(ctx, testRecord("good.example")); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(f.Dir(), "renewal", tt.file)
			if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := f.ListRecords(ctx)
			if err == nil {
				t.Fatal("ListRecords skipped the corrupt record silently")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
