package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSweepTemps(t *testing.T) {
	dir := t.TempDir()
	f, err := NewFS(dir, FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := f.Store(ctx, "pending/www.renewing", []byte("x")); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	write := func(rel string, age time.Time) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, age, age); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		rel  string
		age  time.Time
		gone bool
	}{
		{"pending/.tmp-www.renewing-123", old, true},
		{"renewal/.tmp-www.json-456", old, true},
		{"pending/.tmp-www.cleanup.json-789", time.Now(), false}, // may be a write in progress
		{"live/.tmp-www-abc", old, false},                        // Recover's, under the lock
		{"pending/www.note", old, false},                         // not a temporary file
	}
	for _, tc := range tests {
		write(tc.rel, tc.age)
	}
	n, err := f.SweepTemps(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("removed %d files, want 2", n)
	}
	for _, tc := range tests {
		_, err := os.Stat(filepath.Join(dir, tc.rel))
		if gone := os.IsNotExist(err); gone != tc.gone {
			t.Errorf("%s: removed = %v, want %v", tc.rel, gone, tc.gone)
		}
	}
	if _, err := f.Load(ctx, "pending/www.renewing"); err != nil {
		t.Errorf("a key was swept: %v", err)
	}
}
