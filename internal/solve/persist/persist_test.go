package persist

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/dnsserver"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

const (
	zone      = "example.test."
	pebbleIDN = "pebble.letsencrypt.org"
	account   = "https://127.0.0.1:14000/my-account/1"
)

// twoServers starts two authoritative servers for zone on 127.0.0.1 and
// 127.0.0.2, same port; the first also serves as the resolver and lists both
// addresses for the zone's NS host. It returns the servers and a Lookup.
func twoServers(t *testing.T) (primary, secondary *dnsserver.Server, l Lookup) {
	t.Helper()
	serve := func(addr string) (*dnsserver.Server, string) {
		srv := dnsserver.New(dnsserver.Options{Zones: []string{zone}, RateLimit: -1})
		pc, ln, err := dnsserver.Listen(addr)
		if err != nil {
			t.Fatalf("binding a DNS server on %s: %v", addr, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, pc, ln) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("DNS server on %s: %v", addr, err)
			}
		})
		<-srv.Ready()
		return srv, ln.Addr().String()
	}
	primary, addr := serve("127.0.0.1:0")
	_, port, _ := net.SplitHostPort(addr)
	secondary, _ = serve("127.0.0.2:" + port)
	primary.SetAddrs("ns."+zone, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"))
	n, _ := strconv.Atoi(port)
	c, err := dns.New(dns.Options{Resolver: addr, Port: n})
	if err != nil {
		t.Fatal(err)
	}
	return primary, secondary, DNSLookup{Client: c, Timeout: time.Second}
}

func newSolver(t *testing.T, l Lookup, policy string, b Binding) *Solver {
	t.Helper()
	s, err := New(Options{Lookup: l, Policy: policy, Binding: func(context.Context) (Binding, error) { return b, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func id(t *testing.T, name string) ident.Identifier {
	t.Helper()
	v, err := ident.Parse(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestCheck(t *testing.T) {
	primary, secondary, lookup := twoServers(t)
	binding := Binding{AccountURL: account, Meta: Meta{CAAIdentities: []string{pebbleIDN}}}
	mine := pebbleIDN + "; accounturi=" + account
	wild := mine + "; policy=wildcard"
	publish := func(name string, onSecondary bool, values ...string) {
		for _, v := range values {
			primary.AddTXT("_validation-persist."+name, v, time.Time{})
			if onSecondary {
				secondary.AddTXT("_validation-persist."+name, v, time.Time{})
			}
		}
	}
	publish("both.example.test", true, "other-ca.example; accounturi=https://other.example/acct/9", mine)
	publish("one.example.test", false, mine)
	publish("other.example.test", true, pebbleIDN+"; accounturi=https://127.0.0.1:14000/my-account/2")
	publish("wild.example.test", true, wild)
	publish("nowild.example.test", true, mine)
	publish("expired.example.test", true, mine+"; persistUntil=1721952000")

	tests := []struct {
		name, id, policy string
		want             []string // substrings of the error; nil means success
	}{
		{"live everywhere, among another CA's record", "both.example.test", "", nil},
		{"missing on one server", "one.example.test", "",
			[]string{"127.0.0.2:", "no TXT record", `publish exactly this record: _validation-persist.one.example.test. IN TXT "` + mine + `"`}},
		{"missing everywhere", "none.example.test", "",
			[]string{"127.0.0.1:", "127.0.0.2:", `_validation-persist.none.example.test. IN TXT "` + mine + `"`}},
		{"another account's record", "other.example.test", "", []string{"another account (accounturi=https://127.0.0.1:14000/my-account/2)"}},
		{"wildcard and base with policy=wildcard", "*.wild.example.test", PolicyWildcard, nil},
		{"base of a wildcard record", "wild.example.test", PolicyWildcard, nil},
		{"wildcard needs the policy on the path", "*.wild.example.test", "", []string{`set policy = "wildcard"`}},
		{"wildcard needs the policy in the record", "*.nowild.example.test", PolicyWildcard,
			[]string{"without policy=wildcard", `IN TXT "` + wild + `"`}},
		{"expired persistUntil", "expired.example.test", "", []string{"expired (persistUntil 2024-07-26T00:00:00Z)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := newSolver(t, lookup, tt.policy, binding).Check(t.Context(), id(t, tt.id))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check passed")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}

	t.Run("IP addresses are not applicable", func(t *testing.T) {
		err := newSolver(t, lookup, "", binding).Check(t.Context(), id(t, "192.0.2.1"))
		if !errors.Is(err, solve.ErrNotApplicable) {
			t.Fatalf("Check = %v, want ErrNotApplicable", err)
		}
	})
	t.Run("binding failure", func(t *testing.T) {
		s, _ := New(Options{Lookup: lookup, Binding: func(context.Context) (Binding, error) { return Binding{}, errors.New("no account") }})
		if err := s.Check(t.Context(), id(t, "both.example.test")); err == nil || !strings.Contains(err.Error(), "no account") {
			t.Fatalf("Check = %v", err)
		}
	})
	t.Run("unreachable zone", func(t *testing.T) {
		err := newSolver(t, lookup, "", binding).Check(t.Context(), id(t, "www.elsewhere.invalid"))
		var nle *NotLiveError
		if !errors.As(err, &nle) || nle.Err == nil || !strings.Contains(err.Error(), "publish exactly this record") {
			t.Fatalf("Check = %v, want a *NotLiveError with a lookup error and the record", err)
		}
	})
}

func TestPresent(t *testing.T) {
	binding := Binding{AccountURL: account, Meta: Meta{CAAIdentities: []string{pebbleIDN}}}
	draft2 := Binding{AccountURL: account, Meta: Meta{AccountHashPrefix: "https://ca.example/h/", IssuerDomainNames: []string{pebbleIDN}}}
	eleven := make([]string, 11)
	for i := range eleven {
		eleven[i] = "ca" + strconv.Itoa(i) + ".example"
	}
	tests := []struct {
		name string
		b    Binding
		ch   solve.Challenge
		want string // "" for success
	}{
		{"offered", binding, solve.Challenge{IssuerDomainNames: []string{"x.example", pebbleIDN}, AccountURL: account}, ""},
		{"offered, other case", binding, solve.Challenge{IssuerDomainNames: []string{"Pebble.LetsEncrypt.org"}}, ""},
		{"not offered", binding, solve.Challenge{IssuerDomainNames: []string{"x.example"}}, "the CA offers issuer domain names x.example"},
		{"other account", binding, solve.Challenge{IssuerDomainNames: []string{pebbleIDN}, AccountURL: account + "0"}, "run detour persist-record"},
		{"none offered (draft-01)", binding, solve.Challenge{}, "lists no issuer-domain-names"},
		{"too many offered", binding, solve.Challenge{IssuerDomainNames: eleven}, "more than the 10"},
		{"none decoded (draft-02)", draft2, solve.Challenge{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.ch.Type, tt.ch.Identifier = solve.DNSPersist01, id(t, "www.example.test")
			s := newSolver(t, DNSLookup{}, "", tt.b)
			err := s.Present(t.Context(), tt.ch)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Present: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Present = %v, want an error containing %q", err, tt.want)
			}
			if err := s.CleanUp(t.Context(), tt.ch); err != nil {
				t.Errorf("CleanUp: %v", err)
			}
		})
	}
}

func TestNew(t *testing.T) {
	b := func(context.Context) (Binding, error) { return Binding{}, nil }
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"valid", Options{Binding: b, Lookup: DNSLookup{}}, true},
		{"wildcard", Options{Binding: b, Lookup: DNSLookup{}, Policy: PolicyWildcard}, true},
		{"no binding", Options{Lookup: DNSLookup{}}, false},
		{"no lookup", Options{Binding: b}, false},
		{"bad policy", Options{Binding: b, Lookup: DNSLookup{}, Policy: "subdomains"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("New = %v", err)
			}
			if err == nil && s.Type() != solve.DNSPersist01 {
				t.Errorf("Type = %q", s.Type())
			}
		})
	}
}
