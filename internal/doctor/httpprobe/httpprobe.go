// Package httpprobe is the part of `detour doctor` that shows what a CA
// will see over HTTP: it fetches a probe the way Let's Encrypt's
// validation authority fetches an http-01 answer (RFC 8555 §8.3), once
// from each address family of the name, records every hop of the redirect
// chain, and says what the CA would conclude and why.
//
// The CA's rules, as Boulder (va/http.go) implements them and
// https://letsencrypt.org/docs/ipv6-support/ documents them:
//
//   - the name's A and AAAA records are resolved; the first IPv6 address is
//     tried first, the first IPv4 address only when no TCP connection could
//     be made anywhere in the chain (Boulder's fallbackErr: a failed dial —
//     refused, timed out, unreachable). An HTTP answer of any kind, and a
//     connection that was accepted and then reset or left unanswered, end
//     the validation: the CA never falls back after them;
//   - redirects are followed only for 301, 302, 307 and 308 (a 303 fails),
//     only to http:// or https:// URLs on ports 80 or 443, only to names
//     (not IP addresses), at most 10, never to a URL already fetched; a
//     redirect's target is connected to at its first address alone (IPv6
//     when it has one), without fallback;
//   - after a redirect to https:// the certificate is not verified;
//   - the final answer must be 200 with the expected body once trailing
//     whitespace is removed, under 128 bytes.
//
// Fetch runs that fetch from each family's address separately (a family's
// redirect hops still connect where the CA would), so that doctor can show
// both and name the AAAA trap: IPv6 answers wrongly while IPv4 would pass,
// and the CA never gets to IPv4. ProbeWebroot and ProbeSidePort set up a
// probe through the webroot and side-port path kinds' own code, fetch it,
// remove every trace of it and report a check.Result.
//
// The one-address fetch, the redirect rule and the name resolution are
// those of internal/solve/selfcheck (the renewal's self-check), through its
// small exported helpers. selfcheck.HTTP01 itself is not used: it returns
// one verdict for the CA's path and stops at the first failure, while
// doctor needs every hop of each family's chain.
package httpprobe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/detour-acme/detour/internal/solve/selfcheck"
)

// Defaults.
const (
	// DefaultPort is the only port public CAs use for http-01.
	DefaultPort = 80
	// DefaultTLSPort is the port an http-01 redirect to https reaches.
	DefaultTLSPort = 443
	// DefaultTimeout bounds one fetch from one address, about what Let's
	// Encrypt allows.
	DefaultTimeout = 10 * time.Second
	// MaxRedirects is how many redirects are followed.
	MaxRedirects = selfcheck.MaxRedirects
	// bodyKept is how much of the final answer's body a FamilyResult keeps.
	bodyKept = 512
	// maxCABody is Boulder's maxResponseSize: a body of this many bytes or
	// more fails the validation.
	maxCABody = 128
)

// Family names.
const (
	IPv6 = "IPv6"
	IPv4 = "IPv4"
)

// Options configures a probe. The zero value probes the way a public CA
// does, resolving with the system's resolver.
type Options struct {
	// Port is the port the CA connects to for http-01 (and for a redirect
	// to port 80); 0 means 80. Tests use another.
	Port int
	// TLSPort is the port a redirect to https (port 443) connects to; 0
	// means 443.
	TLSPort int
	// Resolver is the host:port of the DNS server names are resolved with;
	// "" means the system's. Lookup, when set, takes precedence.
	Resolver string
	// Lookup, when set, returns the addresses of host (the authoritative
	// answers doctor already has); it overrides Resolver.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// Timeout bounds one fetch from one address; 0 means DefaultTimeout.
	Timeout time.Duration
	// Logger receives each hop at debug level. Nil discards everything.
	Logger *slog.Logger
	// IsLocal reports whether an address is on one of this host's
	// interfaces, to tell NAT (a public address this host may not reach
	// from inside) from a server that is down. Nil lists the interfaces
	// (net.InterfaceAddrs).
	IsLocal func(netip.Addr) bool
}

var discardLogger = slog.New(slog.DiscardHandler)

// withDefaults fills in o's defaults.
func (o Options) withDefaults() Options {
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.TLSPort == 0 {
		o.TLSPort = DefaultTLSPort
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = discardLogger
	}
	if o.IsLocal == nil {
		o.IsLocal = func(a netip.Addr) bool {
			local, known := selfcheck.IsLocal(a, nil)
			return local || !known // unknown: do not claim NAT
		}
	}
	return o
}

// resolver returns what resolves names for o.
func (o Options) resolver() selfcheck.Resolver {
	switch {
	case o.Lookup != nil:
		return lookupFunc(o.Lookup)
	case o.Resolver != "":
		return selfcheck.ResolverAt(o.Resolver)
	}
	return net.DefaultResolver
}

// lookupFunc adapts Options.Lookup to selfcheck.Resolver.
type lookupFunc func(ctx context.Context, host string) ([]netip.Addr, error)

func (f lookupFunc) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	addrs, err := f(ctx, host)
	var out []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if network == "ip" || (network == "ip4") == a.Is4() {
			out = append(out, a)
		}
	}
	if err == nil && len(out) == 0 {
		err = fmt.Errorf("no A or AAAA record for %s", host)
	}
	return out, err
}

// Hop is one request of a chain: the URL fetched, the address connected
// to, and what came back.
type Hop struct {
	URL      string `json:"url"`
	Addr     string `json:"addr"` // ip:port connected to
	Status   int    `json:"status,omitempty"`
	Location string `json:"location,omitempty"`
	Server   string `json:"server,omitempty"` // the Server header
	// Err says what went wrong at this hop: a failed connection, or why
	// its redirect is not followed.
	Err string `json:"error,omitempty"`
}

// Failure classifies how a family's fetch failed.
type Failure string

// Failures. Refused, Timeout and Network happen before a TCP connection
// is made: the only failures after which the CA falls back from IPv6 to
// IPv4.
const (
	FailNone     Failure = ""
	FailRefused  Failure = "refused"   // connection refused
	FailTimeout  Failure = "timeout"   // no connection within the timeout
	FailNetwork  Failure = "network"   // no connection: unreachable, or another dial error
	FailNoAnswer Failure = "no-answer" // connected, then reset, closed, TLS failed or no answer in time
	FailDNS      Failure = "dns"       // a redirect's target does not resolve
	FailRedirect Failure = "redirect"  // a redirect the CA does not follow
	FailStatus   Failure = "status"    // the final answer's status is not 200
	FailBody     Failure = "body"      // 200 with another body
)

// BeforeConnect reports whether f is a failure to make a TCP connection.
func (f Failure) BeforeConnect() bool {
	return f == FailRefused || f == FailTimeout || f == FailNetwork
}

// FamilyResult is the fetch from one address family's address of the name.
type FamilyResult struct {
	Family string     `json:"family"` // IPv6 or IPv4
	Addr   netip.Addr `json:"addr"`   // the name's address of this family the fetch began at
	Hops   []Hop      `json:"hops"`
	// Body is the first 512 bytes of the final answer.
	Body string `json:"body,omitempty"`
	// OK: the final answer is 200 with the expected body.
	OK bool `json:"ok"`
	// Failure classifies what went wrong; FailNone when OK.
	Failure Failure `json:"failure,omitempty"`
	// Err says what went wrong, for people.
	Err string `json:"error,omitempty"`
}

// last returns the last hop (zero when there is none).
func (f FamilyResult) last() Hop {
	if len(f.Hops) == 0 {
		return Hop{}
	}
	return f.Hops[len(f.Hops)-1]
}

// Result is a probe fetched from every address family of the name.
type Result struct {
	URL string `json:"url"`
	// Families holds one fetch per address family the name has, IPv6
	// first.
	Families []FamilyResult `json:"families"`
	// CAFamily is the family whose outcome the CA acts on (see CAFamily);
	// "" when the name has no address.
	CAFamily string `json:"ca_family,omitempty"`
	// OK is what the CA would conclude: the answer passes.
	OK bool `json:"ok"`
	// Err is set when the name itself does not resolve.
	Err string `json:"error,omitempty"`
}

// Family returns the fetch of family fam ("IPv6" or "IPv4").
func (r Result) Family(fam string) (FamilyResult, bool) {
	for _, f := range r.Families {
		if f.Family == fam {
			return f, true
		}
	}
	return FamilyResult{}, false
}

// CAFamily returns the index in fams (IPv6 first, as Fetch orders them) of
// the fetch whose outcome the CA acts on, or -1 when fams is empty. The CA
// starts at the IPv6 address when the name has one and moves to the IPv4
// address only when the IPv6 fetch failed to make a TCP connection at some
// hop (Boulder retries the whole chain from the IPv4 address after a dial
// error, and after nothing else).
func CAFamily(fams []FamilyResult) int {
	switch {
	case len(fams) == 0:
		return -1
	case len(fams) > 1 && fams[0].Family == IPv6 && fams[0].Failure.BeforeConnect():
		return 1
	}
	return 0
}

// Fetch fetches http://name:Port/path from each address family of name as
// a CA would (see the package documentation): IPv6 first; redirects only
// to http on Port or https on TLSPort, at most 10; every hop recorded.
// expect is the body wanted ("" accepts any 200). Result.OK is the CA's
// conclusion; the other family is fetched as well, so that doctor can
// report it.
func Fetch(ctx context.Context, name, path, expect string, opts Options) Result {
	o := opts.withDefaults()
	host := strings.TrimSuffix(strings.ToLower(name), ".")
	// The URL is the CA's (port 80 implied); the connection goes to Port.
	u := &url.URL{Scheme: "http", Host: urlHost(host), Path: path}
	res := Result{URL: u.String(), Families: []FamilyResult{}}
	addrs, err := selfcheck.Addresses(ctx, o.resolver(), o.Timeout, host)
	if err != nil {
		res.Err = fmt.Sprintf("%s does not resolve: %v", host, err)
		return res
	}
	f := fetcher{o: o, expect: expect}
	for _, a := range addrs { // IPv6 first
		res.Families = append(res.Families, f.family(ctx, a, u))
	}
	if i := CAFamily(res.Families); i >= 0 {
		res.CAFamily = res.Families[i].Family
		res.OK = res.Families[i].OK
	}
	return res
}

// fetcher runs the chain of one family.
type fetcher struct {
	o      Options
	expect string
}

// family fetches u starting at addr and follows redirects as the CA does.
func (f fetcher) family(ctx context.Context, addr netip.Addr, u *url.URL) FamilyResult {
	fr := FamilyResult{Family: familyOf(addr), Addr: addr, Hops: []Hop{}}
	seen := map[string]bool{}
	for n := 0; ; n++ {
		seen[u.String()] = true
		port, _ := selfcheck.ConnectPort(u.Scheme, u.Port(), f.o.Port, f.o.TLSPort) // a redirect's port was checked
		ap := netip.AddrPortFrom(addr, uint16(port))
		hop := Hop{URL: u.String(), Addr: ap.String()}
		actx, cancel := context.WithTimeout(ctx, f.o.Timeout)
		ans, err := selfcheck.FetchOnce(actx, ap, u)
		cancel()
		f.o.Logger.Debug("doctor: fetched", "url", hop.URL, "addr", hop.Addr, "status", ans.Status, "error", err)
		if err != nil {
			hop.Err = describe(err, ctx)
			fr.Hops = append(fr.Hops, hop)
			fr.Failure = netFailure(err)
			fr.Err = fmt.Sprintf("%s: %s", hop.Addr, hop.Err)
			return fr
		}
		hop.Status, hop.Location, hop.Server = ans.Status, ans.Location, ans.Server
		if redirectStatus(ans.Status) && ans.Location != "" {
			next, problem := Redirect(u, ans.Status, ans.Location, n+1, seen, f.o.Port, f.o.TLSPort)
			if problem != "" {
				hop.Err = problem
				fr.Hops = append(fr.Hops, hop)
				fr.Failure, fr.Err = FailRedirect, problem
				return fr
			}
			fr.Hops = append(fr.Hops, hop)
			addrs, err := selfcheck.Addresses(ctx, f.o.resolver(), f.o.Timeout, next.Hostname())
			if err != nil {
				fr.Failure = FailDNS
				fr.Err = fmt.Sprintf("the redirect's target %s does not resolve: %v", next.Hostname(), err)
				return fr
			}
			// The CA connects to a redirect's target at its first
			// address (IPv6 first), and does not fall back.
			addr, u = addrs[0], next
			continue
		}
		fr.Hops = append(fr.Hops, hop)
		fr.Body = string(ans.Body[:min(len(ans.Body), bodyKept)])
		fr.Failure, fr.Err = judge(ans, f.expect)
		fr.OK = fr.Failure == FailNone
		return fr
	}
}

// judge says whether a final answer passes: status 200 and, when expect is
// set, that body under the CA's size limit.
func judge(ans selfcheck.Answer, expect string) (Failure, string) {
	switch {
	case ans.Status != 200:
		return FailStatus, fmt.Sprintf("status %d, not 200", ans.Status)
	case expect == "":
		return FailNone, ""
	case len(ans.Body) >= maxCABody:
		return FailBody, fmt.Sprintf("a body of %d bytes or more (the CA reads under %d)", len(ans.Body), maxCABody)
	case strings.TrimRightFunc(string(ans.Body), unicode.IsSpace) != expect:
		return FailBody, "status 200 with another body than the probe's: " + strconv.Quote(string(ans.Body[:min(len(ans.Body), 60)]))
	}
	return FailNone, ""
}

// redirectStatus reports whether status is a redirect a client follows
// (the CA refuses some of them: see Redirect).
func redirectStatus(status int) bool {
	switch status {
	case 301, 302, 303, 307, 308:
		return true
	}
	return false
}

// Redirect applies the CA's redirect rules to an answer with status and
// location to the request for u: n is the number of this redirect (1 for
// the first), seen the URLs fetched so far. It returns the URL to fetch
// next, or a problem that names the redirect and the rule it breaks.
func Redirect(u *url.URL, status int, location string, n int, seen map[string]bool, port, tlsPort int) (next *url.URL, problem string) {
	from, to := selfcheck.Abbreviate(u.String()), selfcheck.Abbreviate(location)
	if status == 303 {
		// Go's client follows a 303, Boulder's CheckRedirect does not:
		// the CA/B Forum's rules allow 301, 302, 307 and 308 only.
		return nil, fmt.Sprintf("%s answered 303 (Location: %s): the CA follows only 301, 302, 307 and 308; "+
			"exempt /.well-known/acme-challenge/ from this redirect or answer 301", from, to)
	}
	next, what, hint := selfcheck.FollowRedirect(u, location, n, seen, port, tlsPort)
	if what != "" {
		return nil, fmt.Sprintf("%s answered %d with %s (Location: %s): %s", from, status, what, to, hint)
	}
	if h := next.Hostname(); strings.HasSuffix(h, ".well-known") {
		// Boulder names this common mistake: "Redirect / https://host"
		// without the slash after the host.
		return nil, fmt.Sprintf("%s answered %d with a redirect to the host %q (Location: %s): a slash is missing "+
			"after the host in the redirect's target (Apache: `Redirect / https://name/`, not `https://name`)", from, status, h, to)
	}
	return next, ""
}

// netFailure classifies a failed fetch.
func netFailure(err error) Failure {
	switch {
	case selfcheck.Connected(err):
		return FailNoAnswer
	case errors.Is(err, syscall.ECONNREFUSED):
		return FailRefused
	case selfcheck.IsTimeout(err):
		return FailTimeout
	}
	return FailNetwork
}

// describe says what a failed fetch was, naming a cancelled probe.
func describe(err error, ctx context.Context) string {
	if ctx.Err() != nil {
		return "doctor was interrupted: " + ctx.Err().Error()
	}
	return selfcheck.DescribeNetErr(err)
}

// familyOf names a's address family.
func familyOf(a netip.Addr) string {
	if a.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// recordOf names the DNS record type that holds a.
func recordOf(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "A"
	}
	return "AAAA"
}

// urlHost returns host as written in a URL: an IPv6 literal in brackets.
func urlHost(host string) string {
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
		return "[" + host + "]"
	}
	return host
}
