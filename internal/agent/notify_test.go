package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// recordingNotifier keeps the notices it gets.
type recordingNotifier struct {
	mu      sync.Mutex
	notices []Notice
}

func (r *recordingNotifier) Notify(_ context.Context, n Notice) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notices = append(r.notices, n)
	return nil
}

var _ Notifier = (*recordingNotifier)(nil)

// A certificate whose CA keeps failing is notified about once it is within
// NotifyWithin of expiry, not before, and not again within NotifyEvery.
func TestAgentNotifiesNearExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore(t)
		f := newFakeCA(t, st)
		c := fakeCert(t, f, "failing", 10*24*time.Hour)
		a, err := New(Options{Obtainer: f, Store: st})
		if err != nil {
			t.Fatal(err)
		}
		n := &recordingNotifier{}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			done <- a.Run(ctx, Plan{Certs: []Cert{c}, Notifier: n, NotifyWithin: 2 * 24 * time.Hour})
		}()
		time.Sleep(time.Hour) // issued
		f.mu.Lock()
		f.down["primary"] = true // from now on every attempt fails
		f.mu.Unlock()
		time.Sleep(7 * 24 * time.Hour) // renewal due at day ~6.5, failing since
		n.mu.Lock()
		early := len(n.notices)
		n.mu.Unlock()
		time.Sleep(36 * time.Hour) // now inside the last two days
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if early != 0 {
			t.Errorf("%d notices before the certificate was within 2 days of expiry", early)
		}
		if len(n.notices) != 1 {
			t.Fatalf("%d notices in the last 36 hours, want 1 (at most one a day)", len(n.notices))
		}
		if got := n.notices[0]; got.Name != "failing" || got.Failures == 0 || !strings.Contains(got.Error, errFake.Error()) {
			t.Errorf("notice = %+v", got)
		}
	})
}

func TestCommandNotifier(t *testing.T) {
	out := filepath.Join(t.TempDir(), "notice")
	n := CommandNotifier{Command: `printf '%s|%s|%s' "$DETOUR_NAME" "$DETOUR_FAILURES" "$DETOUR_ERROR" > ` + out}
	if err := n.Notify(context.Background(), Notice{Name: "www", Failures: 4, Error: "CA down"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); string(got) != "www|4|CA down" {
		t.Errorf("command saw %q", got)
	}
	if err := (CommandNotifier{Command: "echo mail queue full >&2; exit 1"}).Notify(context.Background(), Notice{}); err == nil || !strings.Contains(err.Error(), "mail queue full") {
		t.Errorf("err = %v", err)
	}
}

func TestWebhookNotifier(t *testing.T) {
	got := make(chan map[string]any, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		data, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(data, &body); err != nil || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		got <- body
	}))
	defer srv.Close()
	n := WebhookNotifier{URL: srv.URL}
	if err := n.Notify(context.Background(), Notice{Name: "www", NotAfter: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), Failures: 2, Error: "timeout"}); err != nil {
		t.Fatal(err)
	}
	body := <-got
	if body["name"] != "www" || !strings.Contains(body["text"].(string), "www") || body["failures"] != float64(2) {
		t.Errorf("webhook got %v", body)
	}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	if err := (WebhookNotifier{URL: down.URL}).Notify(context.Background(), Notice{}); err == nil || !strings.Contains(err.Error(), "maintenance") {
		t.Errorf("err = %v", err)
	}
}

// Reload adds and drops certificates while the agent runs; the status
// socket serves the agent's view, and a second agent refuses the socket.
func TestAgentReloadAndStatusSocket(t *testing.T) {
	st := newMemStore(t)
	f := newFakeCA(t, st)
	one, two := fakeCert(t, f, "one", 90*24*time.Hour), fakeCert(t, f, "two", 90*24*time.Hour)
	a, err := New(Options{Obtainer: f, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, Plan{Certs: []Cert{one}}) }()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := ListenSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	go Serve(ctx, ln, a.Handler(nil))
	if _, err := ListenSocket(sock); err == nil || !strings.Contains(err.Error(), "another detour agent") {
		t.Errorf("second listener: %v", err)
	}

	names := func() []string {
		s, err := FetchStatus(ctx, sock)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, x := range s {
			out = append(out, x.Name)
		}
		return out
	}
	if got := names(); len(got) != 1 || got[0] != "one" {
		t.Errorf("status before reload = %v", got)
	}
	if err := a.Reload(ctx, Plan{Certs: []Cert{two}}); err != nil {
		t.Fatal(err)
	}
	if got := names(); len(got) != 1 || got[0] != "two" {
		t.Errorf("status after reload = %v", got)
	}
	if err := a.Reload(ctx, Plan{Certs: []Cert{two, two}}); err != nil {
		t.Fatal(err)
	}
	if got := names(); len(got) != 1 || got[0] != "two" {
		t.Errorf("a plan listing a certificate twice replaced the old one: %v", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := FetchStatus(context.Background(), filepath.Join(t.TempDir(), "none.sock")); !errors.Is(err, ErrNotRunning) {
		t.Errorf("no agent: %v, want ErrNotRunning", err)
	}
}
