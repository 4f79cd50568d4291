package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// NetworkKind says why a request got no answer from the CA.
type NetworkKind string

// The kinds of NetworkError.
const (
	// NetDNS: the CA's host name did not resolve.
	NetDNS NetworkKind = "dns"
	// NetRefused: nothing accepted the connection at the CA's address.
	NetRefused NetworkKind = "refused"
	// NetProxy: the HTTP(S) proxy from the environment could not be used.
	NetProxy NetworkKind = "proxy"
	// NetTimeout: no answer in time (connecting, the TLS handshake or the
	// response).
	NetTimeout NetworkKind = "timeout"
	// NetTLS: the CA's TLS certificate failed verification.
	NetTLS NetworkKind = "tls"
	// NetOther: any other failure to connect (network unreachable,
	// connection reset, ...).
	NetOther NetworkKind = "network"
)

// NetworkError reports that a request to a CA URL (its directory or any
// ACME resource) got no HTTP answer. Its message keeps the original error
// and adds what to check; Unwrap returns the original error, so errors.Is
// and errors.As still find a *net.DNSError, *net.OpError,
// x509.UnknownAuthorityError, context.DeadlineExceeded and so on.
type NetworkError struct {
	URL  string      // the URL requested
	Kind NetworkKind // why it failed
	Err  error       // the transport's error
}

func (e *NetworkError) Error() string { return e.Err.Error() + "; " + e.advice() }

func (e *NetworkError) Unwrap() error { return e.Err }

// Timeout reports a request that got no answer in time; with Temporary it
// makes *NetworkError a net.Error, as the transport's error was, so that
// (*url.Error).Timeout still sees it.
func (e *NetworkError) Timeout() bool { return e.Kind == NetTimeout }

// Temporary is false: see net.Error.
func (e *NetworkError) Temporary() bool { return false }

// LogValue logs the URL, the kind and the original error apart.
func (e *NetworkError) LogValue() slog.Value {
	return slog.GroupValue(slog.String("url", e.URL), slog.String("kind", string(e.Kind)), slog.String("error", e.Err.Error()))
}

var _ net.Error = (*NetworkError)(nil)

// Hints shared by several kinds.
const (
	hintURL   = "the URL for a typo (a built-in CA can be named by its shortcut instead, such as letsencrypt or letsencrypt-staging)"
	hintProxy = "whether outbound connections must go through an HTTP(S) proxy (set HTTPS_PROXY, and NO_PROXY for hosts to reach directly)"
)

// advice says which URL failed, how, and what to check.
func (e *NetworkError) advice() string {
	host, port := "the CA's host", "443"
	if u, err := url.Parse(e.URL); err == nil && u.Host != "" {
		host, port = u.Hostname(), u.Port()
		if port == "" && u.Scheme == "http" {
			port = "80"
		} else if port == "" {
			port = "443"
		}
	}
	var checks []string
	var what string
	switch e.Kind {
	case NetDNS:
		var de *net.DNSError
		if errors.As(e.Err, &de) && de.IsNotFound {
			what = fmt.Sprintf("the host name %s does not resolve", host)
		} else {
			what = fmt.Sprintf("looking up the host name %s failed", host)
		}
		checks = []string{hintURL,
			fmt.Sprintf("that this machine resolves %s (its DNS servers in /etc/resolv.conf; try `getent hosts %s`)", host, host),
			hintProxy}
	case NetRefused:
		what = fmt.Sprintf("nothing accepts connections on %s port %s", host, port)
		checks = []string{hintURL + " and its port",
			"that the CA is running (for a CA of your own)",
			fmt.Sprintf("that no firewall rejects outbound connections to port %s", port),
			hintProxy}
	case NetProxy:
		what = "the HTTP(S) proxy could not be reached"
		checks = []string{"the proxy settings in the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY)",
			"that the proxy is running and reachable"}
	case NetTimeout:
		what = fmt.Sprintf("no answer in time from %s port %s", host, port)
		checks = []string{hintURL,
			fmt.Sprintf("that no firewall drops outbound connections to port %s", port),
			hintProxy,
			"that this machine reaches the internet at all"}
	case NetTLS:
		var he x509.HostnameError
		var ie x509.CertificateInvalidError
		switch {
		case errors.As(e.Err, &he):
			what = fmt.Sprintf("the TLS certificate of %s is not valid for that name", host)
			checks = []string{"the URL for a typo: its host name must be one the certificate names (a built-in CA can be named by its shortcut instead, such as letsencrypt or letsencrypt-staging)"}
		case errors.As(e.Err, &ie) && ie.Reason == x509.Expired:
			what = fmt.Sprintf("the TLS certificate of %s is expired or not yet valid", host)
			checks = []string{"this machine's clock (`date -u`)"}
		default:
			return fmt.Sprintf("cannot reach the CA at %s: the TLS certificate of %s is not trusted; for a private CA, give its root bundle (root_bundle in the config or --ca-roots); otherwise check %s, and whether a proxy or firewall intercepts TLS (then give its root bundle)",
				e.URL, host, hintURL)
		}
		checks = append(checks, "whether a proxy or firewall intercepts TLS (then give its root bundle with --ca-roots or root_bundle)")
	default:
		what = fmt.Sprintf("%s port %s cannot be reached", host, port)
		checks = []string{hintURL,
			fmt.Sprintf("that this machine resolves %s", host),
			hintProxy,
			fmt.Sprintf("that no firewall blocks outbound connections to port %s", port)}
	}
	return fmt.Sprintf("cannot reach the CA at %s: %s; check %s", e.URL, what, joinChecks(checks))
}

// joinChecks joins "a", "b" and "c" as "a; b; and c".
func joinChecks(c []string) string {
	if len(c) < 2 {
		return strings.Join(c, "")
	}
	return strings.Join(c[:len(c)-1], "; ") + "; and " + c[len(c)-1]
}

// classify returns the kind of a transport error for req, or "" when it is
// not a network failure to explain: the caller's own cancellation, or a
// failure of another layer.
func classify(req *http.Request, err error) NetworkKind {
	if errors.Is(req.Context().Err(), context.Canceled) {
		return "" // the caller gave up: nothing to check
	}
	var (
		de *net.DNSError
		oe *net.OpError
		ne net.Error
	)
	switch {
	case errors.As(err, &oe) && oe.Op == "proxyconnect":
		return NetProxy
	case errors.As(err, &de):
		return NetDNS
	case isTLSVerify(err):
		return NetTLS
	case errors.Is(err, syscall.ECONNREFUSED):
		return NetRefused
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded) || pastDeadline(req):
		return NetTimeout
	case errors.As(err, &oe), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return NetOther
	}
	return ""
}

// pastDeadline reports whether req's context has a deadline that has
// passed: an http.Client's Timeout cancels the request at that deadline,
// and the transport may report it as a plain cancellation.
func pastDeadline(req *http.Request) bool {
	d, ok := req.Context().Deadline()
	return ok && !time.Now().Before(d)
}

// isTLSVerify reports a failed verification of the server's certificate.
func isTLSVerify(err error) bool {
	var (
		cv *tls.CertificateVerificationError
		ua x509.UnknownAuthorityError
		he x509.HostnameError
		ci x509.CertificateInvalidError
	)
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}

// explainNetwork wraps a transport error for req in a *NetworkError that
// says what to check, or returns it unchanged when it is not a network
// failure (or already explained).
func explainNetwork(req *http.Request, err error) error {
	var already *NetworkError
	if err == nil || errors.As(err, &already) {
		return err
	}
	kind := classify(req, err)
	if kind == "" {
		return err
	}
	return &NetworkError{URL: req.URL.String(), Kind: kind, Err: err}
}
