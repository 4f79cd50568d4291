package acme

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// gate is an http.RoundTripper that honours a CA's Retry-After on 429 and
// 503 answers: no further request goes to that host before the time given.
// A wait longer than maxWait fails at once with *RetryAfterError, so a
// renewal is rescheduled rather than blocking for hours. It also records the
// Retry-After of every response per URL, which the pollers read as hints.
// A request that gets no answer at all fails with a *NetworkError saying
// what to check.
type gate struct {
	next    http.RoundTripper
	maxWait time.Duration
	now     func() time.Time

	mu       sync.Mutex
	notUntil map[string]time.Time // host -> earliest next request
	hints    map[string]time.Time // URL -> Retry-After of its last response
}

func newGate(next http.RoundTripper, maxWait time.Duration) *gate {
	return &gate{
		next: next, maxWait: maxWait, now: time.Now,
		notUntil: make(map[string]time.Time),
		hints:    make(map[string]time.Time),
	}
}

// RetryAfterError reports that the CA asked Detour to wait (HTTP 429 or 503
// with Retry-After) for longer than one request may block.
type RetryAfterError struct {
	Host  string
	Until time.Time
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("the CA at %s asked to wait until %s (Retry-After) before the next request", e.Host, e.Until.UTC().Format(time.RFC3339))
}

// maxRetries bounds how often one request is sent again after a 429 or 503
// whose Retry-After fits within maxWait.
const maxRetries = 2

func (g *gate) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		resp, err := g.roundTrip(req)
		if err != nil || attempt == maxRetries || !retryable(resp) {
			return resp, err
		}
		// The CA is busy or limiting and said when to come back: do so,
		// rather than fail the whole renewal. Replaying a signed request is
		// safe: a consumed nonce comes back as badNonce, which the ACME
		// layer re-signs.
		if req.Body != nil && req.GetBody == nil {
			return resp, nil
		}
		next := req.Clone(req.Context())
		if req.GetBody != nil {
			body, berr := req.GetBody()
			if berr != nil {
				return resp, nil
			}
			next.Body = body
		}
		until := g.blockedUntil(req.URL.Host)
		if until.Sub(g.now()) > g.maxWait {
			return resp, nil
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		req = next
	}
}

// retryable reports a 429 or 503 answer carrying Retry-After.
func retryable(resp *http.Response) bool {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
		return false
	}
	return resp.Header.Get("Retry-After") != ""
}

// roundTrip sends req once, after any wait the CA asked for.
func (g *gate) roundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	g.mu.Lock()
	until := g.notUntil[host]
	g.mu.Unlock()
	if wait := until.Sub(g.now()); wait > 0 {
		if wait > g.maxWait {
			return nil, &RetryAfterError{Host: host, Until: until}
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-req.Context().Done():
			t.Stop()
			return nil, req.Context().Err()
		}
	}
	resp, err := g.next.RoundTrip(req)
	if err != nil {
		// Every request to the CA passes here: say what to check when
		// the CA cannot be reached.
		return resp, explainNetwork(req, err)
	}
	if ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), g.now()); ok {
		g.mu.Lock()
		g.hints[req.URL.String()] = ra
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			if ra.After(g.notUntil[host]) {
				g.notUntil[host] = ra
			}
		}
		g.mu.Unlock()
	}
	return resp, nil
}

// hint returns the Retry-After time of the last response from url.
func (g *gate) hint(url string) (time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.hints[url]
	return t, ok
}

// blockedUntil returns the time before which the gate holds requests to host.
func (g *gate) blockedUntil(host string) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.notUntil[host]
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date
// (RFC 9110 §10.2.3).
func parseRetryAfter(v string, now time.Time) (time.Time, bool) {
	if v == "" {
		return time.Time{}, false
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return time.Time{}, false
		}
		return now.Add(time.Duration(s) * time.Second), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// defaultTransport is an http.Transport with bounded dial and handshake times.
func defaultTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
		ForceAttemptHTTP2:     true,
	}
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// demote is a slog.Handler that logs every record at debug level: acmez's
// own messages are detail next to Detour's.
type demote struct{ slog.Handler }

func (d demote) Enabled(ctx context.Context, _ slog.Level) bool {
	return d.Handler.Enabled(ctx, slog.LevelDebug)
}

func (d demote) Handle(ctx context.Context, r slog.Record) error {
	r.Level = slog.LevelDebug
	return d.Handler.Handle(ctx, r)
}

func (d demote) WithAttrs(a []slog.Attr) slog.Handler { return demote{d.Handler.WithAttrs(a)} }
func (d demote) WithGroup(n string) slog.Handler      { return demote{d.Handler.WithGroup(n)} }

// CloseIdleConnections closes the wrapped transport's idle connections.
func (g *gate) CloseIdleConnections() {
	if c, ok := g.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
