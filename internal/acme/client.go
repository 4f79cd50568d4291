package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	wire "github.com/mholt/acmez/v3/acme"
)

// Options configure a Client. Directory is required.
type Options struct {
	// Directory is the CA's ACME directory URL.
	Directory string
	// RootsPEM, when set, replaces the system roots for the CA's API (a
	// private CA, or the local sandbox).
	RootsPEM []byte
	// HTTPClient overrides the HTTP client entirely (tests); its transport
	// is still wrapped to honour Retry-After.
	HTTPClient *http.Client
	// UserAgent is prepended to the User-Agent header.
	UserAgent string
	// RequestTimeout bounds every request. Default 30s.
	RequestTimeout time.Duration
	// MaxRetryWait is the longest a CA's Retry-After (429/503) may hold one
	// request; a longer one fails the request with *RetryAfterError. Default 1m.
	MaxRetryWait time.Duration
	// PollMin and PollMax bound polling of authorizations and orders when
	// the CA gives no Retry-After: polls start at PollMin and double up to
	// PollMax. Defaults 5ms and 2s. PollTimeout bounds one wait (default 5m).
	PollMin, PollMax, PollTimeout time.Duration
	// Logger receives debug logs. Default: discard.
	Logger *slog.Logger
}

// Client talks to one ACME CA.
type Client struct {
	opts Options
	log  *slog.Logger
	gate *gate
	http *http.Client
	wire *wire.Client

	dirOnce sync.Mutex
	dir     *wire.Directory
}

// ReadRoots reads a PEM bundle of trusted roots from path, naming the file
// in any error.
func ReadRoots(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading root bundle: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("root bundle %s holds no PEM certificate", path)
	}
	return data, nil
}

// New returns a client for opts.Directory. It does not contact the CA.
func New(opts Options) (*Client, error) {
	if opts.Directory == "" {
		return nil, errors.New("no ACME directory URL given")
	}
	u, err := url.Parse(opts.Directory)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("ACME directory %q is not an http(s) URL; give a URL such as https://acme-v02.api.letsencrypt.org/directory or a shortcut such as letsencrypt", opts.Directory)
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	if opts.MaxRetryWait <= 0 {
		opts.MaxRetryWait = time.Minute
	}
	if opts.PollMin <= 0 {
		opts.PollMin = 5 * time.Millisecond
	}
	if opts.PollMax <= 0 {
		opts.PollMax = 2 * time.Second
	}
	if opts.PollTimeout <= 0 {
		opts.PollTimeout = 5 * time.Minute
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var base http.RoundTripper
	if opts.HTTPClient != nil && opts.HTTPClient.Transport != nil {
		base = opts.HTTPClient.Transport
	} else {
		t := defaultTransport()
		if len(opts.RootsPEM) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(opts.RootsPEM) {
				return nil, errors.New("the CA root bundle holds no PEM certificate")
			}
			t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		base = t
	}
	g := newGate(base, opts.MaxRetryWait)
	hc := &http.Client{Transport: g, Timeout: opts.RequestTimeout}
	ua := "detour/" + Version
	if opts.UserAgent != "" {
		ua = opts.UserAgent + " " + ua
	}
	return &Client{
		opts: opts,
		log:  log,
		gate: g,
		http: hc,
		wire: &wire.Client{
			Directory:  opts.Directory,
			HTTPClient: hc,
			UserAgent:  ua,
			// Only FinalizeOrder polls inside acmez; see Finalize.
			PollInterval: opts.PollMin,
			PollTimeout:  opts.PollTimeout,
			Logger:       slog.New(demote{log.Handler()}).With("component", "acmez"),
		},
	}, nil
}

// Version is reported in the User-Agent.
var Version = "dev"

// DirectoryURL returns the CA's directory URL.
func (c *Client) DirectoryURL() string { return c.opts.Directory }

// Directory fetches (once) and returns the CA's directory. Errors say what
// answered instead of an ACME directory, so a mistyped URL is obvious.
func (c *Client) Directory(ctx context.Context) (wire.Directory, error) {
	c.dirOnce.Lock()
	defer c.dirOnce.Unlock()
	if c.dir != nil {
		return *c.dir, nil
	}
	d, err := c.fetchDirectory(ctx)
	if err != nil {
		return wire.Directory{}, fmt.Errorf("fetching ACME directory %s: %w", c.opts.Directory, err)
	}
	c.dir = &d
	return d, nil
}

func (c *Client) fetchDirectory(ctx context.Context) (wire.Directory, error) {
	var d wire.Directory
	var lastErr error
	for attempt := range 3 {
		if attempt > 0 {
			if err := sleep(ctx, time.Duration(attempt)*250*time.Millisecond); err != nil {
				return d, errors.Join(lastErr, err)
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.opts.Directory, nil)
		if err != nil {
			return d, err
		}
		req.Header.Set("User-Agent", c.wire.UserAgent)
		resp, err := c.http.Do(req)
		if err != nil {
			lastErr = err // explained by the gate (see NetworkError)
			// A timeout already cost RequestTimeout; retrying would multiply it.
			var ra *RetryAfterError
			var ne net.Error
			if errors.As(err, &ra) || ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
				return d, lastErr
			}
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			lastErr = fmt.Errorf("reading the answer: %w", err)
			continue
		}
		mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if resp.StatusCode == http.StatusTooManyRequests {
			// The gate holds (or refuses) the retry per Retry-After.
			lastErr = fmt.Errorf("the server answered HTTP 429%s; the CA is limiting requests, try again later", snippet(mt, body))
			continue
		}
		if resp.StatusCode >= 500 {
			lastErr = fmt.Errorf("the server answered HTTP %d%s; the CA may be down, try again later", resp.StatusCode, snippet(mt, body))
			continue
		}
		if resp.StatusCode != http.StatusOK {
			return d, fmt.Errorf("the server answered HTTP %d%s; check the URL (it usually ends in /directory)", resp.StatusCode, snippet(mt, body))
		}
		if mt != "application/json" && !json.Valid(body) {
			return d, fmt.Errorf("the server answered with %s, not an ACME directory (JSON)%s; check the URL (it usually ends in /directory)", orUnknown(mt), snippet(mt, body))
		}
		if err := json.Unmarshal(body, &d); err != nil {
			return d, fmt.Errorf("the answer is not valid ACME directory JSON (%v); check the URL", err)
		}
		if d.NewNonce == "" || d.NewAccount == "" || d.NewOrder == "" {
			return d, errors.New("the JSON answered lacks newNonce, newAccount or newOrder, so it is not an ACME directory; check the URL")
		}
		return d, nil
	}
	return d, lastErr
}

func orUnknown(mt string) string {
	if mt == "" {
		return "no content type"
	}
	return mt
}

// snippet quotes the start of a non-JSON body for an error message.
func snippet(mt string, body []byte) string {
	s := strings.TrimSpace(string(body))
	if s == "" {
		return ""
	}
	if mt == "text/html" {
		if i := strings.Index(strings.ToLower(s), "<title>"); i >= 0 {
			rest := s[i+7:]
			if j := strings.Index(strings.ToLower(rest), "</title>"); j >= 0 {
				return fmt.Sprintf(" (an HTML page titled %q)", strings.TrimSpace(rest[:j]))
			}
		}
	}
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return fmt.Sprintf(": %q", s)
}

// Profiles returns the CA's profiles (name -> description) from the
// directory's meta.profiles.
func (c *Client) Profiles(ctx context.Context) (map[string]string, error) {
	d, err := c.Directory(ctx)
	if err != nil {
		return nil, err
	}
	if d.Meta == nil {
		return nil, nil
	}
	return d.Meta.Profiles, nil
}

// CheckProfile returns an error listing the CA's profiles when name is not
// one of them. The empty name is always accepted.
func (c *Client) CheckProfile(ctx context.Context, name string) error {
	if name == "" {
		return nil
	}
	profiles, err := c.Profiles(ctx)
	if err != nil {
		return err
	}
	if _, ok := profiles[name]; ok {
		return nil
	}
	if len(profiles) == 0 {
		return fmt.Errorf("profile %q: the CA at %s offers no profiles; remove the profile setting", name, c.opts.Directory)
	}
	names := make([]string, 0, len(profiles))
	for n, desc := range profiles {
		if desc != "" {
			n += " (" + desc + ")"
		}
		names = append(names, n)
	}
	slices.Sort(names)
	return fmt.Errorf("profile %q is not offered by the CA at %s; it offers: %s", name, c.opts.Directory, strings.Join(names, ", "))
}

// TermsOfService returns the CA's terms of service URL, if any.
func (c *Client) TermsOfService(ctx context.Context) (string, error) {
	d, err := c.Directory(ctx)
	if err != nil || d.Meta == nil {
		return "", err
	}
	return d.Meta.TermsOfService, nil
}

// RequiresEAB reports whether the CA requires External Account Binding.
func (c *Client) RequiresEAB(ctx context.Context) (bool, error) {
	d, err := c.Directory(ctx)
	if err != nil || d.Meta == nil {
		return false, err
	}
	return d.Meta.ExternalAccountRequired, nil
}
