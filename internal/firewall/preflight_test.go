package firewall

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// addrs is a resolver answering from a map; a name it lacks does not
// resolve.
type addrs map[string][]netip.Addr

func (a addrs) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if v, ok := a[host]; ok {
		return v, nil
	}
	return nil, errors.New("no such host")
}

// TestPreflight: a path without a window is refused, before anything is
// asked of the CA, when the local rulesets keep the CA's connection out
// over every address family the name has; the refusal names the rule and
// the fix. Open families, allow-lists, unknown answers and unreadable
// rules pass.
func TestPreflight(t *testing.T) {
	policyDrop := FamilyVerdict{Action: Drop, Backend: NameNftables, Rule: "chain input policy drop in table inet filter"}
	v6drop := FamilyVerdict{Action: Drop, Backend: NameIp6tablesNft, Rule: "chain INPUT policy DROP in table filter of ip6tables-nft"}
	accept := FamilyVerdict{Action: Accept}
	resolver := addrs{
		"both.test": {netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
		"v6.test":   {netip.MustParseAddr("2001:db8::1")},
		"v4.test":   {netip.MustParseAddr("192.0.2.1")},
	}
	tests := []struct {
		name string
		opts PreflightOptions
		v    Verdict
		err  error
		id   string
		want []string // in the error; none: Check passes
	}{
		{name: "policy drop, own path", id: "both.test", v: Verdict{IPv4: policyDrop, IPv6: policyDrop},
			opts: PreflightOptions{Path: "web", Kind: "webroot", CanWindow: true},
			want: []string{"this host's firewall keeps the CA from connecting to port 80", "IPv4 drop by chain input policy drop in table inet filter (nftables)",
				"IPv6 drop", `set firewall = "nftables" in [path.web]`, "opens port 80 only while the CA validates", "use a DNS path", "never cross its inbound filter",
				"self_check = false in the certificate's section skips this check"}},
		{name: "cloud window only", id: "both.test", v: Verdict{IPv4: policyDrop, IPv6: policyDrop},
			opts: PreflightOptions{Path: "web", Kind: "webroot", CanWindow: true, Cloud: []string{NameAWSSG}},
			want: []string{`set firewall = ["aws-sg", "nftables"] in [path.web]`, "in this host's firewall too"}},
		{name: "built-in path", id: "v4.test", v: Verdict{IPv4: policyDrop, IPv6: accept},
			opts: PreflightOptions{Path: "standalone-http", Kind: "standalone", CanWindow: true, Builtin: true},
			want: []string{`[path.standalone-fw] with kind = "standalone" and firewall = "nftables"`, `instead of "standalone-http"`}},
		{name: "kind without a window", id: "v4.test", v: Verdict{IPv4: FamilyVerdict{Action: Reject, Backend: NameUfw, Rule: `ufw rule "80 REJECT IN Anywhere"`}},
			opts: PreflightOptions{Path: "app", Kind: "stateless"},
			want: []string{"IPv4 reject by ufw rule", "allow inbound TCP port 80 in ufw"}},
		{name: "IPv6-only name, IPv6 dropped", id: "v6.test", v: Verdict{IPv4: accept, IPv6: v6drop},
			opts: PreflightOptions{Path: "web", Kind: "webroot", CanWindow: true},
			want: []string{`set firewall = "iptables-nft"`, "IPv6 drop by chain INPUT policy DROP"}},
		{name: "an IPv6 address", id: "2001:db8::5", v: Verdict{IPv4: accept, IPv6: v6drop},
			opts: PreflightOptions{Path: "web", Kind: "webroot", CanWindow: true}, want: []string{"IPv6 drop"}},
		{name: "unresolved name: every family", id: "nowhere.test", v: Verdict{IPv4: policyDrop, IPv6: policyDrop},
			opts: PreflightOptions{Path: "web", Kind: "webroot", CanWindow: true}, want: []string{"IPv4 drop", "IPv6 drop"}},
		{name: "tls-alpn-01 port", id: "v4.test", v: Verdict{IPv4: policyDrop},
			opts: PreflightOptions{Path: "alpn", Kind: "standalone", CanWindow: true, Port: 443}, want: []string{"connecting to port 443"}},
		{name: "another path's window", id: "v4.test", v: Verdict{IPv4: FamilyVerdict{Action: Accept, Backend: NameNftables, Window: true, Rule: "detour-window"}},
			opts: PreflightOptions{Path: "web", Kind: "webroot", CanWindow: true}, want: []string{"once another renewal's window closes"}},

		{name: "IPv6 dropped, IPv4 open", id: "both.test", v: Verdict{IPv4: accept, IPv6: v6drop}},
		{name: "IPv4-only name, IPv6 dropped", id: "v4.test", v: Verdict{IPv4: accept, IPv6: v6drop}},
		{name: "an allow-list", id: "v4.test", v: Verdict{IPv4: FamilyVerdict{Action: Drop, Backend: NameNftables, BySource: true}}},
		{name: "unknown", id: "v4.test", v: Verdict{IPv4: FamilyVerdict{Action: Unknown}}},
		{name: "not root", id: "v4.test", err: ErrPermission},
		{name: "unreadable", id: "v4.test", err: errors.New("iptables-save: bad output")},
		{name: "open", id: "both.test", v: Verdict{IPv4: accept, IPv6: accept}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inner := &fakeSolver{typ: solve.HTTP01, log: func(string) {}}
			reads := 0
			tc.opts.Resolver = resolver
			if tc.opts.Port == 0 {
				tc.opts.Port = 80
			}
			tc.opts.Inbound = func(_ context.Context, port int) (Verdict, error) {
				reads++
				if port != tc.opts.Port {
					t.Errorf("Inbound asked about port %d, want %d", port, tc.opts.Port)
				}
				v := tc.v
				v.Port = port
				return v, tc.err
			}
			s := Preflight(inner, tc.opts)
			id, err := ident.Parse(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				err = s.Check(t.Context(), id)
				switch {
				case len(tc.want) == 0 && err != nil:
					t.Fatalf("Check = %v, want it to pass", err)
				case len(tc.want) > 0 && err == nil:
					t.Fatalf("Check passed, want a refusal")
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("refusal lacks %q:\n%v", w, err)
					}
				}
			}
			if reads != 1 {
				t.Errorf("the rulesets were read %d times for two checks within %v, want once", reads, verdictTTL)
			}
		})
	}
	// The inner Check comes first: a path that cannot serve the name says
	// so, and the rulesets are not read.
	inner := &fakeSolver{typ: solve.HTTP01, log: func(string) {}, err: solve.ErrNotApplicable}
	s := Preflight(inner, PreflightOptions{Port: 80, Inbound: func(context.Context, int) (Verdict, error) {
		t.Error("rulesets read for a path that does not apply")
		return Verdict{}, nil
	}})
	x, _ := ident.Parse("x.test")
	if err := s.Check(t.Context(), x); !errors.Is(err, solve.ErrNotApplicable) {
		t.Errorf("Check = %v, want the inner error", err)
	}
}

// TestWithPreflight: the kinds answering http-01 or tls-alpn-01 get the
// preflight when no window is set, on the port the CA reaches.
func TestWithPreflight(t *testing.T) {
	built := &fakeSolver{typ: solve.HTTP01, log: func(string) {}}
	sp := solve.Spec{Kind: "standalone", Challenges: []string{solve.HTTP01, solve.TLSALPN01}, Window: &solve.Window{Listen: "listen"},
		Builtins: []solve.Builtin{{Name: "standalone-http"}},
		Build:    func(context.Context, solve.Settings, solve.Env) (solve.Solver, error) { return built, nil }}
	sp = WithPreflight(sp)
	for _, tc := range []struct {
		settings map[string]string
		name     string
		port     int // 0: not wrapped
	}{
		{map[string]string{"listen": ":8080"}, "mine", 8080},
		{map[string]string{"listen": ":80"}, "standalone-http", 80},
		{map[string]string{"listen": "unix:/run/x.sock"}, "mine", 80},
		{map[string]string{"listen": ":80", KeyFirewall: "nftables"}, "mine", 0},
		{map[string]string{"listen": ":80", KeyFirewall: "hetzner, nftables"}, "mine", 0},
		// A cloud firewall alone: the host's own rulesets are still read.
		{map[string]string{"listen": ":80", KeyFirewall: "hetzner"}, "mine", 80},
		{map[string]string{"listen": ":80", "nocheck": "1"}, "mine", 0},
	} {
		env := solve.Env{NoSelfCheck: tc.settings["nocheck"] != ""}
		s, err := sp.Build(t.Context(), solve.NewSettings(tc.name, "standalone", tc.settings), env)
		if err != nil {
			t.Fatal(err)
		}
		pf, ok := s.(*preflight)
		switch {
		case tc.port == 0 && ok:
			t.Errorf("%v: a path with a window got the preflight", tc.settings)
		case tc.port != 0 && !ok:
			t.Errorf("%v: no preflight", tc.settings)
		case ok && (pf.opts.Port != tc.port || pf.opts.Builtin != (tc.name == "standalone-http") || !pf.opts.CanWindow):
			t.Errorf("%v: options %+v", tc.settings, pf.opts)
		}
	}
	dns := solve.Spec{Kind: "rfc2136", Challenges: []string{solve.DNS01}, Build: sp.Build}
	if got := WithPreflight(dns); got.Build == nil || got.Kind != "rfc2136" {
		t.Error("a DNS kind changed")
	}
}
