package dnscheck_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/doctor/dnscheck"
)

func TestReserved(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"93.184.216.34", ""},
		{"2606:2800:220:1::1", ""},
		{"1.1.1.1", ""},
		{"10.1.2.3", "private (RFC 1918)"},
		{"172.16.0.1", "private (RFC 1918)"},
		{"172.32.0.1", ""},
		{"192.168.1.1", "private (RFC 1918)"},
		{"127.0.1.1", "loopback"},
		{"::1", "loopback"},
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", `"this network" (RFC 791)`},
		{"169.254.1.1", "link-local"},
		{"fe80::1", "link-local"},
		{"fd00::1", "unique local (RFC 4193)"},
		{"100.64.0.1", "carrier-grade NAT space (RFC 6598)"},
		{"100.127.255.255", "carrier-grade NAT space (RFC 6598)"},
		{"100.128.0.1", ""},
		{"192.0.2.10", "documentation (RFC 5737)"},
		{"198.51.100.7", "documentation (RFC 5737)"},
		{"203.0.113.99", "documentation (RFC 5737)"},
		{"2001:db8::5", "documentation (RFC 3849)"},
		{"3fff::1", "documentation (RFC 9637)"},
		{"198.18.0.1", "benchmarking (RFC 2544)"},
		{"240.0.0.1", "reserved (RFC 1112)"},
		{"255.255.255.255", "broadcast"},
		{"224.0.0.1", "multicast"},
		{"ff02::1", "multicast"},
		{"::ffff:93.184.216.34", "IPv4-mapped (RFC 4291)"},
		{"64:ff9b:1::1", "local-use NAT64 (RFC 8215)"},
		{"192.0.0.9", "IETF protocol assignments (RFC 6890)"},
	}
	for _, tc := range tests {
		if got := dnscheck.Reserved(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Reserved(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

func TestClassifyAddresses(t *testing.T) {
	tests := []struct {
		name                    string
		dns, local              []netip.Addr
		isLocal, notLocal, priv []netip.Addr
		hostIPv6                bool
	}{
		{name: "on an interface", dns: addrs(pub1), local: addrs("127.0.0.1", pub1), isLocal: addrs(pub1)},
		{name: "NAT", dns: addrs(pub2), local: addrs("192.168.1.5"), notLocal: addrs(pub2)},
		{name: "private in DNS, on the interface", dns: addrs("192.168.1.5"), local: addrs("192.168.1.5"), isLocal: addrs("192.168.1.5"), priv: addrs("192.168.1.5")},
		{name: "IPv6 on the host", dns: addrs(pub1, pub6), local: addrs(pub1, pub6), isLocal: addrs(pub1, pub6), hostIPv6: true},
		{name: "only link-local and ULA IPv6", dns: addrs(pub6), local: addrs("fe80::1", "fd00::1"), notLocal: addrs(pub6)},
		{name: "IPv4-mapped interface address matches", dns: addrs(pub1), local: addrs("::ffff:" + pub1), isLocal: addrs(pub1)},
		{name: "documentation IPv6 on the host is no global IPv6", dns: addrs(pub1), local: addrs(pub1, "2001:db8::1"), isLocal: addrs(pub1)},
		{name: "global IPv6 other than the AAAA", dns: addrs(pub6), local: addrs("2a01:4f8::1"), notLocal: addrs(pub6), hostIPv6: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := dnscheck.ClassifyAddresses(tc.dns, tc.local)
			if !slices.Equal(v.Local, tc.isLocal) || !slices.Equal(v.NotLocal, tc.notLocal) || !slices.Equal(v.Private, tc.priv) || v.HostIPv6 != tc.hostIPv6 {
				t.Errorf("ClassifyAddresses = %+v, want local %v notLocal %v private %v hostIPv6 %v", v, tc.isLocal, tc.notLocal, tc.priv, tc.hostIPv6)
			}
		})
	}
}

func TestInterfaceAddrs(t *testing.T) {
	as, err := dnscheck.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(as, netip.MustParseAddr("127.0.0.1")) {
		t.Errorf("InterfaceAddrs() = %v, lacks 127.0.0.1", as)
	}
	for _, a := range as {
		if a.Zone() != "" || strings.Contains(a.String(), "/") {
			t.Errorf("address %v carries a zone or prefix", a)
		}
	}
}
