package acme

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mholt/acmez/v3"
	wire "github.com/mholt/acmez/v3/acme"

	"github.com/detour-acme/detour/internal/ident"
)

// Wire types used by callers.
type (
	Order         = wire.Order
	Authorization = wire.Authorization
	Challenge     = wire.Challenge
	RenewalInfo   = wire.RenewalInfo
)

// OrderRequest describes a new order (RFC 8555 §7.4).
type OrderRequest struct {
	Identifiers []ident.Identifier
	Profile     string // optional; checked against the directory
	Replaces    string // ARI unique identifier of the certificate replaced (RFC 9773 §5)
}

// NewOrder creates an order. An unknown profile fails before the order is
// sent. When the CA rejects "replaces" (the old certificate was already
// replaced, or the CA does not know it), the order is retried without it.
func (c *Client) NewOrder(ctx context.Context, acct Account, req OrderRequest) (Order, error) {
	if err := c.CheckProfile(ctx, req.Profile); err != nil {
		return Order{}, err
	}
	d, err := c.Directory(ctx)
	if err != nil {
		return Order{}, err
	}
	o := Order{Profile: req.Profile}
	for _, id := range req.Identifiers {
		o.Identifiers = append(o.Identifiers, wire.Identifier{Type: id.Type, Value: id.Value})
	}
	if d.RenewalInfo != "" {
		o.Replaces = req.Replaces
	}
	out, err := c.wire.NewOrder(ctx, acct, o)
	// "replaces" is advisory (RFC 9773 §5): when the CA rejects it for any
	// reason (already replaced, unknown to it — Pebble answers
	// serverInternal for certificates whose serial starts with a zero
	// byte), order again without it rather than fail every renewal.
	var p wire.Problem
	if err != nil && o.Replaces != "" && errors.As(err, &p) && p.Type != wire.ProblemTypeRateLimited && p.Type != wire.ProblemTypeUnauthorized {
		c.log.WarnContext(ctx, "CA refused the replaces field; ordering without it", "replaces", o.Replaces, "error", err)
		o.Replaces = ""
		out, err = c.wire.NewOrder(ctx, acct, o)
	}
	if err != nil {
		return Order{}, fmt.Errorf("creating order: %w", err)
	}
	return out, nil
}

// Authorization fetches one authorization.
func (c *Client) Authorization(ctx context.Context, acct Account, authzURL string) (Authorization, error) {
	a, err := c.wire.GetAuthorization(ctx, acct, authzURL)
	if err != nil {
		return a, fmt.Errorf("fetching authorization %s: %w", authzURL, err)
	}
	return a, nil
}

// Accept tells the CA the challenge is ready to be validated (§7.5.1).
func (c *Client) Accept(ctx context.Context, acct Account, ch Challenge) error {
	if _, err := c.wire.InitiateChallenge(ctx, acct, ch); err != nil {
		return fmt.Errorf("asking the CA to validate %s for %s: %w", ch.Type, ch.Identifier.Value, err)
	}
	return nil
}

// Deactivate authorization relinquishes an authorization the client will not
// use (§7.5.2); errors are only worth logging.
func (c *Client) DeactivateAuthorization(ctx context.Context, acct Account, authzURL string) error {
	_, err := c.wire.DeactivateAuthorization(ctx, acct, authzURL)
	return err
}

// ValidationError is returned when the CA's validation of a challenge
// failed; Problem holds the CA's explanation.
type ValidationError struct {
	Identifier string
	Challenge  string
	Problem    *wire.Problem
}

func (e *ValidationError) Error() string {
	if e.Problem == nil {
		return fmt.Sprintf("the CA could not validate %s with %s", e.Identifier, e.Challenge)
	}
	return fmt.Sprintf("the CA could not validate %s with %s: %s", e.Identifier, e.Challenge, e.Problem.Detail)
}

// Unwrap returns the problem document.
func (e *ValidationError) Unwrap() error {
	if e.Problem == nil {
		return nil
	}
	return *e.Problem
}

// WaitAuthorization polls an authorization until it is valid or failed.
// Polls follow the CA's Retry-After; without one they start at PollMin and
// double up to PollMax.
func (c *Client) WaitAuthorization(ctx context.Context, acct Account, authzURL string) (Authorization, error) {
	a, _, err := c.WaitAuthorizationPolls(ctx, acct, authzURL)
	return a, err
}

// WaitAuthorizationPolls is WaitAuthorization that also returns how many
// times the authorization was fetched (the polls that answered, the last
// one included), for progress displays.
func (c *Client) WaitAuthorizationPolls(ctx context.Context, acct Account, authzURL string) (Authorization, int, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.PollTimeout)
	defer cancel()
	delay := c.opts.PollMin
	polls := 0
	for {
		a, err := c.wire.GetAuthorization(ctx, acct, authzURL)
		if err != nil {
			return a, polls, fmt.Errorf("polling authorization: %w", err)
		}
		polls++
		switch a.Status {
		case wire.StatusValid:
			return a, polls, nil
		case wire.StatusPending, wire.StatusProcessing:
		default:
			verr := &ValidationError{Identifier: a.IdentifierValue(), Challenge: "?"}
			for _, ch := range a.Challenges {
				if ch.Status == wire.StatusInvalid || ch.Error != nil {
					verr.Challenge = ch.Type
					verr.Problem = ch.Error
					break
				}
			}
			return a, polls, verr
		}
		if err := sleep(ctx, c.nextPoll(authzURL, &delay)); err != nil {
			return a, polls, fmt.Errorf("waiting for the CA to validate %s: %w", a.IdentifierValue(), err)
		}
	}
}

// nextPoll returns how long to wait before polling url again and advances
// the backoff.
func (c *Client) nextPoll(url string, delay *time.Duration) time.Duration {
	d := *delay
	*delay = min(2*d, c.opts.PollMax)
	if ra, ok := c.gate.hint(url); ok {
		if w := time.Until(ra); w > d {
			return min(w, c.opts.PollTimeout)
		}
	}
	return d
}

// Finalize submits the CSR (§7.4) and waits until the certificate is
// issued, polling as WaitAuthorization does.
func (c *Client) Finalize(ctx context.Context, acct Account, o Order, csrDER []byte) (Order, error) {
	// acmez's FinalizeOrder polls at a fixed interval (PollMin, or the CA's
	// Retry-After). Give it a short budget, then continue with backoff here.
	fctx, cancel := context.WithTimeout(ctx, c.opts.PollTimeout)
	defer cancel()
	out, err := c.finalizeShort(fctx, acct, o, csrDER)
	if err == nil {
		return out, nil
	}
	if out.Status != wire.StatusProcessing || out.Location == "" {
		if out.Status == wire.StatusInvalid && out.Error != nil {
			return out, fmt.Errorf("finalizing order: the CA refused to issue: %w", *out.Error)
		}
		return out, fmt.Errorf("finalizing order: %w", err)
	}
	delay := 4 * c.opts.PollMin
	for out.Status == wire.StatusProcessing {
		if err := sleep(fctx, c.nextPoll(out.Location, &delay)); err != nil {
			return out, fmt.Errorf("waiting for the certificate: %w", err)
		}
		out, err = c.wire.GetOrder(fctx, acct, out)
		if err != nil {
			return out, fmt.Errorf("polling order: %w", err)
		}
	}
	switch out.Status {
	case wire.StatusValid:
		return out, nil
	case wire.StatusInvalid:
		if out.Error != nil {
			return out, fmt.Errorf("the CA refused to issue: %w", *out.Error)
		}
	}
	return out, fmt.Errorf("order ended in state %q", out.Status)
}

// finalizeShort runs acmez's FinalizeOrder with a poll budget of a few
// PollMin intervals; on timeout it returns the order in "processing".
func (c *Client) finalizeShort(ctx context.Context, acct Account, o Order, csrDER []byte) (Order, error) {
	short := &wire.Client{
		Directory: c.wire.Directory, HTTPClient: c.wire.HTTPClient, UserAgent: c.wire.UserAgent,
		PollInterval: c.opts.PollMin, PollTimeout: 8 * c.opts.PollMin, Logger: c.wire.Logger,
	}
	out, err := short.FinalizeOrder(ctx, acct, o, csrDER)
	if err != nil && out.Status == "" {
		out.Status = o.Status
	}
	return out, err
}

// CSR builds a DER certificate request for ids signed by key.
func CSR(key crypto.Signer, ids []ident.Identifier) ([]byte, error) {
	csr, err := acmez.NewCSR(key, ident.Values(ids))
	if err != nil {
		return nil, fmt.Errorf("creating CSR: %w", err)
	}
	return csr.Raw, nil
}

// Chain downloads the issued certificate. When the CA offers alternate
// chains (Link rel="alternate", §7.4.2) and preferred is set, the chain whose
// topmost certificate is issued by (or is) a CA of that common name is
// chosen; otherwise the CA's default chain. It returns the leaf PEM and the
// rest of the chain PEM separately.
//
// The CA's renewal information for the certificate (RFC 9773), which the
// download fetches along the way, is returned too when the CA offers it.
func (c *Client) Chain(ctx context.Context, acct Account, certURL, preferred string) (leafPEM, chainPEM []byte, ri *RenewalInfo, err error) {
	chains, err := c.wire.GetCertificateChain(ctx, acct, certURL)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("downloading certificate: %w", err)
	}
	if len(chains) == 0 {
		return nil, nil, nil, errors.New("downloading certificate: the CA returned no chain")
	}
	pick := chains[0]
	if preferred != "" {
		found := false
		for _, ch := range chains {
			if chainMatches(ch.ChainPEM, preferred) {
				pick, found = ch, true
				break
			}
		}
		if !found {
			c.log.WarnContext(ctx, "no chain matches the preferred issuer; using the CA's default", "preferred_chain", preferred, "offered", chainNames(chains))
		}
	}
	leafPEM, chainPEM, err = splitLeaf(pick.ChainPEM)
	if pick.RenewalInfo != nil && pick.RenewalInfo.SuggestedWindow.End.After(pick.RenewalInfo.SuggestedWindow.Start) {
		ri = pick.RenewalInfo
	}
	return leafPEM, chainPEM, ri, err
}

// Close releases idle connections to the CA.
func (c *Client) Close() { c.http.CloseIdleConnections() }

func chainMatches(chainPEM []byte, name string) bool {
	certs := parseCerts(chainPEM)
	if len(certs) == 0 {
		return false
	}
	top := certs[len(certs)-1]
	return strings.EqualFold(top.Issuer.CommonName, name) || strings.EqualFold(top.Subject.CommonName, name)
}

func chainNames(chains []wire.Certificate) []string {
	var out []string
	for _, ch := range chains {
		certs := parseCerts(ch.ChainPEM)
		if len(certs) > 0 {
			out = append(out, certs[len(certs)-1].Issuer.CommonName)
		}
	}
	return out
}

func parseCerts(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// splitLeaf separates the first certificate from the rest.
func splitLeaf(chainPEM []byte) ([]byte, []byte, error) {
	b, rest := pem.Decode(chainPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, nil, errors.New("the CA's chain does not start with a PEM certificate")
	}
	if _, err := x509.ParseCertificate(b.Bytes); err != nil {
		return nil, nil, fmt.Errorf("parsing the issued certificate: %w", err)
	}
	return pem.EncodeToMemory(b), []byte(strings.TrimLeft(string(rest), "\r\n")), nil
}

// RenewalInfo fetches the CA's suggested renewal window for leaf (RFC 9773
// §4.1: an unauthenticated GET of renewalInfo/<unique identifier>), with
// the Retry-After the CA sends. It returns ErrUnsupported (wrapped) when
// the CA has no renewalInfo endpoint. The window is accepted when its end
// is after its start; a window in the past means "renew now" (Pebble and
// Let's Encrypt answer a revoked certificate with a one-second window an
// hour ago) and is returned as is. One request, no retry: the caller polls
// again later (acmez's own GetRenewalInfo retries twice, sleeping 2 s and
// 5 s, and refuses windows of one second).
func (c *Client) RenewalInfo(ctx context.Context, leaf *x509.Certificate) (RenewalInfo, error) {
	d, err := c.Directory(ctx)
	if err != nil {
		return RenewalInfo{}, err
	}
	if d.RenewalInfo == "" {
		return RenewalInfo{}, fmt.Errorf("%w: the CA's directory has no renewalInfo", wire.ErrUnsupported)
	}
	id, err := wire.ARIUniqueIdentifier(leaf)
	if err != nil {
		return RenewalInfo{}, fmt.Errorf("computing the certificate's ARI identifier: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(d.RenewalInfo, "/")+"/"+id, nil)
	if err != nil {
		return RenewalInfo{}, err
	}
	req.Header.Set("User-Agent", "detour/"+Version)
	resp, err := c.http.Do(req)
	if err != nil {
		return RenewalInfo{}, fmt.Errorf("fetching renewal info: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return RenewalInfo{}, fmt.Errorf("reading renewal info: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return RenewalInfo{}, fmt.Errorf("fetching renewal info: %s: %.200s", resp.Status, body)
	}
	var ri RenewalInfo
	if err := json.Unmarshal(body, &ri); err != nil {
		return RenewalInfo{}, fmt.Errorf("decoding renewal info: %w", err)
	}
	if !ri.SuggestedWindow.End.After(ri.SuggestedWindow.Start) {
		return RenewalInfo{}, fmt.Errorf("the CA's renewal window is empty or reversed (%s to %s); ignoring it", ri.SuggestedWindow.Start, ri.SuggestedWindow.End)
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

// ErrUnsupported reports a feature the CA does not offer.
var ErrUnsupported = wire.ErrUnsupported

// ARIID returns the RFC 9773 unique identifier of leaf.
func ARIID(leaf *x509.Certificate) (string, error) { return wire.ARIUniqueIdentifier(leaf) }

// Revocation reasons (RFC 5280 §5.3.1) accepted by name.
var RevocationReasons = map[string]int{
	"unspecified":          wire.ReasonUnspecified,
	"keycompromise":        wire.ReasonKeyCompromise,
	"affiliationchanged":   wire.ReasonAffiliationChanged,
	"superseded":           wire.ReasonSuperseded,
	"cessationofoperation": wire.ReasonCessationOfOperation,
}

// ParseReason accepts a reason name (case and "-"/"_" insensitive) or code.
func ParseReason(s string) (int, error) {
	k := strings.ToLower(strings.NewReplacer("-", "", "_", "", " ", "").Replace(s))
	if r, ok := RevocationReasons[k]; ok {
		return r, nil
	}
	if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
		for _, r := range RevocationReasons {
			if r == n {
				return r, nil
			}
		}
	}
	names := make([]string, 0, len(RevocationReasons))
	for n := range RevocationReasons {
		names = append(names, n)
	}
	slices.Sort(names)
	return 0, fmt.Errorf("unknown revocation reason %q: use one of %s", s, strings.Join(names, ", "))
}

// Revoke revokes cert (§7.6). With certKey set, the request is signed by the
// certificate's own key (works without the issuing account); otherwise by the
// account.
func (c *Client) Revoke(ctx context.Context, acct Account, cert *x509.Certificate, certKey crypto.Signer, reason int) error {
	if _, err := c.Directory(ctx); err != nil {
		return err
	}
	if err := c.wire.RevokeCertificate(ctx, acct, cert, certKey, reason); err != nil {
		return fmt.Errorf("revoking certificate %s: %w", cert.SerialNumber.Text(16), err)
	}
	return nil
}

// Host returns the host part of the directory URL, used to name state.
func (c *Client) Host() string {
	u, _ := url.Parse(c.opts.Directory)
	return u.Host
}

// RetryAfter returns the time the CA asked Detour to wait until before
// contacting it again, if it did (429/503 with Retry-After).
func (c *Client) RetryAfter() time.Time { return c.gate.blockedUntil(c.Host()) }
