package doctor

import (
	"net/netip"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/doctor/dnscheck"
	"github.com/detour-acme/detour/internal/doctor/hostcheck"
)

// TestSituation: the checks' facts distil into what ranking needs.
func TestSituation(t *testing.T) {
	a := netip.MustParseAddr
	opts := Options{HTTPPort: 80, TLSPort: 443, SidePortListen: "127.0.0.1:8402", ALPNListen: "127.0.0.1:8403",
		Keys: []dnscheck.TSIGKey{{Name: "k"}}, AccountURIs: []string{"https://ca.example/acct/1"},
		Snippet: func(kind, server, listen string) string { return kind + " " + server + " " + listen }}
	public := dnscheck.Facts{Name: "www.example.com", Zone: "example.com.", A: []netip.Addr{a("203.0.113.10")}, HostIPv6: true,
		CAA: dnscheck.CAAResult{AllowsIssuer: true}}
	nginx := hostcheck.Facts{
		Holders: map[int][]hostcheck.Holder{80: {{Port: 80, PID: 10, Server: "nginx", Command: "nginx: master process"}},
			443: {{Port: 443, PID: 10, Server: "nginx"}}},
		Sites:   []hostcheck.Site{{Server: "nginx", Name: "other.example.com", Port: 80, DocRoot: "/srv/other"}, {Server: "nginx", Name: "www.example.com", Port: 80, DocRoot: "/srv/www"}},
		Streams: []hostcheck.Stream{{Server: "nginx", Port: 443, Kind: "nginx-stream", ALPNRoute: "127.0.0.1:9443"}},
		Firewall: []hostcheck.FirewallPort{{Port: 80, V4: "accept", V6: "drop", Backend: "nftables", Window: "nftables"},
			{Port: 443, V4: "accept", V6: "accept", Backend: "nftables"}},
	}
	t.Run("web server", func(t *testing.T) {
		s := situation("www.example.com", opts, CAFacts{}, nginx, public)
		if s.Server80 != "nginx" || !strings.Contains(s.Holder80, "pid 10") || s.Webroot != "/srv/www" || s.Stream443 != "nginx-stream" ||
			s.ALPNRoute != "127.0.0.1:9443" || s.SidePortSnippet != "http nginx 127.0.0.1:8402" || s.ALPNSnippet != "tls-alpn nginx 127.0.0.1:8403" {
			t.Errorf("situation = %+v", s)
		}
		// IPv6 drops :80, but the name has no AAAA: the CA uses IPv4 only.
		if s.Firewall80 != "accept" || s.FirewallBackend != "nftables" || s.AddressProblem != "" {
			t.Errorf("firewall %s/%s, address problem %q", s.Firewall80, s.FirewallBackend, s.AddressProblem)
		}
	})
	t.Run("AAAA on a host without IPv6, dropped on IPv6", func(t *testing.T) {
		d := public
		d.AAAA, d.HostIPv6 = []netip.Addr{a("2001:db8::10")}, false
		s := situation("www.example.com", opts, CAFacts{}, nginx, d)
		if !strings.Contains(s.AddressProblem, "AAAA") || s.Firewall80 != "drop" {
			t.Errorf("address problem %q, firewall %s", s.AddressProblem, s.Firewall80)
		}
	})
	t.Run("private address, public and local CA", func(t *testing.T) {
		d := public
		d.A, d.Private = []netip.Addr{a("10.0.0.5")}, []netip.Addr{a("10.0.0.5")}
		if s := situation("www.example.com", opts, CAFacts{}, hostcheck.Facts{}, d); !strings.Contains(s.AddressProblem, "10.0.0.5") {
			t.Errorf("public CA: address problem %q", s.AddressProblem)
		}
		if s := situation("www.example.com", opts, CAFacts{Local: true}, hostcheck.Facts{}, d); s.AddressProblem != "" {
			t.Errorf("local CA: address problem %q", s.AddressProblem)
		}
	})
	t.Run("CAA and the account", func(t *testing.T) {
		caa := func(values ...string) dnscheck.CAAResult {
			var rrs []*mdns.CAA
			for _, v := range values {
				rrs = append(rrs, &mdns.CAA{Hdr: mdns.RR_Header{Name: "example.com.", Rrtype: mdns.TypeCAA, Class: mdns.ClassINET}, Tag: "issue", Value: v})
			}
			return dnscheck.EvaluateCAA(rrs, "example.com", false, []string{"letsencrypt.org"})
		}
		ca := CAFacts{CAAIdentities: []string{"letsencrypt.org"}}
		d := public
		d.CAA = caa("letsencrypt.org; accounturi=https://ca.example/acct/2")
		if s := situation("www.example.com", opts, ca, hostcheck.Facts{}, d); !strings.Contains(s.CAAForbids, "another account") {
			t.Errorf("foreign accounturi: %q", s.CAAForbids)
		}
		// A second property for this account allows it.
		d.CAA = caa("letsencrypt.org; accounturi=https://ca.example/acct/2", "letsencrypt.org; accounturi=https://ca.example/acct/1")
		if s := situation("www.example.com", opts, ca, hostcheck.Facts{}, d); s.CAAForbids != "" || s.CAAMethods != nil {
			t.Errorf("two accounts, one ours: forbids %q, methods %v", s.CAAForbids, s.CAAMethods)
		}
		// No account yet: a change, not a refusal.
		noAcct := opts
		noAcct.AccountURIs = nil
		d.CAA = caa("letsencrypt.org; accounturi=https://ca.example/acct/2")
		if s := situation("www.example.com", noAcct, ca, hostcheck.Facts{}, d); s.CAAForbids != "" || !strings.Contains(s.CAAChange, "no account at the CA yet") {
			t.Errorf("no account: forbids %q, change %q", s.CAAForbids, s.CAAChange)
		}
		d.CAA = caa(`other.example`)
		if s := situation("www.example.com", opts, ca, hostcheck.Facts{}, d); !strings.Contains(s.CAAForbids, "other.example") || !strings.Contains(s.CAAForbids, "letsencrypt.org") {
			t.Errorf("issuer not allowed: %q", s.CAAForbids)
		}
		d.CAA = caa("letsencrypt.org; validationmethods=dns-01", "letsencrypt.org; validationmethods=http-01")
		if s := situation("www.example.com", opts, ca, hostcheck.Facts{}, d); strings.Join(s.CAAMethods, ",") != "http-01,dns-01" {
			t.Errorf("validationmethods of two properties: %v", s.CAAMethods)
		}
	})
	t.Run("cloud and DNS", func(t *testing.T) {
		h := hostcheck.Facts{Cloud: "aws", Firewall: []hostcheck.FirewallPort{{Port: 80, V4: "drop", V6: "drop"}}}
		d := public
		d.RFC2136 = dnscheck.RFC2136Result{Server: "192.0.2.53:53", Accepted: true, Key: dnscheck.TSIGKey{Name: "k", Algorithm: "hmac-sha256", Source: "/etc/bind/k.key"}}
		d.AcmeDNS = dnscheck.AcmeDNSResult{CNAME: "x.auth.example.org.", Live: true}
		o := opts
		o.AcmeDNSServer = func(string) string { return "https://auth.example.org" }
		s := situation("www.example.com", o, CAFacts{}, h, d)
		// No host firewall backend can open the port: the cloud's does
		// not stand in for it (the local drop would stay).
		if s.Firewall80 != "drop" || s.FirewallBackend != "" || s.CloudBackend != "aws-sg" || s.RFC2136Key != "k" || s.RFC2136Server != "192.0.2.53:53" ||
			s.AcmeDNSServer != "https://auth.example.org" || !s.AcmeDNSLive {
			t.Errorf("situation = %+v", s)
		}
	})
}
