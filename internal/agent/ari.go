package agent

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/store"
)

// RenewalInfoFunc returns the Plan.RenewalInfo that asks client for a
// certificate's window (RFC 9773 §4.2) and, when the ACME library refuses
// the CA's answer, reads the renewalInfo resource itself with hc (an
// unauthenticated GET, no JWS involved).
//
// The second request exists because acmez (v3.1.7) rejects windows of one
// second or less, which is exactly what Pebble answers for a revoked
// certificate ("renew now": a one-second window an hour ago), so a revoked
// certificate would otherwise go unnoticed until its scheduled renewal.
// hc must trust the CA's API; nil uses http.DefaultClient.
func RenewalInfoFunc(client *acme.Client, hc *http.Client) func(context.Context, store.Record, *x509.Certificate) (acme.RenewalInfo, error) {
	return func(ctx context.Context, _ store.Record, leaf *x509.Certificate) (acme.RenewalInfo, error) {
		ri, err := client.RenewalInfo(ctx, leaf)
		if err == nil || errors.Is(err, acme.ErrUnsupported) {
			return ri, err
		}
		dir, derr := client.Directory(ctx)
		if derr != nil || dir.RenewalInfo == "" {
			return ri, err
		}
		direct, ferr := FetchRenewalInfo(ctx, hc, dir.RenewalInfo, leaf)
		if ferr != nil {
			return ri, fmt.Errorf("%w; reading it directly also failed: %v", err, ferr)
		}
		return direct, nil
	}
}

// FetchRenewalInfo GETs the renewalInfo resource of leaf under base, the
// directory's renewalInfo URL (RFC 9773 §4.1), and returns the window
// (accepted when its end is after its start) with the Retry-After.
func FetchRenewalInfo(ctx context.Context, hc *http.Client, base string, leaf *x509.Certificate) (acme.RenewalInfo, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	id, err := acme.ARIID(leaf)
	if err != nil {
		return acme.RenewalInfo{}, fmt.Errorf("computing the certificate's ARI identifier: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/"+id, nil)
	if err != nil {
		return acme.RenewalInfo{}, err
	}
	req.Header.Set("User-Agent", "detour/"+acme.Version)
	resp, err := hc.Do(req)
	if err != nil {
		return acme.RenewalInfo{}, fmt.Errorf("fetching renewal info: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return acme.RenewalInfo{}, fmt.Errorf("reading renewal info: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return acme.RenewalInfo{}, fmt.Errorf("fetching renewal info: %s: %.200s", resp.Status, body)
	}
	var ri acme.RenewalInfo
	if err := json.Unmarshal(body, &ri); err != nil {
		return acme.RenewalInfo{}, fmt.Errorf("decoding renewal info: %w", err)
	}
	if !ri.SuggestedWindow.End.After(ri.SuggestedWindow.Start) {
		return acme.RenewalInfo{}, fmt.Errorf("the CA's renewal window is empty or reversed (%s to %s)", ri.SuggestedWindow.Start, ri.SuggestedWindow.End)
	}
	if v := resp.Header.Get("Retry-After"); v != "" {
		if s, err := strconv.Atoi(v); err == nil && s >= 0 {
			t := time.Now().Add(time.Duration(s) * time.Second)
			ri.RetryAfter = &t
		} else if t, err := http.ParseTime(v); err == nil {
			ri.RetryAfter = &t
		}
	}
	return ri, nil
}
