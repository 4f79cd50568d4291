package selfcheck

// A host behind NAT (or a load balancer) without hairpin routing: its
// public address is on none of its interfaces and it cannot connect to it.
// Options.LocalAddrs stands in for net.InterfaceAddrs, so that 127.0.0.1
// can play that public address.

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/solve"
)

// interfaces returns a LocalAddrs that lists cidrs as this host's addresses.
func interfaces(cidrs ...string) func() ([]net.Addr, error) {
	return func() ([]net.Addr, error) {
		var out []net.Addr
		for _, c := range cidrs {
			ip, n, err := net.ParseCIDR(c)
			if err != nil {
				return nil, err
			}
			n.IP = ip
			out = append(out, n)
		}
		return out, nil
	}
}

func TestNATWithoutHairpin(t *testing.T) {
	resolver := startDNS(t, testZone)
	behindNAT := interfaces("192.168.1.20/24", "fe80::1/64")
	notListed := func() ([]net.Addr, error) { return nil, errors.New("no netlink here") }
	type check func(*testing.T, solve.Challenge, Options) error
	http01 := func(t *testing.T, ch solve.Challenge, o Options) error { return HTTP01(t.Context(), ch, o) }
	tlsalpn01 := func(t *testing.T, ch solve.Challenge, o Options) error { return TLSALPN01(t.Context(), ch, o) }
	tests := []struct {
		name   string
		check  check
		typ    string
		id     string
		local  func() ([]net.Addr, error)
		port   func(*testing.T) int // HTTPPort or TLSPort
		reason Reason
		want   []string
		not    []string
	}{
		{
			name: "http-01 refused at a public address not on this host", check: http01, typ: solve.HTTP01, id: "site.test",
			local: behindNAT, port: closedPort, reason: ReasonRefused,
			want: []string{
				"connection to 127.0.0.1:@ refused for http://site.test/",
				"127.0.0.1 (the A record of site.test) is not an address of this host, and this host cannot connect to it",
				"this looks like NAT (or a load balancer) without hairpin routing",
				"If port @ of 127.0.0.1 reaches this host from outside (check from another network), the CA will get through",
				"`self_check = false` in the certificate's section (or --no-self-check for one run)",
				"failed validations count against its rate limit",
				"Or use a DNS path (dns-01), which needs no inbound connection",
				"Otherwise correct the A record of site.test to this host's public address",
			},
			not: []string{"nothing listens on port"},
		},
		{
			name: "tls-alpn-01 refused at an IP identifier not on this host", check: tlsalpn01, typ: solve.TLSALPN01, id: "127.0.0.1",
			local: behindNAT, port: closedPort, reason: ReasonRefused,
			want: []string{"127.0.0.1 (the IP identifier) is not an address of this host", "without hairpin routing",
				"--no-self-check", "dns-01", "Otherwise check that 127.0.0.1 is this host's public address"},
		},
		{
			name: "refused at this host's own address", check: http01, typ: solve.HTTP01, id: "site.test",
			local: interfaces("127.0.0.1/8", "192.168.1.20/24"), port: closedPort, reason: ReasonRefused,
			want: []string{"nothing listens on port 80 there",
				"127.0.0.1 is an address of this host, so this is not NAT and the CA will most likely meet the same failure (self_check = false would only hide it)"},
			not: []string{"hairpin"},
		},
		{
			name: "interfaces unknown", check: http01, typ: solve.HTTP01, id: "site.test",
			local: notListed, port: closedPort, reason: ReasonRefused,
			want: []string{"nothing listens on port 80", "if this host is behind NAT without hairpin routing", "self_check = false"},
		},
		{
			name: "accepted but no answer is not NAT's doing", check: http01, typ: solve.HTTP01, id: "site.test",
			local: behindNAT, port: startSilent, reason: ReasonTimeout,
			want: []string{"sent no answer within", "check what listens there"},
			not:  []string{"is not an address of this host"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := tt.port(t)
			opts := Options{Resolver: resolver, LocalAddrs: tt.local, HTTPPort: port, TLSPort: port, Timeout: 300 * time.Millisecond}
			err := tt.check(t, challenge(t, tt.typ, tt.id), opts)
			for i := range tt.want {
				tt.want[i] = strings.ReplaceAll(tt.want[i], "@", strconv.Itoa(port))
			}
			wantMismatch(t, err, tt.reason, tt.want...)
			for _, n := range tt.not {
				if strings.Contains(err.Error(), n) {
					t.Errorf("error contains %q:\n%v", n, err)
				}
			}
		})
	}
}

// TestNATOnlyForTheIdentifier: a redirect may lead to another host, whose
// address is not this host's by design; that is no sign of NAT.
func TestNATOnlyForTheIdentifier(t *testing.T) {
	resolver := startDNS(t, testZone)
	opts := Options{
		Resolver: resolver, LocalAddrs: interfaces("192.168.1.20/24"), Timeout: 300 * time.Millisecond,
		HTTPPort: startHTTP(t, redirects(map[string]string{challengePath: "https://other.test/x"}, "")),
		TLSPort:  closedPort(t),
	}
	err := HTTP01(t.Context(), challenge(t, solve.HTTP01, "site.test"), opts)
	wantMismatch(t, err, ReasonRefused, "refused for https://other.test/x", "(redirected from http://site.test/",
		"if this host is behind NAT without hairpin routing")
	if strings.Contains(err.Error(), "is not an address of this host") {
		t.Errorf("a redirect's target is blamed on NAT:\n%v", err)
	}
}

func TestIsLocal(t *testing.T) {
	o, err := Options{LocalAddrs: func() ([]net.Addr, error) {
		return []net.Addr{
			&net.IPNet{IP: net.ParseIP("127.0.0.1"), Mask: net.CIDRMask(8, 32)},
			&net.IPNet{IP: net.ParseIP("192.0.2.10"), Mask: net.CIDRMask(24, 32)},
			&net.IPAddr{IP: net.ParseIP("2001:db8::10")},
			&net.IPNet{IP: net.ParseIP("::1"), Mask: net.CIDRMask(128, 128)},
		}, nil
	}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		addr  string
		local bool
	}{
		{"127.0.0.1", true},
		{"127.0.1.1", true}, // Debian's hostname address: the loopback network is local
		{"192.0.2.10", true},
		{"::ffff:192.0.2.10", true},
		{"192.0.2.11", false}, // same network, another host
		{"2001:db8::10", true},
		{"::1", true},
		{"203.0.113.7", false},
	} {
		local, known := o.isLocal(netip.MustParseAddr(tt.addr))
		if !known || local != tt.local {
			t.Errorf("isLocal(%s) = %v, %v; want %v, true", tt.addr, local, known, tt.local)
		}
	}
}
