// Package dnscheck holds the DNS checks of `detour doctor`: what the CA
// will find in DNS for one name, asked of the servers that matter.
//
//   - dns.zone: the zone holding the name (its SOA, RFC 1035 §3.3.13), the
//     primary (SOA MNAME, where RFC 2136 §4 sends updates), the NS RRset,
//     and the DNS provider those name servers identify.
//   - dns.addresses: A and AAAA asked of every authoritative server of the
//     zone with recursion off (not a local resolver, which may hold a stale
//     or split-horizon view), compared with the host's own addresses: NAT
//     or a balancer, private addresses in public DNS, and the AAAA trap
//     (Let's Encrypt tries IPv6 first, and does not fall back once an IPv6
//     connection is answered).
//   - dns.rfc2136: whether the primary accepts a TSIG-signed (RFC 8945)
//     update that changes nothing (a prerequisite-only update, RFC 2136
//     §2.4.1 and §3.2).
//   - dns.acme-dns: an existing CNAME at _acme-challenge.<name> (an acme-dns
//     delegation) and whether the target's servers answer.
//   - dns.persist: the dns-persist-01 record at _validation-persist.<name>
//     (draft-ietf-acme-dns-persist), parsed by package persist.
//   - dns.caa: the relevant CAA RRset (RFC 8659 §3, tree climbing from the
//     name towards the root), its issue/issuewild properties (§4.2, §4.3),
//     the accounturi and validationmethods parameters (RFC 8657 §3, §4),
//     and critical properties of unknown tags (§4.1).
//   - dns.dnssec: whether the zone is signed (DNSKEY, DS at the parent,
//     RFC 4034), and whether the chain from the parent breaks at the zone:
//     no DNSKEY matching a DS, a DNSKEY RRset not signed by such a key, an
//     expired or invalid signature on the SOA, or a validating resolver
//     that fails (SERVFAIL) where the authoritative servers answer.
//
// Check runs them all for one name and returns the facts they found (for
// ranking the path kinds) and one check.Result per check. Nothing is
// changed anywhere: the only message that is not a query is the RFC 2136
// probe, which carries no update.
package dnscheck

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/doctor/check"
)

// Names of the checks, as check.Result.Name.
const (
	CheckZone      = "dns.zone"
	CheckAddresses = "dns.addresses"
	CheckRFC2136   = "dns.rfc2136"
	CheckAcmeDNS   = "dns.acme-dns"
	CheckPersist   = "dns.persist"
	CheckCAA       = "dns.caa"
	CheckDNSSEC    = "dns.dnssec"
)

// DefaultTimeout bounds one DNS exchange when Options.Timeout is zero.
const DefaultTimeout = 3 * time.Second

// TSIGKey is a TSIG key (RFC 8945) that may update the zone.
type TSIGKey struct {
	// Name is the key's name, as in the server's key statement.
	Name string
	// Algorithm is "hmac-sha256" (the default when empty), "hmac-sha384"
	// or "hmac-sha512".
	Algorithm string
	// Secret is the base64 secret. It is left out of JSON and of String,
	// so Facts can be printed as they are.
	Secret string `json:"-"`
	// Source says where the key was found: a file path, or "config
	// path.NAME" for a configured rfc2136 path.
	Source string
}

// String names the key and where it was found, never its secret.
func (k TSIGKey) String() string {
	if k.Name == "" {
		return "no key (unsigned)"
	}
	return fmt.Sprintf("key %q (%s, %s)", k.Name, cmp.Or(k.Algorithm, dns.DefaultTSIGAlgorithm), cmp.Or(k.Source, "source unknown"))
}

// LogValue keeps the secret out of logs.
func (k TSIGKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// GoString keeps the secret out of %#v.
func (k TSIGKey) GoString() string { return k.String() }

// Options configure Check.
type Options struct {
	// Resolver is host:port of a recursive resolver used to find the zone,
	// its NS and SOA, CNAMEs, CAA and DS records; "" = the first
	// nameserver of /etc/resolv.conf.
	Resolver string
	// Interfaces returns the host's addresses; nil = every address of
	// every interface (net.InterfaceAddrs).
	Interfaces func() ([]netip.Addr, error)
	// Keys are the TSIG keys to try for RFC 2136.
	Keys []TSIGKey
	// AccountURIs are the ACME account URLs the host has at the CA (for
	// dns-persist-01 records and CAA accounturi); may be empty.
	AccountURIs []string
	// AccountThumbprints maps an account URL of AccountURIs to the RFC
	// 7638 thumbprint of its key, so that a draft-02 hashed accounturi in
	// a dns-persist-01 record can be matched; optional.
	AccountThumbprints map[string]string
	// IssuerDomains are the CA's CAA issuer domain names (its directory's
	// caaIdentities, e.g. "letsencrypt.org"); empty = unknown.
	IssuerDomains []string
	// Logger receives debug messages; nil discards them.
	Logger *slog.Logger
	// Timeout bounds one DNS exchange; 0 = DefaultTimeout.
	Timeout time.Duration
	// Port is the port authoritative servers are asked on; 0 = 53. Tests
	// set the port of a local server.
	Port int
	// Nameservers maps a name server's name ("ns1.example.com.") to the
	// host:port it is asked at, instead of its addresses on Port: for
	// servers reachable only at another address, and for tests.
	Nameservers map[string]string
	// Now is the clock for signature validity and persistUntil; nil =
	// time.Now.
	Now func() time.Time
}

// Facts are what the checks found about one name, for ranking paths.
type Facts struct {
	// Name is the name checked, as given (a wildcard keeps its "*.").
	Name string
	// Zone is the apex of the zone holding Name ("example.com.").
	Zone string
	// Primary is the zone's SOA MNAME.
	Primary string
	// NS are the zone's NS names.
	NS []string
	// NSAddrs is host:port of each authoritative server asked.
	NSAddrs []string
	// Provider is the dns-provider name the NS names identify
	// (`detour paths dns-provider` lists them); "" = none recognised.
	Provider string
	// A and AAAA are the addresses the zone's authoritative servers
	// answer for Name (after its CNAMEs), the union over the servers.
	A, AAAA []netip.Addr
	// ServersDisagree is set when the authoritative servers answer
	// different address sets.
	ServersDisagree bool
	// Local are the addresses of A/AAAA found on a local interface.
	Local []netip.Addr
	// NotLocal are the addresses of A/AAAA found on no local interface
	// (NAT, a balancer, or a wrong record).
	NotLocal []netip.Addr
	// Private are the addresses of A/AAAA that are private, reserved,
	// loopback, link-local, CGNAT or for documentation.
	Private []netip.Addr
	// HostIPv6 is set when the host has a global-scope IPv6 address.
	HostIPv6 bool
	RFC2136  RFC2136Result
	AcmeDNS  AcmeDNSResult
	Persist  PersistResult
	CAA      CAAResult
	DNSSEC   DNSSECResult
}

// RFC2136Result is what the primary said to the update probes.
type RFC2136Result struct {
	// Server is host:port of the primary the probes went to.
	Server string
	// Zone is the zone probed: the zone of _acme-challenge.<name> after
	// its CNAMEs, where an rfc2136 path would write.
	Zone string
	// Accepted is set when one probe was accepted; Key is then its key
	// (the zero TSIGKey for an unsigned probe).
	Accepted bool
	Key      TSIGKey
	// Tried describes each probe: `key "X" (source): refused (NOTAUTH/BADSIG)`.
	Tried []string
}

// AcmeDNSResult describes an acme-dns style delegation of _acme-challenge.
type AcmeDNSResult struct {
	// CNAME is the target of the _acme-challenge.<name> CNAME; "" = none.
	CNAME string
	// Chain is the whole CNAME chain from _acme-challenge.<name> on.
	Chain []string
	// Live is set when an authoritative server of the target's zone
	// answers for the target.
	Live bool
	// Server is the NS name of the target's zone: a guess at the acme-dns
	// server.
	Server string
}

// PersistResult describes the dns-persist-01 record.
type PersistResult struct {
	// Found is set when a dns-persist-01 issue-value is there.
	Found bool
	// Issuer and AccountURI are those of the record chosen: the matching
	// one if any, else the first.
	Issuer     string
	AccountURI string
	// MatchesAccount is set when a record names one of the IssuerDomains
	// and one of the AccountURIs and has not expired.
	MatchesAccount bool
	// Record is the chosen record's TXT value.
	Record string
	// Wildcard is set when the chosen record has policy=wildcard.
	Wildcard bool
	// PersistUntil is the chosen record's persistUntil, zero when none.
	PersistUntil time.Time
}

// DNSSECResult is the DNSSEC verdict of the zone.
type DNSSECResult struct {
	// Signed is set when the zone serves a DNSKEY RRset or its parent a DS.
	Signed bool
	// Secure is set when the parent holds a DS that matches a key of the
	// zone (the zone is not an island of security).
	Secure bool
	// Broken is set when the chain fails at the zone: validating resolvers
	// (the CA's among them) then answer SERVFAIL for every name in it.
	Broken bool
	// Reason says why it is broken.
	Reason string
}

// Check runs every DNS check for name and returns what they found and one
// result per check, in the order of the Check* constants.
func Check(ctx context.Context, name string, opts Options) (Facts, []check.Result) {
	r, err := newRun(name, opts)
	if err != nil {
		f := Facts{Name: name}
		res := check.New(CheckZone, name, check.Skipped, "DNS checks could not start")
		res.Add("%v", err)
		res.Fix = "set a resolver (host:port) for doctor, or fix /etc/resolv.conf"
		out := []check.Result{res}
		for _, n := range []string{CheckAddresses, CheckRFC2136, CheckAcmeDNS, CheckPersist, CheckCAA, CheckDNSSEC} {
			s := check.New(n, name, check.Skipped, "not checked: no resolver")
			s.Add("%v", err)
			out = append(out, s)
		}
		return f, out
	}
	return r.run(ctx)
}

// run is one Check: the options with defaults and the clients built from
// them.
type run struct {
	opts   Options
	log    *slog.Logger
	name   string // the name as given
	base   string // the name without "*.", fully qualified
	wild   bool
	client *dns.Client
	q      querier
	// servers are the zone's authoritative servers, set by checkZone
	// before the other checks start.
	servers []nameserver
	zone    string
}

func newRun(name string, opts Options) (*run, error) {
	r := &run{opts: opts, log: opts.Logger, name: name}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.opts.Timeout <= 0 {
		r.opts.Timeout = DefaultTimeout
	}
	if r.opts.Now == nil {
		r.opts.Now = time.Now
	}
	if r.opts.Interfaces == nil {
		r.opts.Interfaces = InterfaceAddrs
	}
	if r.opts.Port == 0 {
		r.opts.Port = 53
	}
	trimmed := strings.TrimPrefix(name, "*.")
	r.wild = trimmed != name
	r.base = mdns.CanonicalName(trimmed)
	c, err := dns.New(dns.Options{Logger: r.log, Resolver: opts.Resolver, Port: r.opts.Port,
		Nameservers: opts.Nameservers, QueryTimeout: r.opts.Timeout})
	if err != nil {
		return nil, err
	}
	r.client = c
	r.q = querier{timeout: r.opts.Timeout, log: r.log, resolver: c.Resolver()}
	return r, nil
}

func (r *run) run(ctx context.Context) (Facts, []check.Result) {
	f := Facts{Name: r.name}
	zoneRes, zerr := r.checkZone(ctx, &f)

	var (
		wg                              sync.WaitGroup
		addrs, upd, acme, pers, caa, ds check.Result
		a                               addrFacts
		u                               RFC2136Result
		ad                              AcmeDNSResult
		p                               PersistResult
		cr                              CAAResult
		dr                              DNSSECResult
	)
	if zerr != nil {
		why := "not checked: the zone of " + r.display() + " is unknown"
		addrs = skipped(CheckAddresses, r.name, why, zerr)
		upd = skipped(CheckRFC2136, r.name, why, zerr)
		ds = skipped(CheckDNSSEC, r.name, why, zerr)
	} else {
		wg.Go(func() { a, addrs = r.checkAddresses(ctx, f) })
		wg.Go(func() { u, upd = r.checkRFC2136(ctx, f) })
		wg.Go(func() { dr, ds = r.checkDNSSEC(ctx, f) })
	}
	wg.Go(func() { ad, acme = r.checkAcmeDNS(ctx) })
	wg.Go(func() { p, pers = r.checkPersist(ctx) })
	wg.Go(func() { cr, caa = r.checkCAA(ctx) })
	wg.Wait()

	f.A, f.AAAA, f.ServersDisagree = a.A, a.AAAA, a.Disagree
	f.Local, f.NotLocal, f.Private, f.HostIPv6 = a.Local, a.NotLocal, a.Private, a.HostIPv6
	f.RFC2136, f.AcmeDNS, f.Persist, f.CAA, f.DNSSEC = u, ad, p, cr, dr
	return f, []check.Result{zoneRes, addrs, upd, acme, pers, caa, ds}
}

// display is the name for messages, without the trailing dot.
func (r *run) display() string { return strings.TrimSuffix(r.base, ".") }

func skipped(name, subject, summary string, err error) check.Result {
	res := check.New(name, subject, check.Skipped, summary)
	res.Add("%v", err)
	return res
}

// nameserver is one address of one authoritative server.
type nameserver = dns.Nameserver

// hostAddrs returns where to ask the server called host: the Nameservers
// override, a glue address from glue, or its addresses looked up through
// the resolver (on Port).
func (r *run) hostAddrs(ctx context.Context, host string, glue []mdns.RR) []string {
	host = mdns.CanonicalName(host)
	for n, a := range r.opts.Nameservers {
		if mdns.CanonicalName(n) == host {
			return []string{a}
		}
	}
	port := fmt.Sprint(r.opts.Port)
	var out []string
	for _, rr := range glue {
		if !strings.EqualFold(rr.Header().Name, host) {
			continue
		}
		switch rr := rr.(type) {
		case *mdns.A:
			out = append(out, net.JoinHostPort(rr.A.String(), port))
		case *mdns.AAAA:
			out = append(out, net.JoinHostPort(rr.AAAA.String(), port))
		}
	}
	if len(out) > 0 {
		return out
	}
	for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		m, err := r.q.ask(ctx, r.q.resolver, host, qt, askOpts{rd: true})
		if err != nil {
			continue
		}
		for _, a := range addrsIn(m.Answer, host, qt) {
			out = append(out, net.JoinHostPort(a.String(), port))
		}
	}
	return out
}

// errNoZone wraps why the zone is unknown.
var errNoZone = errors.New("zone unknown")
