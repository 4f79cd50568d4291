package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
)

// memStore is an in-memory Store for schedule tests that run in a synctest
// bubble.
type memStore struct {
	mu   sync.Mutex
	recs map[string]store.Record
	leaf []byte
}

var _ Store = (*memStore)(nil)

func newMemStore(t testing.TB) *memStore {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Date(9000, 1, 1, 0, 0, 0, 0, time.UTC)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return &memStore{recs: map[string]store.Record{}, leaf: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (m *memStore) ListRecords(context.Context) ([]store.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.Record
	for _, r := range m.recs {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b store.Record) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (m *memStore) LoadRecord(_ context.Context, name string) (store.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[name]
	if !ok {
		return r, fmt.Errorf("record %q: %w", name, fs.ErrNotExist)
	}
	return r, nil
}

func (m *memStore) SaveRecord(_ context.Context, r store.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs[r.Name] = r
	return nil
}

func (m *memStore) LoadCertificate(_ context.Context, name string) (store.Bundle, int, error) {
	return store.Bundle{CertPEM: m.leaf}, 1, nil
}

func (m *memStore) TryLock(context.Context, string) (func() error, error) {
	return func() error { return nil }, nil
}

// fakeCA issues records with a fixed lifetime, fails a share of attempts
// (some with a Retry-After), and checks every attempt against the rules:
// never after expiry, never before the renewal window.
type fakeCA struct {
	t     testing.TB
	st    *memStore
	life  map[string]time.Duration
	down  map[string]bool // CA names that always fail
	rnd   *mrand.Rand
	fail  float64 // share of attempts that fail
	delay time.Duration

	mu         sync.Mutex
	serial     int
	renewals   map[string]int
	attempts   map[string]int
	byCA       map[string]int
	running    int
	maxRunning int
	lastTry    map[string]time.Time
	problems   []string
}

func newFakeCA(t testing.TB, st *memStore) *fakeCA {
	return &fakeCA{t: t, st: st, life: map[string]time.Duration{}, down: map[string]bool{}, rnd: mrand.New(mrand.NewPCG(1, 2)),
		renewals: map[string]int{}, attempts: map[string]int{}, byCA: map[string]int{}, lastTry: map[string]time.Time{}}
}

var errFake = errors.New("the fake CA failed this attempt")

func (f *fakeCA) problem(format string, args ...any) {
	f.problems = append(f.problems, fmt.Sprintf(format, args...))
}

func (f *fakeCA) Obtain(ctx context.Context, req renew.Request) (renew.Result, error) {
	now := time.Now()
	f.mu.Lock()
	f.running++
	f.maxRunning = max(f.maxRunning, f.running)
	f.attempts[req.Name]++
	f.byCA[req.CA.Name]++
	prev, err := f.st.LoadRecord(ctx, req.Name)
	hasPrev := err == nil
	if hasPrev && !now.Before(prev.NotAfter) {
		f.problem("%s: attempt at %v after expiry %v", req.Name, now, prev.NotAfter)
	}
	if hasPrev && prev.Last != nil && prev.Last.OK && prev.ARI != nil && now.Before(prev.ARI.Start) && !renew.WindowPassed(prev.ARI) {
		f.problem("%s: renewed at %v before the window start %v", req.Name, now, prev.ARI.Start)
	}
	if last, ok := f.lastTry[req.Name]; ok && hasPrev && prev.Last != nil && !prev.Last.OK && now.Sub(last) < 30*time.Second {
		f.problem("%s: retried %v after a failure, before the backoff", req.Name, now.Sub(last))
	}
	f.lastTry[req.Name] = now
	fail := f.down[req.CA.Name] || f.rnd.Float64() < f.fail
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	}()
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return renew.Result{}, ctx.Err()
	}
	if fail {
		return renew.Result{}, errFake
	}
	f.mu.Lock()
	f.serial++
	f.renewals[req.Name]++
	serial := fmt.Sprint(f.serial)
	f.mu.Unlock()
	now = time.Now()
	rec := store.Record{Name: req.Name, Identifiers: idValues(req), CA: "https://" + req.CA.Name + "/dir", CAName: req.CA.Name,
		Serial: serial, Version: prev.Version + 1, NotBefore: now, NotAfter: now.Add(f.life[req.Name]), Issued: now,
		Last: &store.Attempt{Time: now, OK: true}}
	_ = f.st.SaveRecord(ctx, rec)
	return renew.Result{Name: req.Name, Version: rec.Version, NotBefore: rec.NotBefore, NotAfter: rec.NotAfter, Serial: serial}, nil
}

func idValues(req renew.Request) []string {
	out := make([]string, len(req.Identifiers))
	for i, id := range req.Identifiers {
		out[i] = id.Value
	}
	return out
}

func (f *fakeCA) Sweep(context.Context, renew.Request) error { return nil }
func (f *fakeCA) Pending(context.Context) ([]string, error)  { return nil, nil }
func (f *fakeCA) RenewalInfo(_ context.Context, rec store.Record, _ *x509.Certificate) (acme.RenewalInfo, error) {
	life := rec.NotAfter.Sub(rec.NotBefore)
	mid := rec.NotBefore.Add(life * 2 / 3)
	retry := time.Now().Add(6 * time.Hour)
	ri := acme.RenewalInfo{RetryAfter: &retry}
	ri.SuggestedWindow.Start, ri.SuggestedWindow.End = mid.Add(-life/20), mid.Add(life/20)
	return ri, nil
}

var _ Obtainer = (*fakeCA)(nil)
