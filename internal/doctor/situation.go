package doctor

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/detour-acme/detour/internal/doctor/dnscheck"
	"github.com/detour-acme/detour/internal/doctor/hostcheck"
)

// cloudBackends maps a cloud (hostcheck.Facts.Cloud) to the Detour
// firewall backend for its cloud firewall.
var cloudBackends = map[string]string{"digitalocean": "digitalocean", "aws": "aws-sg", "hetzner": "hetzner"}

// situation distils the checks' facts about name into what ranking needs.
func situation(name string, opts Options, ca CAFacts, host hostcheck.Facts, d dnscheck.Facts) Situation {
	s := Situation{Name: name, HTTPPort: opts.HTTPPort, TLSPort: opts.TLSPort, Wildcard: strings.HasPrefix(name, "*."), Zone: d.Zone, Provider: d.Provider, CAOffers: ca.Offers}
	if ip, err := netip.ParseAddr(name); err == nil {
		s.IP = true
		_ = ip
	}
	// Addresses.
	switch {
	case s.IP:
	case d.Zone == "":
		s.NoZone = "no DNS zone holds " + name + " (see dns.zone): the CA cannot resolve it, whatever the path"
	case len(d.A)+len(d.AAAA) == 0:
		s.AddressProblem = name + " has no A or AAAA record on its authoritative servers, so the CA cannot connect to it"
		s.AddressFix = "publish the host's public address as an A (and AAAA) record, or use a DNS path"
	case len(d.Private) > 0 && !ca.Local:
		s.AddressProblem = fmt.Sprintf("%s resolves to %s, a private or reserved address the CA cannot reach", name, joinAddrs(d.Private))
		s.AddressFix = "publish the public address in the A/AAAA records, or use a DNS path"
	case len(d.AAAA) > 0 && !d.HostIPv6 && len(d.A) == 0:
		s.AddressProblem = fmt.Sprintf("%s has only the AAAA record %s and this host has no global IPv6 address", name, joinAddrs(d.AAAA))
		s.AddressFix = "publish the host's IPv4 address as an A record, or configure that IPv6 address on this host"
	case len(d.AAAA) > 0 && !d.HostIPv6:
		s.AddressProblem = fmt.Sprintf("%s has the AAAA record %s but this host has no global IPv6 address: the CA tries IPv6 first and fails", name, joinAddrs(d.AAAA))
		s.AddressFix = "remove the AAAA record, or configure that IPv6 address on this host (or on the balancer in front of it)"
	}
	s.NAT = len(d.NotLocal) > 0

	// Ports and servers.
	s.Server80, s.Holder80 = holder(host, opts.HTTPPort)
	s.Server443, s.Holder443 = holder(host, opts.TLSPort)
	base := strings.TrimPrefix(name, "*.")
	if site, ok := siteFor(host.Sites, base, opts.HTTPPort); ok {
		s.Webroot, s.Proxies = site.DocRoot, site.Proxies
		if site.ACMEForward != "" {
			s.ACMEForward = site.ACMEForward
		}
		if site.ACMEStatic != "" && s.Webroot == "" {
			s.Webroot = site.ACMEStatic
		}
	}
	s.SidePortListen = cmp.Or(forwardListen(s.ACMEForward), opts.SidePortListen)
	if opts.Snippet != nil && s.Server80 != "" {
		s.SidePortSnippet = opts.Snippet("http", s.Server80, s.SidePortListen)
	}
	for _, st := range host.Streams {
		if st.Port == opts.TLSPort {
			s.Stream443, s.ALPNRoute = st.Kind, st.ALPNRoute
			if opts.Snippet != nil {
				s.ALPNSnippet = opts.Snippet("tls-alpn", st.Server, opts.ALPNListen)
			}
		}
	}
	// Firewall.
	s.Firewall80, s.Firewall443 = "unknown", "unknown"
	for _, fp := range host.Firewall {
		v := worstFamily(fp, len(d.A) > 0, len(d.AAAA) > 0)
		switch fp.Port {
		case opts.HTTPPort:
			s.Firewall80 = v
		case opts.TLSPort:
			s.Firewall443 = v
		}
		if fp.Window != "" {
			s.FirewallBackend = fp.Window
		}
	}
	// A cloud firewall is not seen from the host: it is named in the
	// reasons (its backend needs the firewall's ID), never used in place
	// of a local drop only the local firewall can open.
	s.Cloud, s.CloudBackend = host.Cloud, cloudBackends[host.Cloud]

	// DNS paths.
	if pth := opts.ProviderPaths[d.Provider]; pth != "" && d.Provider != "" {
		s.ProviderConfigured, s.ProviderPath = d.Provider, pth
	}
	if d.RFC2136.Accepted {
		k := d.RFC2136.Key
		s.RFC2136Key, s.RFC2136Algorithm, s.RFC2136Source, s.RFC2136Server = k.Name, k.Algorithm, k.Source, d.RFC2136.Server
	} else if len(d.RFC2136.Tried) > 0 && len(opts.Keys) > 0 {
		s.RFC2136Refused = strings.Join(d.RFC2136.Tried, "; ")
	}
	s.AcmeDNSCNAME, s.AcmeDNSLive = d.AcmeDNS.CNAME, d.AcmeDNS.Live
	if opts.AcmeDNSServer != nil {
		s.AcmeDNSServer = opts.AcmeDNSServer(base)
	}
	s.PersistOK = d.Persist.Found && d.Persist.MatchesAccount
	s.DNSSECBroken, s.DNSSECReason = d.DNSSEC.Broken, d.DNSSEC.Reason

	// CAA.
	acct := ""
	if len(opts.AccountURIs) > 0 {
		acct = opts.AccountURIs[0]
	}
	switch {
	case d.CAA.Failed != "" && !d.CAA.AllowsIssuer:
		// The CA's own CAA lookup would fail the same way: dnscheck's
		// check says so; the ranking cannot promise any path.
		s.CAAForbids = "the CAA lookup for " + name + " fails (" + d.CAA.Failed + "): the CA refuses to issue while it cannot read CAA"
	case !d.CAA.AllowsIssuer:
		s.CAAForbids = fmt.Sprintf("CAA at %s does not allow %s: %s", d.CAA.At, ca.issuer(), strings.Join(d.CAA.Records, "; "))
	default:
		s.CAAForbids, s.CAAChange, s.CAAMethods = caaLimits(d.CAA, acct, ca)
	}
	return s
}

// caaMethods are the validation methods CAA's validationmethods can name
// (RFC 8657 §4).
var caaMethods = []string{"http-01", "dns-01", "tls-alpn-01", "dns-account-01", "dns-persist-01"}

// caaLimits reads what the CAA properties naming the CA allow this host's
// account acct ("" = none yet): every property counts (one may allow what
// another does not). It returns why no path can work (forbids), a change
// CAA needs first (change), or the methods allowed when only some are.
func caaLimits(c dnscheck.CAAResult, acct string, ca CAFacts) (forbids, change string, methods []string) {
	var naming []dnscheck.CAAIssue
	for _, p := range c.Issues {
		if p.Err == "" && p.Issuer != "" && (len(c.Issuers) == 0 || slices.ContainsFunc(c.Issuers, func(d string) bool {
			return strings.EqualFold(strings.TrimSuffix(d, "."), p.Issuer)
		})) {
			naming = append(naming, p)
		}
	}
	if len(naming) == 0 {
		return "", "", nil
	}
	if acct == "" && !slices.ContainsFunc(naming, func(p dnscheck.CAAIssue) bool { return p.Params["accounturi"] == "" }) {
		var accts []string
		for _, p := range naming {
			accts = append(accts, p.Params["accounturi"])
		}
		return "", fmt.Sprintf("CAA at %s lets %s issue only for the account %s, and this host has no account at the CA yet: "+
			"create it (detour account register), then add its URL in another CAA issue property (accounturi=...), or copy that account here",
			c.At, ca.issuer(), strings.Join(accts, ", ")), nil
	}
	for _, m := range caaMethods {
		if c.AllowsMethod(m, acct) {
			methods = append(methods, m)
		}
	}
	switch {
	case len(methods) == 0:
		return fmt.Sprintf("CAA at %s lets %s issue only for another account or with other validation methods than this host's (account %s): %s",
			c.At, ca.issuer(), acct, strings.Join(c.Records, "; ")), "", nil
	case len(methods) == len(caaMethods):
		return "", "", nil
	}
	return "", "", methods
}

// holder names the server holding port and its process ("nginx (pid
// 123: nginx: master process ...)").
func holder(h hostcheck.Facts, port int) (server, who string) {
	hs := h.Holders[port]
	if len(hs) == 0 {
		return "", ""
	}
	x := hs[0]
	return cmp.Or(x.Server, "unknown"), fmt.Sprintf("%s (pid %d: %s)", cmp.Or(x.Server, "a process"), x.PID, x.Command)
}

// siteFor finds the server block for name on port: an exact name first.
// A block that redirects the challenge path to HTTPS serves it from the
// TLS block's root (the CA follows the redirect to port 443), so that
// root is the webroot.
func siteFor(sites []hostcheck.Site, name string, port int) (hostcheck.Site, bool) {
	for _, s := range sites {
		if strings.EqualFold(s.Name, name) && (s.Port == port || s.Port == 0) && !s.TLS {
			if s.DocRoot == "" && strings.HasPrefix(s.ACMERedirect, "https://") {
				for _, t := range sites {
					if t.TLS && strings.EqualFold(t.Name, name) && t.DocRoot != "" {
						s.DocRoot = t.DocRoot
						break
					}
				}
			}
			return s, true
		}
	}
	// No block names it: the port's default block answers it.
	for _, s := range sites {
		if (s.Port == port || s.Port == 0) && !s.TLS && s.Match == "default" {
			return s, true
		}
	}
	return hostcheck.Site{}, false
}

// forwardListen turns a forward target into a side-port listen address
// ("127.0.0.1:8402", "unix:/run/detour/http.sock"); "" when it is not one
// (a HAProxy backend's name, a host name).
func forwardListen(target string) string {
	t := strings.TrimPrefix(strings.TrimPrefix(target, "http://"), "https://")
	if rest, ok := strings.CutPrefix(t, "unix:"); ok {
		// nginx writes http://unix:/path:/uri.
		if i := strings.Index(rest, ":"); i > 0 {
			rest = rest[:i]
		}
		if strings.HasPrefix(rest, "/") {
			return "unix:" + rest
		}
		return ""
	}
	if i := strings.IndexByte(t, '/'); i >= 0 {
		t = t[:i]
	}
	if _, err := netip.ParseAddrPort(t); err != nil {
		return ""
	}
	return t
}

// worstFamily is the verdict on the families the CA uses for the name.
func worstFamily(fp hostcheck.FirewallPort, v4, v6 bool) string {
	var vs []string
	if v4 || !v6 {
		vs = append(vs, fp.V4)
	}
	if v6 {
		vs = append(vs, fp.V6)
	}
	switch {
	case slices.Contains(vs, "drop"):
		return "drop"
	case slices.Contains(vs, "unknown") || slices.Contains(vs, ""):
		return "unknown"
	}
	return "accept"
}

func joinAddrs(as []netip.Addr) string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return strings.Join(s, ", ")
}
