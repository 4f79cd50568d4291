package acme

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	date := time.Date(2025, 3, 1, 12, 30, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"", time.Time{}, false},
		{"0", now, true},
		{"1", now.Add(time.Second), true},
		{"120", now.Add(2 * time.Minute), true},
		{"86400", now.Add(24 * time.Hour), true},
		{"-1", time.Time{}, false},
		{"1.5", time.Time{}, false},
		{"soon", time.Time{}, false},
		{"10s", time.Time{}, false},
		{"Sat, 01 Mar 2025 12:30:00 GMT", date, true},                // IMF-fixdate
		{"Saturday, 01-Mar-25 12:30:00 GMT", date, true},             // RFC 850
		{"Sat Mar  1 12:30:00 2025", date, true},                     // asctime
		{"Sat, 01 Mar 2025 11:00:00 GMT", now.Add(-time.Hour), true}, // past dates parse; the gate ignores them
		{"2025-03-01T12:30:00Z", time.Time{}, false},                 // RFC 3339 is not an HTTP date
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := parseRetryAfter(tt.in, now)
			if ok != tt.ok || !got.Equal(tt.want) {
				t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// rateServer answers each request with the next scripted status and
// Retry-After value (the last one repeats), recording arrival times.
type rateServer struct {
	*httptest.Server
	mu     sync.Mutex
	script []scripted
	times  []time.Time
}

type scripted struct {
	status     int
	retryAfter string
}

func newRateServer(t *testing.T, script ...scripted) *rateServer {
	t.Helper()
	s := &rateServer{script: script}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.times = append(s.times, time.Now())
		sc := s.script[min(len(s.times), len(s.script))-1]
		s.mu.Unlock()
		if sc.retryAfter != "" {
			w.Header().Set("Retry-After", sc.retryAfter)
		}
		w.WriteHeader(sc.status)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *rateServer) arrivals() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.times...)
}

func get(t *testing.T, hc *http.Client, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	return resp, err
}

func TestGateWaitsForRetryAfter(t *testing.T) {
	t.Parallel()
	srv := newRateServer(t, scripted{http.StatusServiceUnavailable, "1"}, scripted{http.StatusOK, ""})
	g := newGate(srv.Client().Transport, time.Minute)
	hc := &http.Client{Transport: g}
	// The request is sent again once the CA's Retry-After has passed.
	resp, err := get(t, hc, srv.URL+"/a")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("request: %v, %v; want 200 after one retry", resp, err)
	}
	at := srv.arrivals()
	if len(at) != 2 {
		t.Fatalf("server saw %d requests, want 2", len(at))
	}
	if gap := at[1].Sub(at[0]); gap < 900*time.Millisecond || gap > 3*time.Second {
		t.Errorf("retry arrived %v after the first; want about 1s (Retry-After: 1)", gap)
	}
	// The wait is over: another path on the same host goes at once.
	start := time.Now()
	if resp, err = get(t, hc, srv.URL+"/b"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("second request: %v, %v; want 200", resp, err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("second request held %v after the Retry-After had passed", d)
	}
}

func TestGateReplaysBodyAndGivesUp(t *testing.T) {
	t.Parallel()
	var bodies []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	hc := &http.Client{Transport: newGate(srv.Client().Transport, time.Minute)}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, strings.NewReader("signed-jws"))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("status = %d, want the CA's 429 once retries are used up", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 1+maxRetries {
		t.Fatalf("server saw %d requests, want %d", len(bodies), 1+maxRetries)
	}
	for i, b := range bodies {
		if b != "signed-jws" {
			t.Errorf("request %d body = %q, want the original body replayed", i, b)
		}
	}
}

func TestGateRefusesLongWait(t *testing.T) {
	t.Parallel()
	date := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	tests := []struct {
		name       string
		status     int
		retryAfter string
		want       time.Time // zero: about an hour from now
	}{
		{"429 seconds", http.StatusTooManyRequests, "3600", time.Time{}},
		{"503 seconds", http.StatusServiceUnavailable, "3600", time.Time{}},
		{"503 HTTP date", http.StatusServiceUnavailable, date.Format(http.TimeFormat), date},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newRateServer(t, scripted{tt.status, tt.retryAfter}, scripted{http.StatusOK, ""})
			g := newGate(srv.Client().Transport, time.Second)
			hc := &http.Client{Transport: g}
			if _, err := get(t, hc, srv.URL); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err := get(t, hc, srv.URL)
			elapsed := time.Since(start)
			var ra *RetryAfterError
			if !errors.As(err, &ra) {
				t.Fatalf("second request: %v; want *RetryAfterError", err)
			}
			if elapsed > 100*time.Millisecond {
				t.Errorf("the refused request took %v; want it to fail at once", elapsed)
			}
			if n := len(srv.arrivals()); n != 1 {
				t.Errorf("server saw %d requests; the refused one must not be sent", n)
			}
			if ra.Host != srv.Listener.Addr().String() {
				t.Errorf("RetryAfterError.Host = %q, want %q", ra.Host, srv.Listener.Addr())
			}
			want := tt.want
			if want.IsZero() {
				want = start.Add(time.Hour)
			}
			if d := ra.Until.Sub(want); d < -5*time.Second || d > 5*time.Second {
				t.Errorf("RetryAfterError.Until = %v, want about %v", ra.Until, want)
			}
			if msg := ra.Error(); !contains(msg, ra.Host, "Retry-After", ra.Until.UTC().Format(time.RFC3339)) {
				t.Errorf("message %q lacks the host, Retry-After or the time", msg)
			}
		})
	}
}

func TestGateIgnoresRetryAfterOnSuccess(t *testing.T) {
	t.Parallel()
	// Retry-After on a 200 (a poll hint) or a 500 does not hold the host.
	for _, status := range []int{http.StatusOK, http.StatusInternalServerError} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			srv := newRateServer(t, scripted{status, "3600"})
			g := newGate(srv.Client().Transport, time.Second)
			hc := &http.Client{Transport: g}
			for i := range 2 {
				if _, err := get(t, hc, srv.URL+"/order"); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
			}
			if !g.blockedUntil(srv.Listener.Addr().String()).IsZero() {
				t.Error("the gate holds the host after a non-429/503 answer")
			}
			// The hint is still recorded for pollers.
			h, ok := g.hint(srv.URL + "/order")
			if !ok || time.Until(h) < 59*time.Minute {
				t.Errorf("hint = %v, %v; want about an hour from now", h, ok)
			}
		})
	}
}

func TestGateWaitHonoursContext(t *testing.T) {
	t.Parallel()
	srv := newRateServer(t, scripted{http.StatusServiceUnavailable, "5"}, scripted{http.StatusOK, ""})
	g := newGate(srv.Client().Transport, time.Minute)
	hc := &http.Client{Transport: g, Timeout: 100 * time.Millisecond}
	start := time.Now()
	_, err := get(t, hc, srv.URL)
	if err == nil {
		t.Fatal("request held by a 5s Retry-After succeeded within a 100ms timeout")
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("cancelled wait returned after %v; want about 100ms", elapsed)
	}
	if n := len(srv.arrivals()); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
