package cloud

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRetry(t *testing.T) {
	unavailable := &Error{Provider: "p", Op: "listing", Kind: ErrUnavailable, Status: 503}
	limited := func(d time.Duration) error {
		return &Error{Provider: "p", Op: "listing", Kind: ErrRateLimited, Status: 429, RetryAfter: d}
	}
	tests := []struct {
		name    string
		errs    []error // what each call returns; nil afterwards
		calls   int
		wantErr string
		minTook time.Duration
	}{
		{"success", nil, 1, "", 0},
		{"5xx then success", []error{unavailable, unavailable}, 3, "", 0},
		{"5xx every time", []error{unavailable, unavailable, unavailable, unavailable, unavailable}, attempts, "HTTP 503", 0},
		{"401 is not retried", []error{&Error{Provider: "p", Op: "listing", Kind: ErrAuth, Status: 401}}, 1, "HTTP 401", 0},
		{"429 waits Retry-After", []error{limited(300 * time.Millisecond)}, 2, "", 300 * time.Millisecond},
		{"429 asking too long", []error{limited(time.Hour)}, 1, "longer than Detour waits", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			begin := time.Now()
			err := retry(context.Background(), nil, func(context.Context) error {
				calls++
				if calls <= len(tt.errs) {
					return tt.errs[calls-1]
				}
				return nil
			}, time.Millisecond)
			if calls != tt.calls {
				t.Errorf("%d calls, want %d", calls, tt.calls)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("error %v, want %q", err, tt.wantErr)
			}
			if took := time.Since(begin); took < tt.minTook {
				t.Errorf("took %v, want at least %v", took, tt.minTook)
			}
		})
	}
}

// A cancelled context ends the retries at once, and a wait past the
// deadline is not waited.
func TestRetryContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := retry(ctx, nil, func(context.Context) error {
		calls++
		cancel()
		return &Error{Provider: "p", Op: "adding", Kind: ErrUnavailable, Err: context.Canceled}
	}, time.Millisecond)
	if calls != 1 || err == nil {
		t.Errorf("after cancel: %d calls, %v", calls, err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	begin := time.Now()
	err = retry(ctx, nil, func(context.Context) error {
		return &Error{Provider: "p", Op: "adding", Kind: ErrRateLimited, Status: 429, RetryAfter: 10 * time.Second}
	}, time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "past this run's deadline") || time.Since(begin) > 50*time.Millisecond {
		t.Errorf("a wait past the deadline: %v after %v", err, time.Since(begin))
	}
}

func TestErrorKinds(t *testing.T) {
	for status, want := range map[int]error{401: ErrAuth, 403: ErrForbidden, 404: ErrNotFound, 429: ErrRateLimited,
		500: ErrUnavailable, 503: ErrUnavailable, 400: ErrRejected, 422: ErrRejected, 200: nil} {
		if got := KindOfStatus(status); got != want {
			t.Errorf("KindOfStatus(%d) = %v, want %v", status, got, want)
		}
	}
	err := error(&Error{Provider: "aws-sg", Op: "adding rule tcp/80 from 0.0.0.0/0", Kind: ErrForbidden, Status: 403,
		Code: "UnauthorizedOperation", Message: "not allowed"})
	if !errors.Is(err, ErrForbidden) || errors.Is(err, ErrAuth) {
		t.Error("errors.Is does not follow Kind")
	}
	if got, want := err.Error(), "aws-sg: adding rule tcp/80 from 0.0.0.0/0: HTTP 403 UnauthorizedOperation: not allowed"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{"": 0, "7": 7 * time.Second, "-1": 0, "soon": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second} {
		h := http.Header{}
		if v != "" {
			h.Set("Retry-After", v)
		}
		if got := ParseRetryAfter(h, now); got != want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestRuleCovers(t *testing.T) {
	r := Rule{FromPort: 80, ToPort: 90}
	if !r.Covers(80, false) || !r.Covers(90, false) || r.Covers(91, false) || r.Covers(80, true) {
		t.Errorf("Covers is wrong for %v", r)
	}
	if got := (Rule{FromPort: 80, ToPort: 80, IPv6: true, ID: "sgr-1"}).String(); got != "tcp/80 from ::/0 (sgr-1)" {
		t.Errorf("String() = %q", got)
	}
}
