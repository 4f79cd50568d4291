package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/acmedns"
	"github.com/detour-acme/detour/internal/plan"
)

// Flags of detour dns-server.
const (
	flagZone                = "zone"
	flagNSName              = "ns-name"
	flagNSAddr              = "ns-addr"
	flagDNSListen           = "dns-listen"
	flagAPIListen           = "api-listen"
	flagAPIHostname         = "api-hostname"
	flagTLSCert             = "tls-cert"
	flagTLSKey              = "tls-key"
	flagACME                = "acme"
	flagTXTLifetime         = "txt-lifetime"
	flagDisableRegistration = "disable-registration"
	flagAPIRateLimit        = "api-rate-limit"
)

type dnsServerFlags struct {
	zone, nsName        string
	nsAddrs             []string
	dnsListen           string
	apiListen           string
	apiHostname         string
	tlsCert, tlsKey     string
	acme                bool
	ca, caRoots, email  string
	profile             string
	agreeTOS            bool
	txtLifetime         time.Duration
	disableRegistration bool
	rateLimit           float64
}

// dnsServerPlan is the checked form of the flags.
type dnsServerPlan struct {
	zone, nsName, apiHost string // FQDNs
	addrs                 []netip.Addr
}

func (a *app) dnsServerCommand() *cobra.Command {
	var f dnsServerFlags
	cmd := &cobra.Command{
		Use:   "dns-server",
		Short: "Serve a delegated challenge zone with an acme-dns compatible API",
		Long: `Run an authoritative DNS server for a zone delegated to this host (for example
auth.example.net) together with an acme-dns compatible HTTP API, so that any
acme-dns client (lego, certbot-dns-acmedns, acme.sh, Detour's acme-dns path)
can answer dns-01 challenges for domains whose owners created one CNAME:

  _acme-challenge.example.com. CNAME <subdomain>.auth.example.net.

The API: POST /register, POST /update (X-Api-User, X-Api-Key), GET /health,
as acme-dns has them. Unlike acme-dns, a name may hold any number of TXT
values at once (a name and its wildcard, several orders), each served for
--txt-lifetime after its last update. Passwords are stored only as bcrypt
hashes; accounts and unexpired values are kept under the state directory
(acme-dns/accounts/) and survive a restart.

With [store] kind = "etcd" in the configuration, accounts and TXT values
are kept in the fleet's etcd instead: run dns-server on several hosts with
the same configuration (each its own --ns-addr, all of them NS records of
the zone) and any of them answers the API and DNS, for registrations and
updates made through any other. Each host keeps its own API certificate
(--acme obtains one per host, under its state directory).

The API serves TLS: with --tls-cert/--tls-key (re-read when the files
change), or with --acme, which obtains and renews a certificate for
--api-hostname from --ca through dns-01 answered by this very server.
Plain HTTP is allowed only on a loopback --api-listen (behind a local proxy).

In the parent zone, delegate the zone to this host (the command prints the
records): an NS record for the zone and, when --ns-name is inside the zone,
glue A/AAAA records with --ns-addr.`,
		Example: `  detour dns-server --zone auth.example.net --ns-addr 203.0.113.7 --acme --email ops@example.net --agree-tos
  detour dns-server --zone auth.example.net --ns-addr 203.0.113.7 --tls-cert /etc/ssl/auth.pem --tls-key /etc/ssl/auth.key
  detour dns-server --zone auth.example.net --ns-addr 203.0.113.7 --api-listen 127.0.0.1:8053`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.runDNSServer(cmd.Context(), f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.zone, flagZone, "", "the delegated zone served, e.g. auth.example.net (required)")
	fl.StringVar(&f.nsName, flagNSName, "", "name server host name in the zone's NS and SOA records (default ns.<zone>)")
	fl.StringSliceVar(&f.nsAddrs, flagNSAddr, nil, "public IP address(es) of this server, served for --ns-name and --api-hostname (repeat for IPv4 and IPv6)")
	fl.StringVar(&f.dnsListen, flagDNSListen, ":53", "UDP and TCP address the DNS server binds")
	fl.StringVar(&f.apiListen, flagAPIListen, ":443", "TCP address of the HTTP API")
	fl.StringVar(&f.apiHostname, flagAPIHostname, "", "host name of the API, for its certificate (default: the zone apex)")
	fl.StringVar(&f.tlsCert, flagTLSCert, "", "PEM certificate chain of the API")
	fl.StringVar(&f.tlsKey, flagTLSKey, "", "PEM private key of the API")
	fl.BoolVar(&f.acme, flagACME, false, "obtain and renew the API's certificate from --ca via dns-01 on this server's own zone")
	fl.StringVar(&f.ca, flagCA, "", "CA for --acme: a shortcut, a [ca.NAME] of the config, or a directory URL (default from the config, else letsencrypt)")
	fl.StringVar(&f.caRoots, flagCARoots, "", "PEM bundle of roots to trust for the CA's API (--acme with a private CA)")
	fl.StringVar(&f.email, flagEmail, "", "contact email for the ACME account (--acme)")
	fl.StringVar(&f.profile, flagProfile, "", "ACME profile to request (--acme)")
	fl.BoolVar(&f.agreeTOS, flagAgreeTOS, false, "accept the CA's terms of service (--acme)")
	fl.DurationVar(&f.txtLifetime, flagTXTLifetime, acmedns.DefaultTXTLifetime, "how long a TXT value is served after its last update")
	fl.BoolVar(&f.disableRegistration, flagDisableRegistration, false, "refuse POST /register (404), as acme-dns's disable_registration")
	fl.Float64Var(&f.rateLimit, flagAPIRateLimit, acmedns.DefaultRateLimit, "API requests per second per source address (/register and /update); negative disables")
	return cmd
}

// plan checks the flags.
func (f dnsServerFlags) plan() (dnsServerPlan, error) {
	var p dnsServerPlan
	if f.zone == "" {
		return p, usagef("--%s is required: name the zone delegated to this server, e.g. auth.example.net", flagZone)
	}
	p.zone = dns.CanonicalName(f.zone)
	if _, ok := dns.IsDomainName(p.zone); !ok || p.zone == "." || strings.Contains(p.zone, " ") {
		return p, usagef("--%s %q is not a domain name; write e.g. auth.example.net", flagZone, f.zone)
	}
	p.nsName = "ns." + p.zone
	if f.nsName != "" {
		p.nsName = dns.CanonicalName(f.nsName)
	}
	p.apiHost = p.zone
	if f.apiHostname != "" {
		p.apiHost = dns.CanonicalName(f.apiHostname)
	}
	for _, s := range f.nsAddrs {
		ip, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return p, usagef("--%s %q is not an IP address; give this server's public address, e.g. 203.0.113.7", flagNSAddr, s)
		}
		p.addrs = append(p.addrs, ip.Unmap())
	}
	if dns.IsSubDomain(p.zone, p.nsName) && len(p.addrs) == 0 {
		return p, usagef("--%s is required: the name server %s lies inside the zone, so this server must answer its address (and the parent needs it as glue)",
			flagNSAddr, strings.TrimSuffix(p.nsName, "."))
	}
	hasFiles := f.tlsCert != "" || f.tlsKey != ""
	switch {
	case hasFiles && (f.tlsCert == "" || f.tlsKey == ""):
		return p, usagef("--%s and --%s go together: give both", flagTLSCert, flagTLSKey)
	case hasFiles && f.acme:
		return p, usagef("give either --%s/--%s or --%s, not both", flagTLSCert, flagTLSKey, flagACME)
	case f.acme && !dns.IsSubDomain(p.zone, p.apiHost):
		return p, usagef("--%s needs --%s inside the zone %s, whose dns-01 records this server answers", flagACME, flagAPIHostname, strings.TrimSuffix(p.zone, "."))
	case !hasFiles && !f.acme && !loopbackListen(f.apiListen):
		return p, usagef("the API needs TLS on %s: give --%s/--%s or --%s; plain HTTP is allowed only on a loopback --%s such as 127.0.0.1:8053",
			f.apiListen, flagTLSCert, flagTLSKey, flagACME, flagAPIListen)
	case f.txtLifetime <= 0:
		return p, usagef("--%s must be positive, e.g. 1h", flagTXTLifetime)
	}
	return p, nil
}

// loopbackListen reports whether addr binds a loopback address only.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return host == "localhost" || err == nil && ip.IsLoopback()
}

func (a *app) runDNSServer(ctx context.Context, f dnsServerFlags) error {
	p, err := f.plan()
	if err != nil {
		return err
	}
	pl, err := a.planner(false)
	if err != nil {
		return err
	}
	defer pl.Close()
	err = pl.ServeDNS(ctx, plan.DNSServerInput{
		Zone: p.zone, NSName: p.nsName, APIHost: p.apiHost, Addrs: p.addrs,
		DNSListen: f.dnsListen, APIListen: f.apiListen, TLSCert: f.tlsCert, TLSKey: f.tlsKey,
		ACME: f.acme, Account: accountFlags{ca: f.ca, caRoots: f.caRoots, email: f.email, agreeTOS: f.agreeTOS}.input(),
		Profile: f.profile, TXTLifetime: f.txtLifetime, DisableRegistration: f.disableRegistration, RateLimit: f.rateLimit,
	}, plan.DNSServerEvents{
		DNSListening: func(addr string) { a.printDelegation(p, addr) },
		APIListening: func(scheme, addr string) { a.printAPI(p, scheme, addr) },
	})
	var le *plan.ListenError
	if errors.As(err, &le) {
		flag := flagDNSListen
		if le.Which == "api" {
			flag = flagAPIListen
		}
		return fmt.Errorf("%w (choose the address with --%s)", err, flag)
	}
	return usage(err)
}

// printDelegation tells the operator what the parent zone needs and where
// the DNS server listens.
func (a *app) printDelegation(p dnsServerPlan, dnsAddr string) {
	out := a.stdout
	zone := strings.TrimSuffix(p.zone, ".")
	parent := zone
	if i := strings.IndexByte(zone, '.'); i >= 0 {
		parent = zone[i+1:]
	}
	fmt.Fprintf(out, "DNS server for %s listening on %s\nIn the zone %s, delegate %s to this server:\n", zone, dnsAddr, parent, zone)
	fmt.Fprintf(out, "  %s. NS %s\n", zone, p.nsName)
	if dns.IsSubDomain(p.zone, p.nsName) {
		for _, ip := range p.addrs {
			typ := "A"
			if ip.Is6() {
				typ = "AAAA"
			}
			fmt.Fprintf(out, "  %s %s %s\n", p.nsName, typ, ip)
		}
	}
}

// printAPI tells where the API is served.
func (a *app) printAPI(p dnsServerPlan, scheme, apiAddr string) {
	host := strings.TrimSuffix(p.apiHost, ".")
	_, port, _ := net.SplitHostPort(apiAddr)
	url := scheme + "://" + host
	if !(scheme == "https" && port == "443") {
		url += ":" + port
	}
	fmt.Fprintf(a.stdout, "acme-dns API %s listening on %s\n", url, apiAddr)
}
