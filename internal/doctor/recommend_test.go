package doctor

import (
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/config"
)

const baseConfig = `state_dir = "/var/lib/detour"
email = "t@example.com"
agree_tos = true

[path.bind]
kind = "rfc2136"
tsig_key = "detour-key"
tsig_secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ=="

[path.cf]
kind = "dns-provider"
provider = "cloudflare"
credentials_file = "/etc/detour/cf.ini"

[[certificate]]
name = "site"
domains = ["www.example.com"]
paths = ["bind"]
`

// TestRecommendLoads: every recommendation, ready or after its change,
// appended to a configuration loads (config check's rules), whatever the
// situation: names sharing a table only when its settings are equal, the
// configuration's own paths listed rather than copied, placeholders where
// the user must fill something in, an existing certificate not repeated.
func TestRecommendLoads(t *testing.T) {
	web := func(name, root string) []Ranked {
		return Rank(Situation{Name: name, Server80: "nginx", Server443: "nginx", Webroot: root, WebrootProbe: Probe{Ran: true, OK: true}, Firewall80: "accept", Firewall443: "accept"})
	}
	tests := []struct {
		name   string
		cert   CertTarget
		ranked map[string][]Ranked
		names  []string
		want   []string
		not    []string
	}{
		{"two roots, two tables", CertTarget{Name: "two"}, map[string][]Ranked{"a.example": web("a.example", "/srv/a"), "b.example": web("b.example", "/srv/b"), "c.example": web("c.example", "/srv/a")},
			[]string{"a.example", "b.example", "c.example"},
			[]string{"[path.webroot]\nkind = \"webroot\"\nroot = \"/srv/a\"", "[path.webroot-2]\nkind = \"webroot\"\nroot = \"/srv/b\"", `paths = ["webroot", "webroot-2"]`}, nil},
		{"the configuration's rfc2136 key", CertTarget{Name: "k"}, map[string][]Ranked{"k.example": Rank(Situation{Name: "k.example", Server80: "nginx", Server443: "nginx", Proxies: true,
			RFC2136Key: "detour-key", RFC2136Algorithm: "hmac-sha256", RFC2136Source: "config path.bind", RFC2136Server: "192.0.2.53:53", Firewall80: "accept", Firewall443: "accept"})},
			[]string{"k.example"}, []string{`paths = ["bind"]`, "your [path.bind]"}, []string{"[path.rfc2136]"}},
		{"the configuration's provider", CertTarget{Name: "p"}, map[string][]Ranked{"p.example": Rank(Situation{Name: "p.example", Server80: "nginx", Server443: "nginx", Proxies: true,
			Provider: "cloudflare", ProviderConfigured: "cloudflare", ProviderPath: "cf", Firewall80: "drop", Firewall443: "drop"})},
			[]string{"p.example"}, []string{`paths = ["cf"]`}, []string{"[path.dns]"}},
		{"acme-dns to register", CertTarget{Name: "a"}, map[string][]Ranked{"a.example": Rank(Situation{Name: "a.example", Server80: "nginx", Server443: "nginx", Proxies: true,
			AcmeDNSCNAME: "x.auth.example.org.", AcmeDNSLive: true, Firewall80: "drop", Firewall443: "drop"})},
			[]string{"a.example"}, []string{`server = "https://acme-dns.example.com"   # replace: the acme-dns server's API URL`}, nil},
		{"an existing certificate", CertTarget{Name: "site", Exists: true}, map[string][]Ranked{"www.example.com": web("www.example.com", "/srv/www")},
			[]string{"www.example.com"}, []string{"# In your [[certificate]] named \"site\", set:\n#   paths = [\"webroot\"]"}, []string{"[[certificate]]\nname"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := Recommend(tc.cert, tc.ranked, tc.names, "bind", "cf")
			if rec.TOML == "" {
				t.Fatalf("no TOML: %+v", rec)
			}
			for _, w := range tc.want {
				if !strings.Contains(rec.TOML, w) {
					t.Errorf("TOML lacks %q:\n%s", w, rec.TOML)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(rec.TOML, n) {
					t.Errorf("TOML has %q:\n%s", n, rec.TOML)
				}
			}
			if _, err := config.Parse("detour.toml", []byte(baseConfig+"\n"+rec.TOML)); err != nil {
				t.Errorf("the configuration with the recommendation does not load: %v\n%s", err, rec.TOML)
			}
		})
	}
}

// TestRankCAAAndNAT: CAA naming an account when the host has none is a
// change for every path; behind NAT a probe that passed keeps the
// self-check on; a program that is no web server on :80 is no forward
// target Detour can promise.
func TestRankCAAAndNAT(t *testing.T) {
	rs := Rank(Situation{Name: "c.example", CAAChange: "CAA at c.example allows only the account X", Firewall80: "accept"})
	if rs[0].Verdict != AfterChange || !strings.Contains(rs[0].Change, "account X") {
		t.Errorf("CAA change: %+v", rs[0])
	}
	rs = Rank(Situation{Name: "n.example", NAT: true, Server80: "nginx", Server443: "nginx", Webroot: "/srv/n", WebrootProbe: Probe{Ran: true, OK: true}, Firewall80: "accept", Firewall443: "accept"})
	if rs[0].Kind != "webroot" || rs[0].NoSelfCheck {
		t.Errorf("NAT with a probe that passed: %+v", rs[0])
	}
	rs = Rank(Situation{Name: "u.example", Server80: "unknown", Holder80: "a program (pid 7: ./app)", Server443: "unknown", Firewall80: "accept", Firewall443: "accept"})
	for _, r := range rs {
		if r.Kind == "side-port" && (r.Verdict != AfterChange || !strings.Contains(r.Why, "not a web server Detour knows")) {
			t.Errorf("side-port behind an unknown program: %+v", r)
		}
	}
}
