package persist

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// Meta is what the dns-persist-01 path needs from a CA's directory meta
// object (RFC 8555 §7.1.1).
type Meta struct {
	// CAAIdentities are the CA's CAA issuer domain names; draft-01 §4.5
	// lets a client pick the record's issuer domain name from them.
	CAAIdentities []string `json:"caaIdentities,omitempty"`
	// IssuerDomainNames is the draft-02 list of names usable in records
	// published before any order (§3.2).
	IssuerDomainNames []string `json:"issuerDomainNames,omitempty"`
	// AccountHashPrefix is the draft-02 prefix of hashed account URIs
	// (§4.1); its presence is how a CA announces draft-02.
	AccountHashPrefix string `json:"accountHashPrefix,omitempty"`
}

// Draft returns the draft the CA speaks: Draft02 when it announces an
// accountHashPrefix, else Draft01.
func (m Meta) Draft() Draft {
	if m.AccountHashPrefix != "" {
		return Draft02
	}
	return Draft01
}

// Issuers returns the names a record may carry, normalised
// (lower case, no trailing dot): the directory's issuerDomainNames under
// draft-02 (§3.2), else its caaIdentities (draft-01 §4.5).
func (m Meta) Issuers() []string {
	src := m.CAAIdentities
	if m.Draft() == Draft02 {
		// A missing list makes pre-provisioning unavailable (§3.2).
		src = m.IssuerDomainNames
	}
	out := make([]string, 0, len(src))
	for _, n := range src {
		if n = normalizeIssuer(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// Issuer returns the issuer domain name Detour puts in records for this CA:
// the first of Issuers.
func (m Meta) Issuer() (string, error) {
	names := m.Issuers()
	if len(names) == 0 {
		if m.Draft() == Draft02 {
			return "", errors.New("the CA's directory lists no issuerDomainNames, so no dns-persist-01 record can be prepared for it; use another path or CA")
		}
		return "", errors.New("the CA's directory lists no caaIdentities, so Detour cannot tell which issuer domain name its dns-persist-01 records need; use another path or CA")
	}
	return names[0], nil
}

func normalizeIssuer(n string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(n), "."))
}

// MetaOptions say how to reach a CA's directory.
type MetaOptions struct {
	// Directory is the ACME directory URL.
	Directory string
	// RootBundle is a PEM file of roots to trust for the CA's API; empty
	// means the system roots. Ignored when HTTPClient is set.
	RootBundle string
	// HTTPClient overrides the client entirely.
	HTTPClient *http.Client
}

// FetchMeta fetches the directory and returns its meta object.
func FetchMeta(ctx context.Context, opts MetaOptions) (Meta, error) {
	hc := opts.HTTPClient
	if hc == nil {
		var err error
		if hc, err = httpClient(opts.RootBundle); err != nil {
			return Meta{}, err
		}
		defer hc.CloseIdleConnections()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, opts.Directory, nil)
	if err != nil {
		return Meta{}, fmt.Errorf("fetching ACME directory %s: %w", opts.Directory, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Meta{}, fmt.Errorf("fetching ACME directory %s: %w", opts.Directory, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Meta{}, fmt.Errorf("reading ACME directory %s: %w", opts.Directory, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Meta{}, fmt.Errorf("fetching ACME directory %s: HTTP %d; check the CA's directory URL", opts.Directory, resp.StatusCode)
	}
	var dir struct {
		Meta Meta `json:"meta"`
	}
	if err := json.Unmarshal(body, &dir); err != nil {
		return Meta{}, fmt.Errorf("ACME directory %s is not JSON (%v); check the URL", opts.Directory, err)
	}
	return dir.Meta, nil
}

func httpClient(rootBundle string) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if rootBundle != "" {
		pemData, err := os.ReadFile(rootBundle)
		if err != nil {
			return nil, fmt.Errorf("reading the CA root bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("CA root bundle %s holds no PEM certificate", rootBundle)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t, Timeout: 30 * time.Second}, nil
}
