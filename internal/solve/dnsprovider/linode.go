//go:build !detour_slim

package dnsprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-acme/lego/v5/challenge"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/miekg/dns"
)

// Linode's provider is Detour's own client of the Linode API v4 (domains
// and their records) rather than lego's: lego's drives linodego, which
// reads LINODE_URL, LINODE_API_VERSION and LINODE_CA from the process
// environment (and exits the process on an unreadable LINODE_CA) and builds
// its own HTTP client, so Detour's transport could not reach it. The
// requests are those lego sends: find the domain by its name, add a TXT
// record, and on clean-up delete the TXT records at the name with the
// value.

// linodeAPI is the Linode API v4's base URL.
const linodeAPI = "https://api.linode.com/v4"

// linodeMinTTL is the shortest TTL Linode accepts (it rounds shorter ones
// up); lego refuses a shorter one, and so does Detour.
const linodeMinTTL = 300

var linodeFactory = Factory{
	Title: "Linode (v4)", URL: "https://www.linode.com/", Aliases: []string{"linodev4"}, Lego: NoLego, AnyName: true,
	Timeout: 2 * time.Minute,
	Keys: []Key{
		{Name: "LINODE_TOKEN", Required: true, Secret: true, Doc: "personal access token with the Domains Read/Write scope"},
		{Name: "LINODE_TTL", Default: "300", Doc: "TTL of the TXT record, in seconds (at least 300)"},
	},
	New: func(c *Credentials, e Env) (challenge.Provider, error) {
		p := &linodeProvider{token: c.Need("LINODE_TOKEN"), ttl: c.Int("LINODE_TTL", linodeMinTTL),
			base: linodeAPI, client: e.HTTPClient(), timeout: e.Timeout, interval: e.Interval}
		if c.failed() {
			return nil, nil // build reports the keys
		}
		if p.ttl < linodeMinTTL {
			return nil, fmt.Errorf("LINODE_TTL is %d; Linode's shortest TTL is %d seconds: set LINODE_TTL = %d or more, or remove it", p.ttl, linodeMinTTL, linodeMinTTL)
		}
		return p, nil
	},
}

// linodeProvider implements lego's challenge.ProviderTimeout over the
// Linode API v4.
type linodeProvider struct {
	token, base       string
	ttl               int
	client            *http.Client
	timeout, interval time.Duration
}

// Timeout implements challenge.ProviderTimeout.
func (p *linodeProvider) Timeout() (time.Duration, time.Duration) { return p.timeout, p.interval }

// linodeRecord is a domain record as the API reads and writes it.
type linodeRecord struct {
	ID     int    `json:"id,omitempty"`
	Type   string `json:"type"`
	Name   string `json:"name"`
	Target string `json:"target"`
	TTLSec int    `json:"ttl_sec,omitempty"`
}

// linodePage is one page of a list.
type linodePage[T any] struct {
	Data  []T `json:"data"`
	Page  int `json:"page"`
	Pages int `json:"pages"`
}

// Present adds the challenge's TXT record to the Linode domain holding it
// (at the name lego computes: _acme-challenge.<domain>, or the target of
// its CNAME).
func (p *linodeProvider) Present(ctx context.Context, domain, token, keyAuth string) error {
	info := dns01.GetChallengeInfo(ctx, domain, keyAuth)
	return p.SetTXTAt(ctx, info.EffectiveFQDN, info.Value)
}

// CleanUp deletes the TXT records at the challenge's name that hold its
// value; the name's other records stay.
func (p *linodeProvider) CleanUp(ctx context.Context, domain, token, keyAuth string) error {
	info := dns01.GetChallengeInfo(ctx, domain, keyAuth)
	return p.DeleteTXTAt(ctx, info.EffectiveFQDN, info.Value)
}

// SetTXTAt implements nameWriter.
func (p *linodeProvider) SetTXTAt(ctx context.Context, fqdn, value string) error {
	id, sub, err := p.zone(ctx, dns.Fqdn(fqdn))
	if err != nil {
		return err
	}
	rec := linodeRecord{Type: "TXT", Name: sub, Target: value, TTLSec: p.ttl}
	return p.do(ctx, http.MethodPost, fmt.Sprintf("/domains/%d/records", id), nil, rec, nil)
}

// DeleteTXTAt implements nameWriter.
func (p *linodeProvider) DeleteTXTAt(ctx context.Context, fqdn, value string) error {
	id, sub, err := p.zone(ctx, dns.Fqdn(fqdn))
	if err != nil {
		return err
	}
	full := dns01.UnFqdn(fqdn)
	recs, err := linodeList[linodeRecord](ctx, p, fmt.Sprintf("/domains/%d/records", id), `{"type":"TXT"}`)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if r.Type == "TXT" && (r.Name == sub || r.Name == full) && r.Target == value {
			if err := p.do(ctx, http.MethodDelete, fmt.Sprintf("/domains/%d/records/%d", id, r.ID), nil, nil, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// zone finds the Linode domain that holds fqdn: its ID and fqdn's name
// relative to it.
func (p *linodeProvider) zone(ctx context.Context, fqdn string) (int, string, error) {
	apex, err := dns01.DefaultClient().FindZoneByFqdn(ctx, fqdn)
	if err != nil {
		return 0, "", fmt.Errorf("could not find the zone of %s: %w", fqdn, err)
	}
	name := dns01.UnFqdn(apex)
	filter, _ := json.Marshal(map[string]string{"domain": name})
	type domain struct {
		ID     int    `json:"id"`
		Domain string `json:"domain"`
	}
	ds, err := linodeList[domain](ctx, p, "/domains", string(filter))
	if err != nil {
		return 0, "", err
	}
	for _, d := range ds {
		if strings.EqualFold(d.Domain, name) {
			sub, err := dns01.ExtractSubDomain(fqdn, apex)
			if err != nil {
				return 0, "", err
			}
			return d.ID, sub, nil
		}
	}
	return 0, "", fmt.Errorf("the zone %s is not a domain of this Linode account (the token's account has no domain %q): add it in Linode's DNS Manager, or use the token of the account that has it", name, name)
}

// linodeList reads every page of a list, filtered by the X-Filter JSON.
func linodeList[T any](ctx context.Context, p *linodeProvider, path, filter string) ([]T, error) {
	var all []T
	for page := 1; ; page++ {
		var pg linodePage[T]
		q := url.Values{"page": {strconv.Itoa(page)}, "page_size": {"500"}}
		if err := p.do(ctx, http.MethodGet, path, q, nil, &pg, "X-Filter", filter); err != nil {
			return nil, err
		}
		all = append(all, pg.Data...)
		if pg.Page >= pg.Pages || len(pg.Data) == 0 {
			return all, nil
		}
	}
}

// do sends one API request with body (JSON) and decodes the answer into
// out; header gives extra header name/value pairs.
func (p *linodeProvider) do(ctx context.Context, method, path string, q url.Values, body, out any, header ...string) error {
	u := p.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "detour")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("Linode API: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("Linode API: %s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return linodeError(method, path, resp.StatusCode, raw)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("Linode API: %s %s: the answer is not the JSON expected: %w", method, path, err)
	}
	return nil
}

// linodeError turns an error answer into a message with the fix.
func linodeError(method, path string, status int, raw []byte) error {
	var body struct {
		Errors []struct {
			Field  string `json:"field"`
			Reason string `json:"reason"`
		} `json:"errors"`
	}
	var reasons []string
	if json.Unmarshal(raw, &body) == nil {
		for _, e := range body.Errors {
			if e.Field != "" {
				reasons = append(reasons, e.Field+": "+e.Reason)
			} else {
				reasons = append(reasons, e.Reason)
			}
		}
	}
	msg := strings.Join(reasons, "; ")
	if msg == "" {
		msg = strings.TrimSpace(string(raw))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
	}
	err := fmt.Errorf("Linode API: %s %s: %d %s: %s", method, path, status, http.StatusText(status), msg)
	switch status {
	case http.StatusUnauthorized:
		return fmt.Errorf("%w (LINODE_TOKEN is not accepted: it is mistyped, expired or revoked; create a personal access token in Linode's Cloud Manager)", err)
	case http.StatusForbidden:
		return fmt.Errorf("%w (the token may not change DNS: give it the Domains Read/Write scope)", err)
	case http.StatusTooManyRequests:
		return fmt.Errorf("%w (Linode's rate limit: try again later)", err)
	}
	return err
}
