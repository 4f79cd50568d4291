package selfcheck

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/detour-acme/detour/internal/solve"
)

// userAgent is sent with every request; some firewalls and mod_security
// rules reject requests without one.
const userAgent = "Mozilla/5.0 (compatible; Detour ACME self-check)"

// maxBody is how much of a response body is read; a key authorization is
// well under it.
const maxBody = 1024

// trailingSpace is the whitespace ignored at the end of an http-01 body
// (RFC 8555 §8.3).
const trailingSpace = " \t\r\n"

// HTTP01 fetches ch's http-01 answer as a public CA will (see the package
// documentation) and returns nil when it is the key authorization. When it
// is not, the error is a *MismatchError naming what answered and what to
// change.
func HTTP01(ctx context.Context, ch solve.Challenge, opts Options) error {
	o, err := opts.withDefaults()
	if err != nil {
		return err
	}
	if err := validate(ch, solve.HTTP01); err != nil {
		return err
	}
	if !solve.ValidToken(ch.Token) {
		return fmt.Errorf("checking http-01 for %s: invalid token %q", ch.Identifier.Value, ch.Token)
	}
	c := &httpCheck{o: o, ch: ch}
	return c.run(ctx)
}

// httpCheck is one run of HTTP01.
type httpCheck struct {
	o  Options
	ch solve.Challenge
	// comparing is set on the run that fetches from the other address
	// family, which is not compared again.
	comparing bool
}

// httpAnswer is what one address answered.
type httpAnswer struct {
	status    int
	server    string
	location  string
	body      []byte
	truncated bool // the body was longer than maxBody
}

// connectedError marks a failure after the TCP connection was made: the
// peer accepted but did not answer.
type connectedError struct{ err error }

func (e *connectedError) Error() string { return e.err.Error() }
func (e *connectedError) Unwrap() error { return e.err }

// run fetches the challenge URL, follows redirects and judges the answer.
func (c *httpCheck) run(ctx context.Context) error {
	u := &url.URL{Scheme: "http", Host: urlHost(c.ch.Identifier.Value), Path: c.ch.HTTP01Path()}
	return c.walk(ctx, u, nil, make(map[string]bool), netip.Addr{})
}

// walk fetches u, follows redirects and judges the final answer, as the CA
// does. chain lists the URLs fetched before u. When pin is valid, u is
// fetched from pin alone (the other address family, compared).
func (c *httpCheck) walk(ctx context.Context, u *url.URL, chain []string, seen map[string]bool, pin netip.Addr) error {
	for {
		seen[u.String()] = true
		port, _ := c.o.connectPort(u.Scheme, u.Port()) // checked when the redirect was accepted
		host := u.Hostname()
		addrs := []netip.Addr{pin}
		if !pin.IsValid() {
			var err error
			addrs, err = lookup(ctx, c.o, host)
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("self-checking http-01 for %s: %w", c.ch.Identifier.Value, ctx.Err())
				}
				return c.mismatch(u, chain, ReasonDNS, err,
					fmt.Sprintf("%s does not resolve (%v), so %s cannot be fetched", host, err, abbreviate(u.String())),
					"create an A or AAAA record for "+host+" pointing at this host; the CA resolves it the same way")
			}
		}
		pin = netip.Addr{}
		tried := addrs
		if len(chain) > 0 {
			tried = addrs[:1] // the CA does not fall back for a redirect's target
		}
		c.o.Logger.Debug("self-check: fetching", "challenge", solve.HTTP01, "identifier", c.ch.Identifier.Value,
			"url", u.String(), "addrs", tried, "port", port)
		ans, attempts, err := tryEach(ctx, c.o, tried, port, notConnected, func(ctx context.Context, ap netip.AddrPort) (httpAnswer, error) {
			return c.fetch(ctx, ap, u)
		})
		var fail *MismatchError
		switch {
		case err != nil && ctx.Err() != nil:
			return fmt.Errorf("self-checking http-01 for %s: %w", c.ch.Identifier.Value, ctx.Err())
		case err != nil:
			fail = c.netMismatch(u, chain, attempts, err)
		case isRedirect(ans.status) && ans.location != "":
			last := attempts[len(attempts)-1].Addr
			next, problem, hint := c.followable(u, ans.location, len(chain)+1, seen)
			if problem == "" {
				c.o.Logger.Debug("self-check: following redirect", "url", u.String(), "location", next.String(), "status", ans.status)
				chain = append(chain, u.String())
				u = next
				continue
			}
			fail = c.answered(u, chain, attempts, ans, ReasonRedirect,
				fmt.Sprintf("%s answered %d for %s with %s (Location: %s)", who(ans.server, last), ans.status, abbreviate(u.String()), problem, printable(ans.location)),
				hint)
			fail.Location = ans.location
		default:
			if fail = c.judge(u, chain, attempts, ans); fail == nil {
				return nil
			}
		}
		return c.compare(ctx, u, chain, seen, addrs, attempts, fail)
	}
}

// compare fetches u from the address family the CA will not try, when the
// name has one, and says how the answers differ (see compareFamilies).
func (c *httpCheck) compare(ctx context.Context, u *url.URL, chain []string, seen map[string]bool,
	addrs []netip.Addr, attempts []Attempt, fail *MismatchError) error {
	other := untried(addrs, attempts)
	if c.comparing || !other.IsValid() {
		return fail
	}
	port := attempts[0].Addr.Port()
	c.o.Logger.Debug("self-check: fetching from the other address family", "url", u.String(), "addr", other.String())
	sub := *c
	sub.comparing = true
	again := make(map[string]bool, len(seen))
	for k := range seen {
		again[k] = seen[k]
	}
	f := family{typ: solve.HTTP01, host: u.Hostname(), kind: kindOf(attempts), fail: fail,
		other: netip.AddrPortFrom(other, port), https: u.Scheme == "https"}
	e := compareFamilies(f, "serves the key authorization", func() error {
		return sub.walk(ctx, u, chain, again, other)
	})
	if ctx.Err() != nil {
		return fmt.Errorf("self-checking http-01 for %s: %w", c.ch.Identifier.Value, ctx.Err())
	}
	return e
}

// connectPort maps a URL's scheme and port to the port connected to:
// 80 to HTTPPort and 443 to TLSPort (the same in production). A port equal
// to HTTPPort or TLSPort is accepted as is, as a CA configured with other
// validation ports does. ok is false for any other port.
func (o Options) connectPort(scheme, port string) (p int, ok bool) {
	p = DefaultHTTPPort
	if scheme == "https" {
		p = DefaultTLSPort
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil {
			return 0, false
		}
		p = n
	}
	switch p {
	case DefaultHTTPPort:
		return o.HTTPPort, true
	case DefaultTLSPort:
		return o.TLSPort, true
	case o.HTTPPort, o.TLSPort:
		return p, true
	}
	return p, false
}

// isRedirect reports whether status is one a client follows.
func isRedirect(status int) bool {
	switch status {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// followable resolves location against u and applies the CA's redirect
// rules. n is the number of this redirect (1 for the first). On refusal it
// returns what the redirect is ("a redirect to port 8080") and the hint.
func (c *httpCheck) followable(u *url.URL, location string, n int, seen map[string]bool) (next *url.URL, problem, hint string) {
	const exempt = "exempt /.well-known/acme-challenge/ from this redirect"
	next, err := u.Parse(location)
	if err != nil {
		return nil, "a redirect to an invalid URL", fmt.Sprintf("public CAs cannot follow it (%v); %s or fix its target", err, exempt)
	}
	next.Fragment, next.RawFragment = "", ""
	switch {
	case next.Scheme != "http" && next.Scheme != "https":
		return nil, fmt.Sprintf("a redirect to a URL with scheme %q", next.Scheme),
			"public CAs only follow redirects to http:// and https:// URLs; " + exempt
	case next.Hostname() == "":
		return nil, "a redirect to a URL without a host", "public CAs cannot follow it; " + exempt + " or give it a host"
	}
	if _, ok := c.o.connectPort(next.Scheme, next.Port()); !ok {
		return nil, "a redirect to port " + next.Port(),
			"public CAs only follow redirects to ports 80 and 443; " + exempt + " or redirect to port 80 or 443"
	}
	if _, err := netip.ParseAddr(next.Hostname()); err == nil {
		return nil, "a redirect to the IP address " + next.Hostname(),
			"public CAs only follow redirects to names, not IP addresses; redirect to a name, or " + exempt
	}
	if n > MaxRedirects {
		return nil, fmt.Sprintf("redirect number %d", n),
			fmt.Sprintf("public CAs follow at most %d redirects; %s or shorten the chain", MaxRedirects, exempt)
	}
	if seen[next.String()] {
		return nil, "a redirect loop back to " + abbreviate(next.String()),
			"the answer is never reached; " + exempt
	}
	return next, "", ""
}

// fetch sends the CA's request for u to one address and reads the answer.
func (c *httpCheck) fetch(ctx context.Context, ap netip.AddrPort, u *url.URL) (httpAnswer, error) {
	var connected atomic.Bool
	tr := &http.Transport{
		Proxy: nil, // the CA connects directly; HTTP_PROXY must not change the result
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", ap.String())
			if err == nil {
				connected.Store(true)
			}
			return conn, err
		},
		// After a redirect to https the CA does not verify the certificate
		// (see the package documentation), so neither does the check.
		TLSClientConfig:        &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // mirrors the CA on purpose
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return httpAnswer{}, fmt.Errorf("building request for %s: %w", u, err)
	}
	req.Host = urlHost(u.Hostname())
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", "*/*")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		if connected.Load() {
			return httpAnswer{}, &connectedError{err}
		}
		return httpAnswer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return httpAnswer{}, &connectedError{fmt.Errorf("reading the response body: %w", err)}
	}
	ans := httpAnswer{
		status:   resp.StatusCode,
		server:   printable(resp.Header.Get("Server")),
		location: resp.Header.Get("Location"),
		body:     body,
	}
	if len(body) > maxBody {
		ans.body, ans.truncated = body[:maxBody], true
	}
	return ans, nil
}

// judge compares a final (non-redirect) answer with the key authorization;
// nil means it passes.
func (c *httpCheck) judge(u *url.URL, chain []string, attempts []Attempt, ans httpAnswer) *MismatchError {
	last := attempts[len(attempts)-1].Addr
	got := strings.TrimRight(string(ans.body), trailingSpace)
	if ans.status == http.StatusOK && !ans.truncated && got == c.ch.KeyAuthorization {
		c.o.Logger.Debug("self-check passed", "challenge", solve.HTTP01, "identifier", c.ch.Identifier.Value,
			"url", u.String(), "addr", last.String(), "redirects", len(chain))
		return nil
	}
	if ans.status != http.StatusOK {
		return c.answered(u, chain, attempts, ans, ReasonStatus,
			fmt.Sprintf("%s answered %d for %s", who(ans.server, last), ans.status, abbreviate(u.String())),
			c.statusHint(ans, u))
	}
	return c.answered(u, chain, attempts, ans, ReasonBody,
		fmt.Sprintf("%s answered 200 for %s with %s instead of the key authorization", who(ans.server, last), abbreviate(u.String()), describeBody(ans)),
		c.bodyHint(ans, u))
}

// statusHint says what a non-200 status usually means and what to do.
func (c *httpCheck) statusHint(ans httpAnswer, u *url.URL) string {
	snippet := snippetCommand(ans.server)
	switch s := ans.status; {
	case (s == http.StatusNotFound || s == http.StatusGone) && c.o.PathKind == "webroot":
		root := "the webroot"
		if c.o.Root != "" {
			root = c.o.Root
		}
		return fmt.Sprintf("the token file was written under %s, but the server does not serve that directory for %s: "+
			"set root to the document root of %s (nginx: its `root` directive; Apache: DocumentRoot), and make sure "+
			"no rewrite or try_files catches /.well-known/acme-challenge/", root, u.Hostname(), u.Hostname())
	case (s == http.StatusNotFound || s == http.StatusGone) && c.o.PathKind == "stateless":
		cmd := "`detour snippet stateless`"
		if name := snippetServer(ans.server); name != "" {
			cmd = "`detour snippet stateless --server " + name + "`"
		}
		return "the server does not answer challenges by itself yet: add the block printed by " + cmd
	case (s == http.StatusNotFound || s == http.StatusGone) && c.o.PathKind == "standalone":
		return "another server answers where Detour was to listen: check that the standalone path's address is what " +
			u.Hostname() + " port 80 reaches, or use a path made for a running web server (webroot, side-port: " + snippet + ")"
	case (s == http.StatusNotFound || s == http.StatusGone) && c.o.PathKind == "exec":
		return fmt.Sprintf("the auth hook ran, but %s does not serve what it published: make the hook write "+
			"$DETOUR_VALIDATION to the file /.well-known/acme-challenge/$DETOUR_TOKEN of the site %s serves "+
			"(its document root, bucket or CDN origin), and check that no rewrite catches that path", u.Hostname(), u.Hostname())
	case s == http.StatusNotFound || s == http.StatusGone:
		return fmt.Sprintf("the forward to Detour is missing; add the block printed by %s "+
			"(with a webroot path, check that the webroot is the document root serving %s)", snippet, u.Hostname())
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		return "the server refuses /.well-known/acme-challenge/: allow it without authentication or address " +
			"restrictions (the CA connects from addresses it does not publish), then add the block printed by " + snippet
	case s == http.StatusBadGateway || s == http.StatusServiceUnavailable || s == http.StatusGatewayTimeout:
		port := "Detour's side port"
		if c.o.Listen != "" {
			port += " (this path listens on " + c.o.Listen + ")"
		}
		return "the server forwards the path but nothing answered behind it: check that " + port + " is " +
			"listening and that the forward's target matches it (" + snippet + " prints the block)"
	case s >= 300 && s < 400:
		return "a CA only follows 301, 302, 303, 307 and 308 with a Location header; " +
			"exempt /.well-known/acme-challenge/ from this rule"
	case s >= 500:
		return "the server failed on this path; check its error log, and the block printed by " + snippet
	}
	return "public CAs accept only status 200 with the key authorization; add the block printed by " + snippet
}

// bodyHint says what a wrong 200 body usually means and what to do.
func (c *httpCheck) bodyHint(ans httpAnswer, u *url.URL) string {
	body := strings.TrimRight(string(ans.body), trailingSpace)
	wantTok, wantThumb, _ := strings.Cut(c.ch.KeyAuthorization, ".")
	tok, thumb, isKeyAuth := strings.Cut(body, ".")
	isKeyAuth = isKeyAuth && !ans.truncated && solve.ValidToken(tok) && solve.ValidToken(thumb)
	switch {
	case strings.TrimSpace(body) == c.ch.KeyAuthorization:
		return "the key authorization is preceded by whitespace, and CAs ignore only trailing whitespace " +
			"(RFC 8555 §8.3): serve it exactly, with at most a trailing newline"
	case isKeyAuth && tok == wantTok:
		return fmt.Sprintf("a stateless answer for another account key: the server's configuration has thumbprint %s, "+
			"this account's is %s; replace the block with the one printed by `detour snippet stateless`", thumb, wantThumb)
	case isKeyAuth && thumb == wantThumb:
		return "an answer for an older challenge of this account: a cache (proxy_cache, a CDN) or a leftover file " +
			"served it; exempt /.well-known/acme-challenge/ from caching"
	case isKeyAuth:
		return "another ACME client (or a stateless block for another account) answers this path: remove its " +
			"configuration for /.well-known/acme-challenge/, or check the thumbprint with `detour snippet stateless`"
	case body == "":
		return "the path exists but answers nothing: check the block printed by " + snippetCommand(ans.server)
	case strings.HasPrefix(body, "<"):
		return "the site answers every path with a page (a catch-all rewrite or a single-page app): exempt " +
			"/.well-known/acme-challenge/ from it and add the block printed by " + snippetCommand(ans.server)
	}
	return "another ACME client or a stale stateless block answers this path: check the thumbprint with " +
		"`detour snippet stateless`, or remove the other configuration for /.well-known/acme-challenge/ on " + u.Hostname()
}

// describeBody quotes the start of a body for a message.
func describeBody(ans httpAnswer) string {
	if len(ans.body) == 0 {
		return "an empty body"
	}
	s := "the body " + quoteBody(string(ans.body))
	if ans.truncated {
		s += fmt.Sprintf(" (over %d bytes)", maxBody)
	}
	return s
}

// answered builds the MismatchError for an answer that fails the check.
func (c *httpCheck) answered(u *url.URL, chain []string, attempts []Attempt, ans httpAnswer, r Reason, detail, hint string) *MismatchError {
	e := c.mismatch(u, chain, r, nil, detail, hint)
	e.Attempts = attempts
	e.Addr = attempts[len(attempts)-1].Addr
	e.Status = ans.status
	e.Server = ans.server
	e.Body = string(ans.body[:min(len(ans.body), bodyPreview)])
	return e
}

// netMismatch builds the MismatchError for a connection that failed.
func (c *httpCheck) netMismatch(u *url.URL, chain []string, attempts []Attempt, err error) *MismatchError {
	last := attempts[len(attempts)-1].Addr
	port := u.Port()
	if port == "" {
		port = strconv.Itoa(DefaultHTTPPort)
		if u.Scheme == "https" {
			port = strconv.Itoa(DefaultTLSPort)
		}
	}
	nat, replace := genericNAT, ""
	if notConnected(err) && strings.EqualFold(u.Hostname(), c.ch.Identifier.Value) {
		// Only the identifier's own address is this host's; a redirect may
		// lead anywhere.
		replace, nat = c.o.unreachable(u.Hostname(), last)
	}
	target := abbreviate(u.String())
	var detail, hint string
	r := netReason(err)
	var ce *connectedError
	switch {
	case r == ReasonRefused:
		detail = fmt.Sprintf("connection to %s refused for %s", last, target)
		hint = "nothing listens on port " + port + " there: start the web server, use the standalone path " +
			"(Detour binds the port itself), or let a firewall window open it" + nat
	case r == ReasonTimeout && errors.As(err, &ce):
		detail = fmt.Sprintf("%s accepted the connection for %s but sent no answer within %v", last, target, c.o.Timeout)
		hint = "something holds port " + port + " without answering HTTP (a stalled proxy, a firewall that " +
			"accepts and drops, a hung server): check what listens there" + nat
	case r == ReasonTimeout:
		detail = fmt.Sprintf("no connection to %s within %v for %s", last, c.o.Timeout, target)
		hint = "a firewall drops port " + port + ": open it, or let a firewall window open it during validation, " +
			"and check that the A/AAAA records point at this host" + nat
	default:
		detail = fmt.Sprintf("could not fetch %s from %s: %s", target, last, describeNetErr(err))
		hint = "check that the A/AAAA records of " + u.Hostname() + " point at this host and that port " + port +
			" is reachable" + nat
	}
	if replace != "" {
		hint = replace
	}
	e := c.mismatch(u, chain, r, err, detail, hint)
	e.Attempts = attempts
	e.Addr = last
	return e
}

// mismatch fills the fields every http-01 MismatchError has.
func (c *httpCheck) mismatch(u *url.URL, chain []string, r Reason, err error, detail, hint string) *MismatchError {
	return &MismatchError{
		Challenge:  solve.HTTP01,
		Identifier: c.ch.Identifier.Value,
		Reason:     r,
		URL:        u.String(),
		Redirects:  chain,
		Detail:     detail,
		Hint:       hint,
		Err:        err,
	}
}

// who names what answered: its Server header, or its address.
func who(server string, ap netip.AddrPort) string {
	if server != "" {
		return server + " at " + ap.String()
	}
	return "the server at " + ap.String() + " (no Server header)"
}

// printable keeps the printable ASCII of a header value, at most 80 bytes.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s)
	return strings.TrimSpace(s[:min(len(s), 80)])
}
