package acmedns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxResponse bounds how much of an API response is read.
const maxResponse = 64 << 10

// APIError is a non-2xx answer of the acme-dns API.
type APIError struct {
	Op     string // "register" or "update"
	Status int
	Code   string // the "error" member of the JSON body, when there is one
	Body   string // the body, shortened, when it is not such JSON
}

func (e *APIError) Error() string {
	what := e.Code
	if what == "" {
		what = e.Body
	}
	return fmt.Sprintf("acme-dns %s answered %d %s: %s", e.Op, e.Status, http.StatusText(e.Status), what)
}

// register creates an account on the server.
func (s *records) register(ctx context.Context) (Account, error) {
	var body any
	if len(s.allowFrom) > 0 {
		body = map[string][]string{"allowfrom": s.allowFrom}
	}
	var a Account
	if err := s.post(ctx, "register", nil, body, &a); err != nil {
		return Account{}, fmt.Errorf("registering with the acme-dns server %s: %w", s.server, err)
	}
	if err := a.complete(); err != nil {
		return Account{}, fmt.Errorf("registering with the acme-dns server %s: the response is %w; is it an acme-dns server?", s.server, err)
	}
	if a.AllowFrom == nil {
		a.AllowFrom = s.allowFrom
	}
	a.ServerURL = s.server
	return a, nil
}

// update sets value as a TXT value of the account's name.
func (s *records) update(ctx context.Context, a Account, value string) error {
	hdr := map[string]string{"X-Api-User": a.Username, "X-Api-Key": a.Password}
	body := map[string]string{"subdomain": a.Subdomain, "txt": value}
	return s.post(ctx, "update", hdr, body, nil)
}

// post sends a JSON request to the API endpoint op and decodes a 2xx JSON
// answer into out (when non-nil).
func (s *records) post(ctx context.Context, op string, hdr map[string]string, body, out any) error {
	var rd io.Reader = http.NoBody
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encoding the %s request: %w", op, err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint(op), rd)
	if err != nil {
		return fmt.Errorf("building the %s request: %w", op, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "detour")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("sending the %s request: %w", op, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("reading the %s response: %w", op, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &APIError{Op: op, Status: resp.StatusCode}
		var doc struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &doc) == nil && doc.Error != "" {
			e.Code = doc.Error
		} else {
			e.Body = shorten(string(raw))
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("decoding the %s response (%q): %w", op, shorten(string(raw)), err)
		}
	}
	return nil
}

func (s *records) endpoint(op string) string { return strings.TrimSuffix(s.server, "/") + "/" + op }

func shorten(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// explainUpdate turns an update failure into a message saying what to
// change.
func (s *records) explainUpdate(domain string, err error) error {
	var ae *APIError
	if !errors.As(err, &ae) {
		return fmt.Errorf("updating the TXT record of %s through %s: %w", domain, s.server, err)
	}
	switch {
	case ae.Status == http.StatusUnauthorized:
		return fmt.Errorf("updating the TXT record of %s through %s: %w; the server refused the stored credentials, "+
			"or this host's address is outside the account's allowfrom ranges (%s): fix allow_from and the account, "+
			"or remove %s to register a new account (which needs a new CNAME)",
			domain, s.server, err, strings.Join(s.allowFrom, ", "), s.creds.where(domain))
	case ae.Code == "bad_txt":
		return fmt.Errorf("updating the TXT record of %s through %s: %w; the server accepts only 43-character base64url values", domain, s.server, err)
	case ae.Status == http.StatusTooManyRequests:
		return fmt.Errorf("updating the TXT record of %s through %s: %w; the server is rate limiting this host, try again later", domain, s.server, err)
	}
	return fmt.Errorf("updating the TXT record of %s through %s: %w", domain, s.server, err)
}
