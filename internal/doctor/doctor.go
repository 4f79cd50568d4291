// Package doctor looks at a host the way a CA will before anything is
// ordered: the names' addresses from their authoritative servers against
// the host's interfaces, who holds ports 80 and 443 and what their
// configuration does, what a fetch the CA's way returns, the local
// firewall's verdict, the DNS paths (provider, RFC 2136, acme-dns,
// persist, CAA, DNSSEC) and the CA's capabilities. It ranks every path
// kind for each name (works now / after one change / impossible, with the
// evidence) and writes the configuration of the best one.
//
// The checks live in sub-packages, each a small unit with its own tests
// (dnscheck, hostcheck, httpprobe); this package runs them, distils their
// facts into a Situation per name (situation.go), ranks the kinds with a
// pure function (rank.go) and renders the recommendation (recommend.go).
// Doctor changes nothing on the host: probe files and listeners are
// removed, no firewall rule is touched, DNS updates it sends change
// nothing.
package doctor

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/detour-acme/detour/internal/doctor/check"
	"github.com/detour-acme/detour/internal/doctor/dnscheck"
	"github.com/detour-acme/detour/internal/doctor/hostcheck"
	"github.com/detour-acme/detour/internal/doctor/httpprobe"
)

// Options configure a doctor run.
type Options struct {
	// Names are the DNS names to diagnose. Required.
	Names []string
	// Certificate names the [[certificate]] of the recommendation
	// (default: the first name).
	Certificate string
	// CertificateExists: the configuration has that [[certificate]]
	// already; the recommendation then says which paths to list in it.
	CertificateExists bool
	// ProviderPaths maps a dns-provider name to the configuration's path
	// of that provider (its credentials are there).
	ProviderPaths map[string]string
	// TakenPaths are the [path.NAME] names the configuration has already;
	// the recommendation's tables are named otherwise.
	TakenPaths []string
	// HTTPPort and TLSPort are the ports the CA connects to: 80 and 443
	// (tests use others).
	HTTPPort, TLSPort int
	// Resolver is the recursive resolver (host:port) DNS checks start
	// from; "" = /etc/resolv.conf.
	Resolver string
	// CA is the CA's directory; nil skips the CA check.
	CA Directory
	// Keys are the TSIG keys known (config rfc2136 paths, key files).
	Keys []dnscheck.TSIGKey
	// AccountURIs are the host's account URLs at the CA.
	AccountURIs []string
	// AcmeDNSServer returns the acme-dns server of a registration Detour
	// holds for name ("" none); nil = none held.
	AcmeDNSServer func(name string) string
	// SidePortListen is the side-port address to probe (default
	// 127.0.0.1:8402); ALPNListen the alpn-forward one (127.0.0.1:8403).
	SidePortListen, ALPNListen string
	// Snippet returns the configuration block a path needs for a server
	// ("http" or "tls-alpn"; "nginx", "haproxy", ...), "" when none.
	Snippet func(kind, server, listen string) string
	// Host configures the host checks (proc root, DMI, firewall); Ports
	// and Names are filled in.
	Host hostcheck.Options
	// Interfaces overrides the host's addresses (tests).
	Interfaces func() ([]netip.Addr, error)
	// Nameservers maps name-server names to host:port (rehearsals and
	// tests whose name servers are not on port 53).
	Nameservers map[string]string
	// NSPort is the port authoritative servers are asked on (default 53;
	// rehearsals against a local server on another port).
	NSPort int
	// NoProbe skips the HTTP probes (they write a file into the document
	// root and listen on the side-port address briefly).
	NoProbe bool
	// Logger receives progress; nil discards.
	Logger *slog.Logger
}

// Report is doctor's whole answer; its JSON is `detour doctor --json`,
// documented in the README and stable (fields are added, never renamed).
type Report struct {
	// Version of the JSON form: 1.
	Version int `json:"version"`
	// CA is what the CA's directory says.
	CA *CAFacts `json:"ca,omitempty"`
	// Host are the host-wide checks (ports, web servers, firewall, cloud,
	// the CA directory).
	Host []check.Result `json:"host"`
	// Names are the per-name checks and rankings.
	Names []NameReport `json:"names"`
	// Recommendation is the configuration to add, or what to change first.
	Recommendation Recommendation `json:"recommendation"`
}

// NameReport is one name's checks and path ranking.
type NameReport struct {
	Name   string         `json:"name"`
	Checks []check.Result `json:"checks"`
	Paths  []Ranked       `json:"paths"`
	// Situation is the distilled facts the ranking used.
	Situation Situation `json:"-"`
}

// Run diagnoses opts.Names.
func Run(ctx context.Context, opts Options) Report {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.HTTPPort == 0 {
		opts.HTTPPort = 80
	}
	if opts.TLSPort == 0 {
		opts.TLSPort = 443
	}
	if opts.SidePortListen == "" {
		opts.SidePortListen = "127.0.0.1:8402"
	}
	if opts.ALPNListen == "" {
		opts.ALPNListen = "127.0.0.1:8403"
	}
	rep := Report{Version: 1, Host: []check.Result{}}
	var ca CAFacts
	if opts.CA != nil {
		var r check.Result
		ca, r = CheckCA(ctx, opts.CA)
		rep.CA = &ca
		rep.Host = append(rep.Host, r)
	}
	hopts := opts.Host
	hopts.Ports = []int{opts.HTTPPort, opts.TLSPort}
	for _, n := range opts.Names {
		hopts.Names = append(hopts.Names, strings.TrimPrefix(n, "*."))
	}
	if hopts.Logger == nil {
		hopts.Logger = opts.Logger
	}
	host, hres := hostcheck.Check(ctx, hopts)
	rep.Host = append(rep.Host, hres...)

	// The names are diagnosed one after another: the probes of two names
	// would share the side-port address.
	ranked := map[string][]Ranked{}
	for _, name := range opts.Names {
		nr := diagnose(ctx, opts, name, ca, host)
		ranked[name] = nr.Paths
		rep.Names = append(rep.Names, nr)
	}
	rep.Recommendation = Recommend(CertTarget{Name: opts.Certificate, Exists: opts.CertificateExists}, ranked, opts.Names, opts.TakenPaths...)
	return rep
}

// diagnose runs the per-name checks and ranks the kinds.
func diagnose(ctx context.Context, opts Options, name string, ca CAFacts, host hostcheck.Facts) NameReport {
	nr := NameReport{Name: name, Checks: []check.Result{}}
	base := strings.TrimPrefix(name, "*.")
	dopts := dnscheck.Options{Resolver: opts.Resolver, Interfaces: opts.Interfaces, Keys: opts.Keys,
		AccountURIs: opts.AccountURIs, IssuerDomains: ca.CAAIdentities, Logger: opts.Logger, Nameservers: opts.Nameservers, Port: opts.NSPort}
	dfacts, dres := dnscheck.Check(ctx, name, dopts)
	aaaaTrap := len(dfacts.AAAA) > 0 && !dfacts.HostIPv6
	if ca.Local && len(dfacts.Private) > 0 && !aaaaTrap {
		// A rehearsal or a private CA reaches private addresses: the
		// only problem dns.addresses found is not one here.
		for i := range dres {
			if dres[i].Name == dnscheck.CheckAddresses && dres[i].Status == check.Problem {
				dres[i].Status, dres[i].Fix = check.Info, ""
				dres[i].Summary = fmt.Sprintf("%s resolves to %s, which the CA reaches: it is on this host or a private network", name, joinAddrs(dfacts.Private))
				dres[i].Add("the CA is on this host or a private network, so it reaches %s", joinAddrs(dfacts.Private))
			}
		}
	}
	nr.Checks = append(nr.Checks, dres...)

	s := situation(name, opts, ca, host, dfacts)
	if s.ALPNRoute != "" {
		// Detour listens at the route's target while the CA validates:
		// another program there would keep it from binding.
		if hs, err := hostcheck.HoldersOf(cmp.Or(opts.Host.ProcRoot, "/proc"), "tcp", s.ALPNRoute); err == nil {
			for _, h := range hs {
				if h.Server != "detour" {
					s.ALPNRouteBusy = fmt.Sprintf("%s (pid %d: %s)", cmp.Or(h.Server, "a process"), h.PID, h.Command)
				}
			}
		}
	}
	if !opts.NoProbe && !s.Wildcard && s.AddressProblem == "" {
		popts := httpprobe.Options{Port: opts.HTTPPort, TLSPort: opts.TLSPort, Logger: opts.Logger,
			Lookup: authoritative(dfacts)}
		var wg sync.WaitGroup
		var webroot, side check.Result
		var webrootRes, sideRes httpprobe.Result
		ranWebroot, ranSide := false, false
		// The probes run even when the local firewall drops the port: the
		// host's own requests do not cross its inbound filter, and a
		// window opens the port for the CA.
		if s.Webroot != "" {
			ranWebroot = true
			wg.Go(func() { webrootRes, webroot = httpprobe.ProbeWebroot(ctx, base, s.Webroot, popts) })
		}
		if s.Server80 != "" && s.ACMEForward != "" {
			ranSide = true
			wg.Go(func() { sideRes, side = httpprobe.ProbeSidePort(ctx, base, s.SidePortListen, popts) })
		}
		wg.Wait()
		if ranWebroot {
			nr.Checks = append(nr.Checks, webroot)
			s.WebrootProbe = probeOf(webrootRes, webroot)
		}
		if ranSide {
			nr.Checks = append(nr.Checks, side)
			s.SidePortProbe = probeOf(sideRes, side)
		}
	}
	nr.Situation = s
	nr.Paths = Rank(s)
	return nr
}

// probeOf distils a probe's result.
func probeOf(res httpprobe.Result, r check.Result) Probe {
	if r.Status == check.Skipped {
		return Probe{Why: r.Summary}
	}
	p := Probe{Ran: true, OK: res.OK}
	if !res.OK {
		p.Why, p.Fix = r.Summary, r.Fix
		// httpprobe warns (rather than fails) when the address it could
		// not reach is on no local interface: the CA's view cannot be
		// proven from here.
		p.Unproven = r.Status == check.Warning
	}
	return p
}

// authoritative makes the probes use the addresses the authoritative
// servers gave, not a possibly stale local resolver.
func authoritative(f dnscheck.Facts) func(context.Context, string) ([]netip.Addr, error) {
	addrs := slices.Concat(f.AAAA, f.A)
	if len(addrs) == 0 {
		return nil
	}
	return func(ctx context.Context, host string) ([]netip.Addr, error) {
		if strings.EqualFold(strings.TrimSuffix(host, "."), strings.TrimSuffix(f.Name, ".")) {
			return addrs, nil
		}
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
}
