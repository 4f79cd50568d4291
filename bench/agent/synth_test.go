package main

import (
	"context"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
)

// The synthetic layout is what store.FS reads: records parse, live
// certificates load with a matching key, and nothing is due.
func TestSynthesize(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	names, err := synthesize(dir, 5, now)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.NewFS(dir, store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := st.ListRecords(context.Background())
	if err != nil || len(recs) != len(names) {
		t.Fatalf("ListRecords = %d records, %v", len(recs), err)
	}
	for _, r := range recs {
		if d := renew.Due(r, now, 0.99); d.Due {
			t.Errorf("%s is due: %+v", r.Name, d)
		}
		b, v, err := st.LoadCertificate(context.Background(), r.Name)
		if err != nil || v != 1 {
			t.Fatalf("LoadCertificate(%s) = version %d, %v", r.Name, v, err)
		}
		if err := b.Verify(); err != nil {
			t.Errorf("%s: %v", r.Name, err)
		}
	}
}
