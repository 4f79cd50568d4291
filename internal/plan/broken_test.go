package plan

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/store"
)

// TestBrokenRecordHeals: the target of a certificate issued with flags
// whose record cannot be read fails with the fix, is listed as broken for
// the agent (its metric), and renews from the record once the file is
// restored or the certificate issued again, without a new plan (the agent
// keeps its targets until SIGHUP).
func TestBrokenRecordHeals(t *testing.T) {
	ctx := context.Background()
	st, err := store.NewFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := &Planner{cfg: &config.Config{}, log: slog.New(slog.DiscardHandler), Store: st, shared: st}
	rec := store.Record{Name: "x.heal.test", Identifiers: []string{"x.heal.test"}, CA: "https://127.0.0.1:1/dir", KeyType: "ecdsa-p256",
		Paths:   []store.PathRef{{Name: "standalone-http", Kind: "standalone", Settings: map[string]string{"challenge": "http-01", "listen": "127.0.0.1:0"}}},
		Version: 1, NotBefore: time.Now(), NotAfter: time.Now().Add(90 * 24 * time.Hour)}
	if err := st.SaveRecord(ctx, rec); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(st.Dir(), "renewal", rec.Name+".json")
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, good[:len(good)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	ap, err := p.Agent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ap.Certs) != 1 || len(ap.Broken) != 1 || ap.Broken[0] != rec.Name {
		t.Fatalf("agent plan: %d targets, broken %v; want the one target, broken", len(ap.Certs), ap.Broken)
	}
	target := ap.Certs[0]
	var be BrokenRecordError
	if _, _, err := target.Request(ctx, 0); !errors.As(err, &be) {
		t.Fatalf("Request = %v, want BrokenRecordError", err)
	}
	if err := os.WriteFile(file, good, 0o600); err != nil {
		t.Fatal(err)
	}
	req, release, err := target.Request(ctx, 0)
	if err != nil {
		t.Fatalf("Request after the record was restored: %v", err)
	}
	release()
	if req.Name != rec.Name || len(req.Paths) != 1 || req.Paths[0].Name != "standalone-http" {
		t.Errorf("request = %s through %v, want %s through standalone-http", req.Name, req.Paths, rec.Name)
	}
}
