package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
)

// The synthetic state directory is what store.FS reads, with the same
// records the etcd store gets: they parse, the live pairs load, and
// nothing is due.
func TestSynthFS(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	b, err := selfSigned("bench.example", now)
	if err != nil {
		t.Fatal(err)
	}
	if err := synthFS(dir, 5, b, now); err != nil {
		t.Fatal(err)
	}
	st, err := store.NewFS(dir, store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := st.ListRecords(context.Background())
	if err != nil || len(recs) != 5 {
		t.Fatalf("ListRecords = %d records, %v", len(recs), err)
	}
	for _, r := range recs {
		if d := renew.Due(r, now, 0.99); d.Due {
			t.Errorf("%s is due: %+v", r.Name, d)
		}
		got, _, err := st.LoadCertificate(context.Background(), r.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got.LiveSum() != r.LiveSum {
			t.Errorf("%s: live files do not match the record", r.Name)
		}
	}
}

// Every fresh certificate is a new one.
func TestSelfSignedDistinct(t *testing.T) {
	a, err := selfSigned("a.example", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := selfSigned("a.example", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if a.LiveSum() == b.LiveSum() {
		t.Fatal("two calls gave the same certificate")
	}
	if err := a.Verify(); err != nil {
		t.Fatal(err)
	}
}

func TestStats(t *testing.T) {
	for _, c := range []struct {
		v          []float64
		med, p99   float64
		p50Nearest float64
	}{
		{nil, 0, 0, 0},
		{[]float64{3}, 3, 3, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 4, 2},
		{[]float64{5, 1, 3}, 3, 5, 3},
	} {
		if got := median(c.v); got != c.med {
			t.Errorf("median(%v) = %v, want %v", c.v, got, c.med)
		}
		if got := percentile(c.v, 99); got != c.p99 {
			t.Errorf("percentile(%v, 99) = %v, want %v", c.v, got, c.p99)
		}
		if got := percentile(c.v, 50); got != c.p50Nearest {
			t.Errorf("percentile(%v, 50) = %v, want %v", c.v, got, c.p50Nearest)
		}
	}
	v := make([]float64, 200)
	for i := range v {
		v[i] = float64(i + 1)
	}
	if got := percentile(v, 99); got != 198 {
		t.Errorf("p99 of 1..200 = %v, want 198", got)
	}
}

func TestTrafficSub(t *testing.T) {
	a := traffic{Requests: 10, BytesOut: 100, ByMethod: map[string]float64{"Range": 6, "Put": 4}}
	b := traffic{Requests: 4, BytesOut: 40, ByMethod: map[string]float64{"Range": 2, "Put": 4}}
	d := a.sub(b).scale(0.5)
	if d.Requests != 3 || d.BytesOut != 30 || d.ByMethod["Range"] != 2 || len(d.ByMethod) != 1 {
		t.Fatalf("(a-b)/2 = %+v", d)
	}
}

// The challenge server answers from the first root holding the token, or
// from one root alone once told to.
func TestChallengeServer(t *testing.T) {
	r1, r2 := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(r1, ".well-known", "acme-challenge"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r1, ".well-known", "acme-challenge", "tok"), []byte("answer"), 0o644); err != nil {
		t.Fatal(err)
	}
	cs := &challengeServer{}
	get := func(p string) int {
		w := httptest.NewRecorder()
		cs.ServeHTTP(w, httptest.NewRequest(http.MethodGet, p, nil))
		return w.Code
	}
	cs.set([]string{r2, r1}, "")
	if c := get("/.well-known/acme-challenge/tok"); c != http.StatusOK {
		t.Errorf("union: %d", c)
	}
	if c := get("/other"); c != http.StatusNotFound {
		t.Errorf("other path: %d", c)
	}
	cs.set([]string{r2, r1}, r2)
	if c := get("/.well-known/acme-challenge/tok"); c != http.StatusNotFound {
		t.Errorf("only r2: %d", c)
	}
}
