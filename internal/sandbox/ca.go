// Package sandbox runs a local ACME certificate authority and the pieces around it so
// that Detour's whole renewal flow can be rehearsed offline.
//
// The CA is Pebble (github.com/letsencrypt/pebble/v2) run in-process: its web front end
// speaks ACME (RFC 8555) including external account binding (RFC 8555 §7.3.4), ACME
// Renewal Information (RFC 9773) and certificate profiles
// (draft-aaron-acme-profiles), and its validation authority performs http-01
// (RFC 8555 §8.3), dns-01 (RFC 8555 §8.4) and tls-alpn-01 (RFC 8737) against ports and a
// DNS server chosen by the caller. Nothing it issues is trusted by anything but the
// caller: the API listener's certificate chains to a root generated at start
// ([CA.TLSRootsPEM]), and issued certificates chain to Pebble's own roots
// ([CA.IssuerRootsPEM]).
package sandbox

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// Names of the profiles a CA offers when [CAOptions.Profiles] is empty.
const (
	// ProfileTLSServer issues 90-day certificates, like a public CA's classic profile.
	ProfileTLSServer = "tlsserver"
	// ProfileShortLived issues 160-hour certificates, like a public CA's short-lived profile.
	ProfileShortLived = "shortlived"
	// DefaultProfileName is the profile a CA with default profiles reports as its default.
	DefaultProfileName = ProfileTLSServer
)

// DefaultCAAIdentity is the issuer domain name the CA announces in its directory
// (meta.caaIdentities) and in dns-persist-01 challenges unless
// [CAOptions.CAAIdentities] says otherwise.
const DefaultCAAIdentity = "pebble.letsencrypt.org"

// Timeouts of the CA's own servers and clients.
const (
	shutdownTimeout   = 5 * time.Second
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	clientTimeout     = 30 * time.Second
	dialTimeout       = 5 * time.Second
	maxChainLength    = 10
	maxRootDownload   = 1 << 20
)

// Profile is one certificate profile the CA offers (draft-aaron-acme-profiles).
type Profile struct {
	// Description is shown to clients in the directory's meta.profiles.
	Description string
	// Validity is the certificate lifetime, counted in whole seconds. Pebble sets
	// notAfter to notBefore + Validity - 1s, so the certificate covers exactly Validity
	// inclusive of both ends. Zero means Pebble's default of 90 days.
	Validity time.Duration
}

// DefaultProfiles returns the profiles a CA offers when [CAOptions.Profiles] is empty:
// [ProfileTLSServer] (90 days) and [ProfileShortLived] (160 hours).
func DefaultProfiles() map[string]Profile {
	return map[string]Profile{
		ProfileTLSServer: {
			Description: "Certificates for TLS servers, valid for 90 days",
			Validity:    90 * 24 * time.Hour,
		},
		ProfileShortLived: {
			Description: "Short-lived certificates, valid for 160 hours",
			Validity:    160 * time.Hour,
		},
	}
}

// CAOptions configures [StartCA]. The zero value starts a CA on loopback with the
// default profiles, validating through the system resolver on ports 80 and 443.
type CAOptions struct {
	// Logger receives the CA's own messages and, at debug level, Pebble's log.
	// Default: discard.
	Logger *slog.Logger

	// HTTPPort is the port the validation authority connects to for http-01.
	// Default 80; sandboxes normally pass the port of a listener they already hold.
	HTTPPort int
	// TLSPort is the port the validation authority connects to for tls-alpn-01.
	// Default 443.
	TLSPort int
	// DNSAddr is the host:port of the DNS server the validation authority resolves
	// names (and dns-01 TXT records) through, queried over TCP. Empty means the
	// host's system resolver, which cannot see sandbox names.
	DNSAddr string

	// Profiles are the certificate profiles offered, by name. Default: [DefaultProfiles].
	// Pebble picks a random profile for an order that names none, so clients should
	// always name one, normally [CA.DefaultProfile].
	Profiles map[string]Profile
	// DefaultProfile names the profile in Profiles that [CA.DefaultProfile] reports.
	// Required when Profiles has more than one entry; with default profiles it is
	// [DefaultProfileName].
	DefaultProfile string

	// RequireEAB makes newAccount fail without an external account binding.
	RequireEAB bool
	// EABKeys maps external account key IDs to base64url-encoded (unpadded) HMAC keys.
	EABKeys map[string]string

	// NonceRejectPercent is the share (0-100) of valid nonces the CA rejects with
	// badNonce, to exercise client retries. Default 0.
	NonceRejectPercent int
	// AlternateRoots is the number of extra issuance chains, each to its own root,
	// offered as alternate certificate chains (RFC 8555 §7.4.2).
	AlternateRoots int
	// ChainLength is the number of intermediates between a leaf and its root
	// (1-10). Default 1.
	ChainLength int

	// RetryAfterAuthz is the Retry-After hint, in seconds, on pending authorizations
	// (0 = none).
	RetryAfterAuthz int
	// RetryAfterOrder is the Retry-After hint, in seconds, on processing orders
	// (0 = none).
	RetryAfterOrder int

	// CAAIdentities are the issuer domain names announced in the directory and in
	// dns-persist-01 challenges. Default: [DefaultCAAIdentity].
	CAAIdentities []string

	// Addr is the listen address of the ACME API. Default "127.0.0.1:0".
	Addr string
	// ManagementAddr is the listen address of Pebble's management API (roots,
	// renewal info). Default "127.0.0.1:0".
	ManagementAddr string
}

// CA is a running in-process ACME certificate authority. Its methods are safe for
// concurrent use.
type CA struct {
	log            *slog.Logger
	directoryURL   string
	managementURL  string
	defaultProfile string
	numRoots       int
	tlsRootsPEM    []byte
	transport      *http.Transport

	api, mgmt *http.Server
	served    sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// envMu serialises the environment changes made while Pebble's constructors read it.
var envMu sync.Mutex

// StartCA validates opts, builds a Pebble CA, binds its ACME and management listeners
// and starts serving them over TLS. ctx bounds the start only; call [CA.Close] to stop.
//
// Pebble's validation authority and web front end read a few settings from the process
// environment when constructed; StartCA pins them (no random validation delay, no
// authorization reuse, the requested nonce rejection rate) for the duration of
// construction and restores the previous values afterwards. Even so, Pebble hands out
// an already valid authorization for a name the account validated before about 1% of
// the time, so clients must accept valid authorizations in new orders (RFC 8555 §7.1.3
// allows it). Each CA leaves one idle goroutine of Pebble's validation authority
// behind after Close.
func StartCA(ctx context.Context, opts CAOptions) (*CA, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("starting sandbox CA: %w", err)
	}

	var lc net.ListenConfig
	apiLn, err := lc.Listen(ctx, "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("binding ACME API listener on %s: %w", opts.Addr, err)
	}
	mgmtLn, err := lc.Listen(ctx, "tcp", opts.ManagementAddr)
	if err != nil {
		_ = apiLn.Close()
		return nil, fmt.Errorf("binding management API listener on %s: %w", opts.ManagementAddr, err)
	}
	closeListeners := func() {
		_ = apiLn.Close()
		_ = mgmtLn.Close()
	}

	rootPEM, leaf, err := newServingCert(apiLn.Addr(), mgmtLn.Addr())
	if err != nil {
		closeListeners()
		return nil, err
	}

	front, err := newPebble(opts)
	if err != nil {
		closeListeners()
		return nil, err
	}

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootPEM)
	c := &CA{
		log:            opts.Logger,
		directoryURL:   "https://" + urlHost(apiLn.Addr()) + wfe.DirectoryPath,
		managementURL:  "https://" + urlHost(mgmtLn.Addr()),
		defaultProfile: opts.DefaultProfile,
		numRoots:       1 + opts.AlternateRoots,
		tlsRootsPEM:    rootPEM,
		transport: &http.Transport{
			Proxy:                 nil, // the CA is local; never route it through a proxy
			DialContext:           (&net.Dialer{Timeout: dialTimeout}).DialContext,
			TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   dialTimeout,
			ResponseHeaderTimeout: clientTimeout,
			IdleConnTimeout:       idleTimeout,
		},
	}
	errLog := slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug)
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{
			Handler:           h,
			TLSConfig:         &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12},
			ReadHeaderTimeout: readHeaderTimeout,
			IdleTimeout:       idleTimeout,
			ErrorLog:          errLog,
		}
	}
	c.api = newServer(front.Handler())
	c.mgmt = newServer(front.ManagementHandler())
	c.serve(c.api, apiLn, "acme")
	c.serve(c.mgmt, mgmtLn, "management")

	c.log.Info("sandbox CA started",
		"directory", c.directoryURL,
		"management", c.managementURL,
		"http_port", opts.HTTPPort,
		"tls_port", opts.TLSPort,
		"dns", opts.DNSAddr,
		"default_profile", opts.DefaultProfile)
	return c, nil
}

// setDefaults fills in defaults and rejects options that cannot work.
func (o *CAOptions) setDefaults() error {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = 80
	}
	if o.TLSPort == 0 {
		o.TLSPort = 443
	}
	for name, p := range map[string]int{"HTTPPort": o.HTTPPort, "TLSPort": o.TLSPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("sandbox CA option %s is %d: use a port between 1 and 65535", name, p)
		}
	}
	if o.DNSAddr != "" {
		if _, port, err := net.SplitHostPort(o.DNSAddr); err != nil || port == "" {
			return fmt.Errorf("sandbox CA option DNSAddr %q: use host:port, e.g. 127.0.0.1:5353", o.DNSAddr)
		}
	}
	if len(o.Profiles) == 0 {
		o.Profiles = DefaultProfiles()
		if o.DefaultProfile == "" {
			o.DefaultProfile = DefaultProfileName
		}
	}
	if o.DefaultProfile == "" && len(o.Profiles) == 1 {
		for name := range o.Profiles {
			o.DefaultProfile = name
		}
	}
	names := make([]string, 0, len(o.Profiles))
	for name, p := range o.Profiles {
		if name == "" {
			return errors.New("sandbox CA option Profiles has an empty name: name every profile")
		}
		if p.Validity < 0 || (p.Validity > 0 && p.Validity < time.Second) {
			return fmt.Errorf("sandbox CA profile %q has validity %s: use at least 1s, or 0 for 90 days", name, p.Validity)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	if _, ok := o.Profiles[o.DefaultProfile]; !ok {
		return fmt.Errorf("sandbox CA option DefaultProfile %q: set it to one of the profiles %q", o.DefaultProfile, names)
	}
	if o.RequireEAB && len(o.EABKeys) == 0 {
		return errors.New("sandbox CA option RequireEAB is set without EABKeys: add at least one key or no account can register")
	}
	if o.NonceRejectPercent < 0 || o.NonceRejectPercent > 100 {
		return fmt.Errorf("sandbox CA option NonceRejectPercent is %d: use 0-100", o.NonceRejectPercent)
	}
	if o.AlternateRoots < 0 {
		return fmt.Errorf("sandbox CA option AlternateRoots is %d: use 0 or more", o.AlternateRoots)
	}
	if o.ChainLength == 0 {
		o.ChainLength = 1
	}
	if o.ChainLength < 1 || o.ChainLength > maxChainLength {
		return fmt.Errorf("sandbox CA option ChainLength is %d: use 1-%d intermediates", o.ChainLength, maxChainLength)
	}
	if o.RetryAfterAuthz < 0 || o.RetryAfterOrder < 0 {
		return errors.New("sandbox CA options RetryAfterAuthz and RetryAfterOrder must not be negative: use 0 for no hint")
	}
	if len(o.CAAIdentities) == 0 {
		o.CAAIdentities = []string{DefaultCAAIdentity}
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.ManagementAddr == "" {
		o.ManagementAddr = "127.0.0.1:0"
	}
	return nil
}

// newPebble wires Pebble's database, CA, validation authority and web front end.
func newPebble(opts CAOptions) (front *wfe.WebFrontEndImpl, err error) {
	// Pebble panics when it cannot generate a key; report that as an error.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("constructing Pebble: %v", r)
		}
	}()

	logger := slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug)
	store := db.NewMemoryStore()
	for kid, key := range opts.EABKeys {
		if err := store.AddExternalAccountKeyByID(kid, key); err != nil {
			return nil, fmt.Errorf("adding external account key %q (use an unpadded base64url HMAC key): %w", kid, err)
		}
	}

	profiles := make(map[string]ca.Profile, len(opts.Profiles))
	for name, p := range opts.Profiles {
		profiles[name] = ca.Profile{
			Description:    p.Description,
			ValidityPeriod: uint64(p.Validity / time.Second),
		}
	}
	authority := ca.New(logger, store, "", "ecdsa", opts.AlternateRoots, opts.ChainLength, profiles)

	restore := pinEnv(map[string]string{
		"PEBBLE_VA_NOSLEEP":      "1",
		"PEBBLE_VA_SLEEPTIME":    "",
		"PEBBLE_VA_ALWAYS_VALID": "",
		"PEBBLE_WFE_NONCEREJECT": strconv.Itoa(opts.NonceRejectPercent),
		// 0 still reuses a valid authorization of the same account about
		// 1 % of the time (wfe.go: rand.Intn(100) > percent): a test that
		// needs the CA to validate a name again must use a new name.
		"PEBBLE_AUTHZREUSE":          "0",
		"PEBBLE_WFE_ORDERS_PER_PAGE": "",
	})
	defer restore()
	validator := va.New(logger, opts.HTTPPort, opts.TLSPort, false, opts.DNSAddr, store)
	f := wfe.New(logger, store, validator, authority, slices.Clone(opts.CAAIdentities),
		false, opts.RequireEAB, opts.RetryAfterAuthz, opts.RetryAfterOrder)
	return &f, nil
}

// pinEnv sets the environment variables in vars (an empty value unsets one) while
// holding envMu, and returns a function that restores their previous state and
// releases envMu.
func pinEnv(vars map[string]string) (restore func()) {
	envMu.Lock()
	type saved struct {
		value string
		set   bool
	}
	old := make(map[string]saved, len(vars))
	for k, v := range vars {
		prev, set := os.LookupEnv(k)
		old[k] = saved{prev, set}
		if v == "" {
			_ = os.Unsetenv(k)
		} else {
			_ = os.Setenv(k, v)
		}
	}
	return func() {
		defer envMu.Unlock()
		for k, s := range old {
			if s.set {
				_ = os.Setenv(k, s.value)
			} else {
				_ = os.Unsetenv(k)
			}
		}
	}
}

// serve runs srv on ln over TLS until Close.
func (c *CA) serve(srv *http.Server, ln net.Listener, name string) {
	c.served.Add(1)
	go func() {
		defer c.served.Done()
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.log.Error("sandbox CA server stopped", "server", name, "addr", ln.Addr().String(), "error", err)
		}
	}()
}

// DirectoryURL returns the ACME directory URL, https://127.0.0.1:PORT/dir.
func (c *CA) DirectoryURL() string { return c.directoryURL }

// ManagementURL returns the base URL of Pebble's management API, https://127.0.0.1:PORT.
func (c *CA) ManagementURL() string { return c.managementURL }

// DefaultProfile returns the name of the profile clients should request when they have
// no preference.
func (c *CA) DefaultProfile() string { return c.defaultProfile }

// TLSRootsPEM returns the PEM root certificate that signs the ACME and management
// listeners' certificate. Clients of the API trust it; it has nothing to do with the
// certificates the CA issues (see [CA.IssuerRootsPEM]).
func (c *CA) TLSRootsPEM() []byte { return bytes.Clone(c.tlsRootsPEM) }

// WriteTLSRoots writes [CA.TLSRootsPEM] to path, replacing it atomically, for clients
// in other processes (e.g. a CA bundle option).
func (c *CA) WriteTLSRoots(path string) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing sandbox TLS roots: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(c.tlsRootsPEM)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp, 0o644)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing sandbox TLS roots to %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing sandbox TLS roots to %s: %w", path, err)
	}
	return nil
}

// HTTPClient returns an HTTP client that trusts [CA.TLSRootsPEM], ignores proxy
// settings and has timeouts. Clients share one transport, closed by [CA.Close].
func (c *CA) HTTPClient() *http.Client {
	return &http.Client{Transport: c.transport, Timeout: clientTimeout}
}

// IssuerRootsPEM fetches the root certificates of the CA's issuance chains (one plus
// [CAOptions.AlternateRoots]) from the management API, concatenated as PEM. This is
// what a browser or TLS client would need to trust to accept issued certificates.
func (c *CA) IssuerRootsPEM(ctx context.Context) ([]byte, error) {
	var out bytes.Buffer
	for i := range c.numRoots {
		body, err := c.management(ctx, http.MethodGet, wfe.RootCertPath+strconv.Itoa(i), nil)
		if err != nil {
			return nil, fmt.Errorf("fetching sandbox issuer root %d: %w", i, err)
		}
		if block, _ := pem.Decode(body); block == nil || block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("fetching sandbox issuer root %d: response is not a PEM certificate", i)
		}
		out.Write(body)
	}
	return out.Bytes(), nil
}

// SetRenewalInfo makes the CA's renewalInfo resource (RFC 9773 §4.2) suggest the
// window [start, end] for the certificate that is the first PEM block of certPEM
// (a leaf or a chain starting with it). The certificate must have been issued by
// this CA.
func (c *CA) SetRenewalInfo(ctx context.Context, certPEM []byte, start, end time.Time) error {
	if !end.After(start) {
		return fmt.Errorf("setting renewal info: window end %s is not after start %s", end, start)
	}
	if block, _ := pem.Decode(certPEM); block == nil || block.Type != "CERTIFICATE" {
		return errors.New("setting renewal info: certPEM does not start with a PEM CERTIFICATE block")
	}
	var window struct {
		SuggestedWindow struct {
			Start time.Time `json:"start"`
			End   time.Time `json:"end"`
		} `json:"suggestedWindow"`
	}
	window.SuggestedWindow.Start = start.UTC().Truncate(time.Second)
	window.SuggestedWindow.End = end.UTC().Truncate(time.Second)
	ari, err := json.Marshal(window)
	if err != nil {
		return fmt.Errorf("encoding renewal info: %w", err)
	}
	body, err := json.Marshal(struct {
		Certificate string
		ARIResponse string
	}{string(certPEM), string(ari)})
	if err != nil {
		return fmt.Errorf("encoding renewal info request: %w", err)
	}
	if _, err := c.management(ctx, http.MethodPost, "/set-renewal-info/", body); err != nil {
		return fmt.Errorf("setting renewal info: %w", err)
	}
	return nil
}

// management sends one request to the management API and returns the body of a 200
// response.
func (c *CA) management(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.managementURL+path, rd)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	// Pebble rejects requests without a User-Agent (RFC 8555 §6.1).
	req.Header.Set("User-Agent", "detour-sandbox")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRootDownload))
	if err != nil {
		return nil, fmt.Errorf("reading %s %s response: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
	}
	return data, nil
}

// Close shuts both listeners down, waiting up to a few seconds for requests in flight,
// and releases their ports. It is safe to call more than once.
func (c *CA) Close() error {
	c.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		// Idle connections of our own clients go first, so that Shutdown need not wait
		// for them.
		c.transport.CloseIdleConnections()
		var errs []error
		for _, srv := range []*http.Server{c.api, c.mgmt} {
			if err := srv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("shutting down sandbox CA server: %w", err))
				_ = srv.Close()
			}
		}
		c.served.Wait()
		c.transport.CloseIdleConnections()
		c.closeErr = errors.Join(errs...)
		c.log.Info("sandbox CA stopped", "directory", c.directoryURL)
	})
	return c.closeErr
}

// urlHost returns the host:port for a URL reaching addr, using loopback for an
// unspecified (all interfaces) address.
func urlHost(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	ip := tcp.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(tcp.Port))
}

// newServingCert generates a fresh ECDSA root and a leaf for localhost, 127.0.0.1, ::1
// and the listeners' own addresses, and returns the root as PEM and the leaf as a
// tls.Certificate carrying the chain.
func newServingCert(addrs ...net.Addr) ([]byte, tls.Certificate, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("generating sandbox TLS root key: %w", err)
	}
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Detour sandbox API root " + now.UTC().Format(time.RFC3339)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("creating sandbox TLS root: %w", err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("parsing sandbox TLS root: %w", err)
	}

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("generating sandbox TLS key: %w", err)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, a := range addrs {
		if tcp, ok := a.(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() &&
			!slices.ContainsFunc(ips, tcp.IP.Equal) {
			ips = append(ips, tcp.IP)
		}
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, root, leafKey.Public(), rootKey)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("creating sandbox TLS certificate: %w", err)
	}
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})
	return rootPEM, tls.Certificate{Certificate: [][]byte{leafDER, rootDER}, PrivateKey: leafKey}, nil
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() *big.Int {
	// rand.Int reads from crypto/rand, which never fails on supported platforms.
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	return n.Add(n, big.NewInt(1))
}
