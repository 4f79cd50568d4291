package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

// Status is one certificate as the running agent sees it.
type Status struct {
	Name        string    `json:"name"`
	Identifiers []string  `json:"identifiers"`
	CA          string    `json:"ca"`      // directory URL of the live certificate's CA
	NextCA      string    `json:"next_ca"` // CA the next attempt uses (a fallback after failures)
	Version     int       `json:"version"` // live archive version (0: not issued)
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Next        time.Time `json:"next"`        // next event
	NextAction  string    `json:"next_action"` // "renew" or "ari" (ask the CA for its window)
	Reason      string    `json:"reason"`
	Running     bool      `json:"running"`
	ARIStart    time.Time `json:"ari_start,omitzero"`
	ARIEnd      time.Time `json:"ari_end,omitzero"`
	LastTime    time.Time `json:"last_time,omitzero"`
	LastOK      *bool     `json:"last_ok,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	LastPath    string    `json:"last_path,omitempty"` // the path used, or the paths tried
	LastCA      string    `json:"last_ca,omitempty"`
	Failures    int       `json:"failures"`
}

// snapshot returns the status of every certificate, sorted by name.
func (l *loop) snapshot() []Status {
	out := make([]Status, 0, len(l.certs))
	for _, s := range l.certs {
		st := Status{Name: s.cert.Name, Identifiers: s.cert.Identifiers, NextCA: s.cert.CAName(s.caIndex()),
			Next: s.next, NextAction: s.action, Reason: s.reason, Running: s.running, Failures: s.failures()}
		if r := s.rec; r != nil {
			st.Identifiers, st.CA, st.Version, st.NotBefore, st.NotAfter = r.Identifiers, r.CA, r.Version, r.NotBefore, r.NotAfter
			if r.ARI != nil {
				st.ARIStart, st.ARIEnd = r.ARI.Start, r.ARI.End
			}
		}
		if a := s.lastAttempt(); a != nil {
			ok := a.OK
			st.LastTime, st.LastOK, st.LastError, st.LastPath, st.LastCA = a.Time, &ok, a.Error, a.Path, a.CA
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// StatusPath is the URL path the status is served at.
const StatusPath = "/status"

// Handler serves GET /status (the Status of every certificate as JSON)
// and, when m is not nil, /metrics.
func (a *Agent) Handler(m *Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+StatusPath, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		st, err := a.Status(ctx)
		if err != nil {
			http.Error(w, "the agent did not answer: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	})
	if m != nil {
		mux.Handle("GET /metrics", m.Handler())
	}
	return mux
}

// Serve serves h on ln until ctx is done.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ListenSocket binds the unix socket at path for the status, replacing a
// stale socket a dead agent left (one nobody answers on). It fails when a
// live agent answers there.
func ListenSocket(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another detour agent is running (it answers on %s); stop it first, or use its state directory", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing the stale status socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("binding the status socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restricting the status socket %s: %w", path, err)
	}
	return ln, nil
}

// ErrNotRunning reports that no agent answers on the status socket.
var ErrNotRunning = errors.New("no detour agent is running")

// FetchStatus asks the agent listening on the unix socket at path for its
// status. It returns an error wrapping ErrNotRunning when nothing answers.
func FetchStatus(ctx context.Context, path string) ([]Status, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent"+StatusPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return nil, fmt.Errorf("%w (%v)", ErrNotRunning, err)
		}
		return nil, fmt.Errorf("asking the agent for its status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("asking the agent for its status: %s", resp.Status)
	}
	var out []Status
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("reading the agent's status: %w", err)
	}
	return out, nil
}
