package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/detour-acme/detour/internal/store"
)

func runCerts(t *testing.T, h Harness) {
	t.Run("Versions", func(t *testing.T) { testCertVersions(t, h) })
	t.Run("Concurrent", func(t *testing.T) { testCertConcurrent(t, h) })
	t.Run("RefusesBadBundle", func(t *testing.T) { testCertRefusesBadBundle(t, h) })
	t.Run("NeverStored", func(t *testing.T) { testCertNeverStored(t, h) })
	t.Run("BadNames", func(t *testing.T) { testCertBadNames(t, h) })
}

// SameBundle fails the test unless got equals want.
func SameBundle(t testing.TB, got, want store.Bundle) {
	t.Helper()
	if !bytes.Equal(got.CertPEM, want.CertPEM) || !bytes.Equal(got.ChainPEM, want.ChainPEM) || !bytes.Equal(got.KeyPEM, want.KeyPEM) {
		t.Error("the loaded bundle differs from the stored one")
	}
}

// testCertVersions: each PutCertificate makes the next version live, old
// versions are kept, and they are listed in numeric order (10 after 9);
// Recover changes nothing; a peer sees the same live version.
func testCertVersions(t *testing.T, h Harness) {
	ctx := context.Background()
	b := h.New(t)
	const name = "example.com"
	var bundles []store.Bundle
	for i := range 11 {
		bd := NewBundle(t, name)
		bundles = append(bundles, bd)
		v, err := b.PutCertificate(ctx, name, bd)
		if err != nil {
			t.Fatalf("PutCertificate %d: %v", i+1, err)
		}
		if v != i+1 {
			t.Fatalf("version = %d, want %d", v, i+1)
		}
		got, lv, err := b.LoadCertificate(ctx, name)
		if err != nil || lv != v {
			t.Fatalf("LoadCertificate = version %d, %v; want %d", lv, err, v)
		}
		SameBundle(t, got, bd)
	}
	vs, err := b.ArchiveVersions(ctx, name)
	if want := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}; err != nil || !slices.Equal(vs, want) {
		t.Errorf("ArchiveVersions = %v, %v; want %v", vs, err, want)
	}
	if err := b.Recover(ctx, name); err != nil {
		t.Errorf("Recover: %v", err)
	}
	got, v, err := h.Peer(t, b).LoadCertificate(ctx, name)
	if err != nil || v != 11 {
		t.Fatalf("peer LoadCertificate = version %d, %v; want 11", v, err)
	}
	SameBundle(t, got, bundles[10])
	// Another name is independent.
	if _, err := b.PutCertificate(ctx, "example.com.au", NewBundle(t, "example.com.au")); err != nil {
		t.Fatal(err)
	}
	if vs, err := b.ArchiveVersions(ctx, "example.com.au"); err != nil || !slices.Equal(vs, []int{1}) {
		t.Errorf("ArchiveVersions of a second name = %v, %v; want [1]", vs, err)
	}
	if _, v, _ := b.LoadCertificate(ctx, name); v != 11 {
		t.Errorf("a second name changed the first's live version to %d", v)
	}
}

// testCertConcurrent: PutCertificate from two handles at once, while the
// caller holds Lock(name) for the whole renewal, gives each a distinct
// version; the last one is live and holds its bundle.
func testCertConcurrent(t *testing.T, h Harness) {
	ctx := context.Background()
	b := h.New(t)
	p := h.Peer(t, b)
	const name = "example.com"
	unlock, err := b.Lock(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unlock() }()
	bundles := make([]store.Bundle, 6)
	for i := range bundles {
		bundles[i] = NewBundle(t, name)
	}
	versions := make([]int, len(bundles))
	var wg sync.WaitGroup
	for i, bd := range bundles {
		wg.Go(func() {
			v, err := []Backend{b, p}[i%2].PutCertificate(ctx, name, bd)
			if err != nil {
				t.Error(err)
			}
			versions[i] = v
		})
	}
	wg.Wait()
	sorted := slices.Sorted(slices.Values(versions))
	if !slices.Equal(sorted, []int{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("versions = %v, want 1-6 once each", versions)
	}
	got, v, err := b.LoadCertificate(ctx, name)
	if err != nil || v != 6 {
		t.Fatalf("live version = %d, %v; want 6 (the last store wins)", v, err)
	}
	SameBundle(t, got, bundles[slices.Index(versions, 6)])
	if vs, err := b.ArchiveVersions(ctx, name); err != nil || !slices.Equal(vs, sorted) {
		t.Errorf("ArchiveVersions = %v, %v; want %v", vs, err, sorted)
	}
}

// testCertRefusesBadBundle: a bundle that does not verify is refused with
// the reason, and nothing changes: the live version and the versions kept.
func testCertRefusesBadBundle(t *testing.T, h Harness) {
	ctx := context.Background()
	good := NewBundle(t, "example.com")
	other := NewBundle(t, "example.com")
	tests := []struct {
		name    string
		b       store.Bundle
		wantErr string
	}{
		{"mismatched key", store.Bundle{CertPEM: other.CertPEM, ChainPEM: other.ChainPEM, KeyPEM: good.KeyPEM}, "does not match"},
		{"no certificate", store.Bundle{KeyPEM: good.KeyPEM}, "no PEM data"},
		{"garbage key", store.Bundle{CertPEM: good.CertPEM, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")})}, "parsing private key"},
		{"chain holds a key", store.Bundle{CertPEM: good.CertPEM, ChainPEM: good.KeyPEM, KeyPEM: good.KeyPEM}, "parsing chain"},
	}
	b := h.New(t)
	if _, err := b.PutCertificate(ctx, "example.com", good); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.PutCertificate(ctx, "example.com", tt.b)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("PutCertificate: err = %v, want one containing %q", err, tt.wantErr)
			}
			got, v, err := b.LoadCertificate(ctx, "example.com")
			if err != nil || v != 1 {
				t.Fatalf("LoadCertificate = version %d, %v; want 1", v, err)
			}
			SameBundle(t, got, good)
			if vs, err := b.ArchiveVersions(ctx, "example.com"); err != nil || !slices.Equal(vs, []int{1}) {
				t.Errorf("ArchiveVersions = %v, %v; want [1]", vs, err)
			}
		})
	}
}

// testCertNeverStored: a name never stored is "not exist" everywhere.
func testCertNeverStored(t *testing.T, h Harness) {
	ctx := context.Background()
	b := h.New(t)
	if _, _, err := b.LoadCertificate(ctx, "never.example"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadCertificate: err = %v, want fs.ErrNotExist", err)
	}
	if _, err := b.ArchiveVersions(ctx, "never.example"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ArchiveVersions: err = %v, want fs.ErrNotExist", err)
	}
	if err := b.Recover(ctx, "never.example"); err != nil {
		t.Errorf("Recover: %v", err)
	}
}

// testCertBadNames: invalid certificate names are refused by every method.
func testCertBadNames(t *testing.T, h Harness) {
	ctx := context.Background()
	b := h.New(t)
	bd := NewBundle(t, "example.com")
	for _, name := range []string{"", "../x", "a/b", "Upper.example", ".hidden", strings.Repeat("a", store.MaxNameLen+1)} {
		if _, err := b.PutCertificate(ctx, name, bd); err == nil {
			t.Errorf("PutCertificate accepted %q", name)
		}
		if _, _, err := b.LoadCertificate(ctx, name); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("LoadCertificate(%q): err = %v, want a name error", name, err)
		}
		if _, err := b.ArchiveVersions(ctx, name); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ArchiveVersions(%q): err = %v, want a name error", name, err)
		}
		if err := b.Recover(ctx, name); err == nil {
			t.Errorf("Recover accepted %q", name)
		}
		if _, err := b.LoadRecord(ctx, name); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("LoadRecord(%q): err = %v, want a name error", name, err)
		}
		r := SampleRecord("x.example")
		r.Name = name
		if err := b.SaveRecord(ctx, r); err == nil {
			t.Errorf("SaveRecord accepted %q", name)
		}
		if _, err := b.SetAsideRecord(ctx, name); err == nil {
			t.Errorf("SetAsideRecord accepted %q", name)
		}
	}
}

func runRecords(t *testing.T, h Harness) {
	t.Run("RoundTrip", func(t *testing.T) { testRecordRoundTrip(t, h) })
	t.Run("List", func(t *testing.T) { testListRecords(t, h) })
	t.Run("Corrupt", func(t *testing.T) { testRecordsCorrupt(t, h) })
	t.Run("SetAside", func(t *testing.T) { testSetAside(t, h) })
}

func sameRecord(t *testing.T, got, want store.Record) {
	t.Helper()
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if !bytes.Equal(gj, wj) {
		t.Errorf("record = %s, want %s", gj, wj)
	}
}

// testRecordRoundTrip: a record reads back equal, a second save replaces
// it, a peer reads it, a missing one is "not exist".
func testRecordRoundTrip(t *testing.T, h Harness) {
	ctx := context.Background()
	b := h.New(t)
	want := SampleRecord("example.com")
	if err := b.SaveRecord(ctx, want); err != nil {
		t.Fatal(err)
	}
	want.Version, want.Serial = 2, "abc"
	if err := b.SaveRecord(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := h.Peer(t, b).LoadRecord(ctx, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	sameRecord(t, got, want)
	if _, err := b.LoadRecord(ctx, "missing.example"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadRecord of a missing name: err = %v, want fs.ErrNotExist", err)
	}
}

func testListRecords(t *testing.T, h Harness) {
	ctx := context.Background()
	b := h.New(t)
	if rs, err := b.ListRecords(ctx); err != nil || len(rs) != 0 {
		t.Fatalf("ListRecords of an empty store = %v, %v", rs, err)
	}
	for _, n := range []string{"b.example", "a.example", "c.example"} {
		if err := b.SaveRecord(ctx, SampleRecord(n)); err != nil {
			t.Fatal(err)
		}
	}
	h.PutRawRecord(t, b, "old.conf", []byte("certbot")) // not a record
	rs, err := b.ListRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
	}
	if strings.Join(names, ",") != "a.example,b.example,c.example" {
		t.Errorf("ListRecords names = %v, want a, b, c sorted", names)
	}
}

// testRecordsCorrupt: one bad record affects only its own certificate: it
// is reported as broken, naming where it is, or ignored when it is not a
// record at all; every good record is still read.
func testRecordsCorrupt(t *testing.T, h Harness) {
	tests := []struct {
		name    string
		file    string
		content string
		broken  bool
		ignored bool
	}{
		{"truncated JSON", "bad.example.json", `{"name": "bad.ex`, true, false},
		{"empty", "bad.example.json", ``, true, false},
		{"a copy of another record", "good.example.old.json", `{"name": "good.example"}`, false, true},
		{"invalid name", "Bad Name.json", `{}`, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			b := h.New(t)
			for _, n := range []string{"a.example", "good.example", "z.example"} {
				if err := b.SaveRecord(ctx, SampleRecord(n)); err != nil {
					t.Fatal(err)
				}
			}
			where := h.PutRawRecord(t, b, tt.file, []byte(tt.content))
			scan, err := b.ScanRecords(ctx)
			if err != nil {
				t.Fatalf("ScanRecords: %v", err)
			}
			var names []string
			for _, r := range scan.Records {
				names = append(names, r.Name)
			}
			if strings.Join(names, ",") != "a.example,good.example,z.example" {
				t.Errorf("records = %v, want the three good ones", names)
			}
			switch {
			case tt.broken:
				if len(scan.Broken) != 1 || scan.Broken[0].File != where || scan.Broken[0].Name != "bad.example" ||
					scan.Broken[0].Err == nil || !strings.Contains(scan.Broken[0].Err.Error(), where) {
					t.Errorf("broken = %+v, want %s with its error", scan.Broken, where)
				}
				if _, err := b.LoadRecord(ctx, "bad.example"); err == nil || errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), where) {
					t.Errorf("LoadRecord of the broken record: err = %v, want one naming %s", err, where)
				}
			case tt.ignored:
				if len(scan.Ignored) != 1 || scan.Ignored[0] != where || len(scan.Broken) != 0 {
					t.Errorf("ignored = %v, broken = %v; want %s ignored", scan.Ignored, scan.Broken, where)
				}
			}
			if recs, err := b.ListRecords(ctx); err != nil || len(recs) != 3 {
				t.Errorf("ListRecords = %d records, %v; want the three good ones", len(recs), err)
			}
		})
	}
}

// testSetAside: a record set aside is no longer the record (a new one can
// be saved), is neither listed nor reported broken, and is kept where the
// returned name says; a missing record cannot be set aside.
func testSetAside(t *testing.T, h Harness) {
	ctx := context.Background()
	b := h.New(t)
	where := h.PutRawRecord(t, b, "bad.example.json", []byte("{not json"))
	if err := b.SaveRecord(ctx, SampleRecord("ok.example")); err != nil {
		t.Fatal(err)
	}
	kept, err := b.SetAsideRecord(ctx, "bad.example")
	if err != nil {
		t.Fatalf("SetAsideRecord: %v", err)
	}
	if !strings.HasPrefix(kept, where+".broken-") {
		t.Errorf("set aside as %q, want %s.broken-<time>", kept, where)
	}
	if _, err := b.LoadRecord(ctx, "bad.example"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadRecord after SetAsideRecord: err = %v, want fs.ErrNotExist", err)
	}
	scan, err := b.ScanRecords(ctx)
	if err != nil || len(scan.Records) != 1 || len(scan.Broken) != 0 || len(scan.Ignored) != 0 {
		t.Errorf("ScanRecords after SetAsideRecord = %+v, %v; want only ok.example", scan, err)
	}
	if err := b.SaveRecord(ctx, SampleRecord("bad.example")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.LoadRecord(ctx, "bad.example"); err != nil {
		t.Errorf("LoadRecord of the new record: %v", err)
	}
	if _, err := b.SetAsideRecord(ctx, "missing.example"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SetAsideRecord of a missing record: err = %v, want fs.ErrNotExist", err)
	}
}
