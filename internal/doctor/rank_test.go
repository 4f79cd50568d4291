package doctor

import (
	"strings"
	"testing"
)

// TestRank: for each situation of the scenarios, the best path and
// the verdicts that matter.
func TestRank(t *testing.T) {
	base := func(mod func(*Situation)) Situation {
		s := Situation{Name: "www.example.com", Zone: "example.com.", Firewall80: "accept", Firewall443: "accept", FirewallBackend: "nftables"}
		mod(&s)
		return s
	}
	tests := []struct {
		name      string
		s         Situation
		best      string // kind/challenge[+window]
		verdict   Verdict
		whyHas    string
		impossibl []string // kinds (kind/challenge) that must be impossible
	}{
		{"busy nginx with a docroot", base(func(s *Situation) {
			s.Server80, s.Server443, s.Webroot, s.WebrootProbe = "nginx", "nginx", "/srv/www", Probe{Ran: true, OK: true}
		}), "webroot/http-01", Works, "/srv/www", []string{"standalone/http-01", "standalone/tls-alpn-01"}},
		{"HAProxy in front of an app", base(func(s *Situation) {
			s.Server80, s.Server443, s.Proxies, s.SidePortSnippet = "haproxy", "haproxy", true, "acl acme path_beg /.well-known/acme-challenge/"
		}), "side-port/http-01", AfterChange, "does not forward", []string{"webroot/http-01"}},
		{"side-port already forwarded", base(func(s *Situation) {
			s.Server80, s.Proxies, s.ACMEForward, s.SidePortProbe = "haproxy", true, "http://127.0.0.1:8402", Probe{Ran: true, OK: true}
		}), "side-port/http-01", Works, "already forwards", nil},
		{"nginx stream on 443 with a route, 80 dropped", base(func(s *Situation) {
			s.Server443, s.Stream443, s.ALPNRoute, s.Firewall80 = "nginx", "nginx-stream", "127.0.0.1:8403", "drop"
		}), "alpn-forward/tls-alpn-01", Works, "already sends acme-tls/1", nil},
		{"acme-tls/1 route to a busy address", base(func(s *Situation) {
			s.Server443, s.Stream443, s.ALPNRoute, s.ALPNRouteBusy, s.Firewall80, s.FirewallBackend = "nginx", "nginx-stream", "127.0.0.1:9443", "nginx (pid 3)", "drop", ""
			s.Server80 = "nginx"
		}), "alpn-forward/tls-alpn-01", AfterChange, "a free address", nil},
		{"policy-drop firewall, free ports", base(func(s *Situation) {
			s.Firewall80, s.Firewall443 = "drop", "drop"
		}), "standalone/http-01+nftables", Works, "opens it in nftables", nil},
		{"drop on a cloud", base(func(s *Situation) {
			s.Firewall80, s.Firewall443, s.Cloud, s.CloudBackend = "drop", "drop", "aws", "aws-sg"
		}), "standalone/http-01+nftables", Works, `on aws the cloud firewall may drop it too, which this host cannot see: then list it first, firewall = ["aws-sg", "nftables"]`, nil},
		{"drop with no backend", base(func(s *Situation) {
			s.Firewall80, s.Firewall443, s.FirewallBackend, s.Provider = "drop", "drop", "", "cloudflare"
		}), "dns-provider/dns-01", AfterChange, "cloudflare", []string{"standalone/http-01"}},
		{"AAAA trap", base(func(s *Situation) {
			s.Server80, s.Server443, s.Webroot, s.WebrootProbe = "nginx", "nginx", "/srv/www", Probe{Ran: true, Why: "IPv6 answers 404", Fix: "listen [::]:80 in the server block"}
		}), "webroot/http-01", AfterChange, "IPv6 answers 404", nil},
		{"CAA forbids the CA", base(func(s *Situation) {
			s.CAAForbids = "CAA at example.com allows only otherca.example"
		}), "", Impossible, "otherca", nil},
		{"CAA limits methods", base(func(s *Situation) {
			s.CAAMethods = []string{"dns-01"}
			s.RFC2136Key, s.RFC2136Algorithm, s.RFC2136Server, s.RFC2136Source = "detour-key", "hmac-sha256", "192.0.2.53:53", "/etc/bind/detour.key"
		}), "rfc2136/dns-01", Works, "detour-key", []string{"standalone/http-01"}},
		{"no inbound port, updatable BIND", base(func(s *Situation) {
			s.Server80, s.Server443, s.Proxies = "nginx", "nginx", true
			s.Firewall80, s.Firewall443, s.FirewallBackend = "drop", "drop", ""
			s.RFC2136Key, s.RFC2136Algorithm, s.RFC2136Server, s.RFC2136Source = "detour-key", "hmac-sha256", "192.0.2.53:53", "/etc/bind/detour.key"
		}), "rfc2136/dns-01", Works, "accepted an update", []string{"side-port/http-01"}},
		{"live acme-dns CNAME", base(func(s *Situation) {
			s.Server80, s.Server443, s.Proxies, s.Firewall80, s.FirewallBackend = "nginx", "nginx", true, "drop", ""
			s.AcmeDNSCNAME, s.AcmeDNSLive, s.AcmeDNSServer = "d420c923.auth.example.org.", true, "https://auth.example.org"
		}), "acme-dns/dns-01", Works, "CNAME", nil},
		{"wildcard", base(func(s *Situation) {
			s.Name, s.Wildcard, s.Provider = "*.example.com", true, "hetzner"
		}), "dns-provider/dns-01", AfterChange, "hetzner", []string{"standalone/http-01", "webroot/http-01"}},
		{"private address", base(func(s *Situation) {
			s.AddressProblem, s.AddressFix = "www.example.com has the private address 10.0.0.5 in public DNS", "publish the public address"
			s.RFC2136Key, s.RFC2136Algorithm = "k", "hmac-sha256"
		}), "rfc2136/dns-01", Works, "accepted", nil},
		{"a name no zone holds", base(func(s *Situation) {
			s.Zone, s.NoZone = "", "no DNS zone holds www.example.com"
		}), "", AfterChange, "registered and delegated", nil},
		{"broken DNSSEC", base(func(s *Situation) {
			s.DNSSECBroken, s.DNSSECReason = true, "the DS at the parent matches no DNSKEY"
		}), "", Impossible, "DNSSEC", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs := Rank(tc.s)
			got := rs[0].Kind + "/" + rs[0].Challenge
			if rs[0].Window != "" {
				got += "+" + rs[0].Window
			}
			if tc.best != "" && got != tc.best {
				t.Errorf("best = %s (%s: %s), want %s\n%s", got, rs[0].Verdict, rs[0].Why, tc.best, dump(rs))
			}
			if rs[0].Verdict != tc.verdict || !strings.Contains(rs[0].Why+" "+rs[0].Change, tc.whyHas) {
				t.Errorf("best %s: %s, %q / %q; want %s mentioning %q", got, rs[0].Verdict, rs[0].Why, rs[0].Change, tc.verdict, tc.whyHas)
			}
			for _, k := range tc.impossibl {
				for _, r := range rs {
					if r.Kind+"/"+r.Challenge == k && r.Verdict != Impossible {
						t.Errorf("%s is %s (%s), want impossible", k, r.Verdict, r.Why)
					}
				}
			}
			for _, r := range rs {
				if r.Why == "" {
					t.Errorf("%s/%s has no reason", r.Kind, r.Challenge)
				}
				if r.Verdict == AfterChange && r.Change == "" {
					t.Errorf("%s/%s is after-change without the change", r.Kind, r.Challenge)
				}
			}
		})
	}
}

func dump(rs []Ranked) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString("  " + string(r.Verdict) + " " + r.Kind + "/" + r.Challenge + " " + r.Window + ": " + r.Why + "\n")
	}
	return b.String()
}

// TestRecommend: the configuration lists each name's best path once, in
// order, with its settings; a blocked name blocks the recommendation.
func TestRecommend(t *testing.T) {
	web := Rank(Situation{Name: "a.example", Server80: "nginx", Webroot: "/srv/a", WebrootProbe: Probe{Ran: true, OK: true}, Firewall80: "accept"})
	drop := Rank(Situation{Name: "b.example", Firewall80: "drop", Firewall443: "drop", FirewallBackend: "nftables"})
	rec := Recommend(CertTarget{Name: "site"}, map[string][]Ranked{"a.example": web, "b.example": drop, "c.example": web}, []string{"a.example", "b.example", "c.example"})
	if !rec.Ready || rec.Blocked != "" || len(rec.Paths) != 2 {
		t.Fatalf("recommendation = %+v", rec)
	}
	for _, want := range []string{"[path.webroot]\nkind = \"webroot\"\nroot = \"/srv/a\"\n", "[path.standalone-window]\nkind = \"standalone\"\nfirewall = \"nftables\"\n",
		"name = \"site\"\ndomains = [\"a.example\", \"b.example\", \"c.example\"]\npaths = [\"webroot\", \"standalone-window\"]\n"} {
		if !strings.Contains(rec.TOML, want) {
			t.Errorf("TOML lacks %q:\n%s", want, rec.TOML)
		}
	}
	if got := rec.Paths[0].For; len(got) != 2 {
		t.Errorf("webroot chosen for %v, want a.example and c.example", got)
	}
	blocked := Recommend(CertTarget{}, map[string][]Ranked{"x": Rank(Situation{Name: "x", CAAForbids: "CAA at x allows only other.example"})}, []string{"x"})
	if blocked.Ready || blocked.TOML != "" || !strings.Contains(blocked.Blocked, "other.example") {
		t.Errorf("blocked recommendation = %+v", blocked)
	}
}

// TestRecommendUniqueNames: a path name the configuration has is not
// reused.
func TestRecommendUniqueNames(t *testing.T) {
	web := Rank(Situation{Name: "a.example", Server80: "nginx", Webroot: "/srv/a", WebrootProbe: Probe{Ran: true, OK: true}, Firewall80: "accept"})
	rec := Recommend(CertTarget{}, map[string][]Ranked{"a.example": web}, []string{"a.example"}, "webroot", "webroot-2")
	if len(rec.Paths) != 1 || rec.Paths[0].Path != "webroot-3" || !strings.Contains(rec.TOML, "[path.webroot-3]") || !strings.Contains(rec.TOML, `paths = ["webroot-3"]`) {
		t.Errorf("recommendation = %+v\n%s", rec.Paths, rec.TOML)
	}
}

// TestRankNAT: behind NAT, a path that works is recommended with the
// self-check off (it cannot reach the public address from inside), and
// the configuration says why; a webroot probe that could not reach the
// public address is unproven, not failed.
func TestRankNAT(t *testing.T) {
	s := Situation{Name: "nat.example", NAT: true, Firewall80: "accept", Firewall443: "accept", HTTPPort: 80}
	rs := Rank(s)
	if rs[0].Kind != "standalone" || rs[0].Verdict != Works || !rs[0].NoSelfCheck || !strings.Contains(rs[0].Why, "forward port 80") {
		t.Fatalf("best = %+v", rs[0])
	}
	rec := Recommend(CertTarget{}, map[string][]Ranked{"nat.example": rs}, []string{"nat.example"})
	if !strings.Contains(rec.TOML, "\nself_check = false\n") {
		t.Errorf("TOML lacks self_check = false:\n%s", rec.TOML)
	}
	s = Situation{Name: "nat.example", NAT: true, Server80: "nginx", Server443: "nginx", Webroot: "/srv/www", Firewall80: "accept", Firewall443: "accept",
		WebrootProbe: Probe{Ran: true, Unproven: true, Why: "connection to 203.0.113.9:80 refused"}}
	rs = Rank(s)
	if rs[0].Kind != "webroot" || rs[0].Verdict != Works || !rs[0].NoSelfCheck {
		t.Errorf("best = %+v\n%s", rs[0], dump(rs))
	}
	// Without NAT, no self_check line.
	rec = Recommend(CertTarget{}, map[string][]Ranked{"a": Rank(Situation{Name: "a", Firewall80: "accept"})}, []string{"a"})
	if strings.Contains(rec.TOML, "self_check") {
		t.Errorf("self_check without NAT:\n%s", rec.TOML)
	}
}
