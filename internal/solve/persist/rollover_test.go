package persist_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve/persist"
	"github.com/detour-acme/detour/internal/testenv"
)

// draft02Directory serves Pebble's directory with the draft-02 meta fields
// added, as a CA that moved to draft-02 would; every other request goes to
// Pebble itself through the directory's URLs.
func draft02Directory(t *testing.T, env *testenv.Env) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := env.CA.HTTPClient().Get(env.CA.DirectoryURL())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		var dir map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		meta, _ := dir["meta"].(map[string]any)
		meta["accountHashPrefix"] = "https://pebble.example/account-hash/"
		meta["issuerDomainNames"] = []string{"pebble.letsencrypt.org"}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(dir)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/dir"
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var _ io.Writer = (*syncBuffer)(nil)

func TestRolloverWarnsAboutDraft02Records(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	tests := []struct {
		name      string
		directory string
		warn      bool
	}{
		{"draft-01 CA (Pebble)", env.CA.DirectoryURL(), false},
		{"draft-02 CA", draft02Directory(t, env), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			meta, err := persist.FetchMeta(testCtx(t), persist.MetaOptions{Directory: tt.directory, RootBundle: env.RootsFile})
			if err != nil {
				t.Fatal(err)
			}
			if got := meta.Draft() == persist.Draft02; got != tt.warn {
				t.Fatalf("directory announces %v", meta.Draft())
			}
			var logs syncBuffer
			m, err := renew.New(renew.Options{Store: env.Store, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			c, err := acme.New(acme.Options{Directory: tt.directory, RootsPEM: env.CA.TLSRootsPEM()})
			if err != nil {
				t.Fatal(err)
			}
			ca := renew.CA{Client: c, Email: "roll@detour.test", AgreeTOS: true, RootBundle: env.RootsFile}
			before, err := m.Account(testCtx(t), ca)
			if err != nil {
				t.Fatal(err)
			}
			after, err := m.RolloverAccount(testCtx(t), ca)
			if err != nil {
				t.Fatalf("RolloverAccount: %v", err)
			}
			if after.Location != before.Location {
				t.Errorf("rollover changed the account URL %s -> %s", before.Location, after.Location)
			}
			warned := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "republish every _validation-persist record")
			if warned != tt.warn {
				t.Errorf("warned = %v, want %v; log:\n%s", warned, tt.warn, logs.String())
			}
		})
	}
}
