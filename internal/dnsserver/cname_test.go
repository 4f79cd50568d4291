package dnsserver

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestCNAME(t *testing.T) {
	s := New(Options{Zones: []string{"example.test", "auth.test"}, RateLimit: -1})
	s.SetCNAME("_acme-challenge.www.example.test", "abc.auth.test")
	s.AddTXT("abc.auth.test", "value-1", time.Time{})
	s.AddTXT("abc.auth.test", "value-2", time.Time{})
	s.SetCNAME("_acme-challenge.chain.example.test", "_acme-challenge.www.example.test")
	s.SetCNAME("_acme-challenge.gone.example.test", "missing.auth.test")
	s.SetAddrs("host.auth.test", netip.MustParseAddr("192.0.2.7"))
	s.SetCNAME("_acme-challenge.nodata.example.test", "host.auth.test")
	s.SetCNAME("_acme-challenge.away.example.test", "xyz.auth.example.net")
	s.SetCNAME("loop-a.example.test", "loop-b.example.test")
	s.SetCNAME("loop-b.example.test", "loop-a.example.test")
	s.SetCNAME("removed.example.test", "abc.auth.test")
	s.SetCNAME("removed.example.test", "")
	addr := serve(t, s)

	const cn, txt = dns.TypeCNAME, dns.TypeTXT
	tests := []struct {
		name  string
		qname string
		qtype uint16
		want  wantMsg
	}{
		{"CNAME query", "_acme-challenge.www.example.test.", cn, wantMsg{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{cn}}},
		{"TXT follows in-zone target", "_acme-challenge.www.example.test.", txt,
			wantMsg{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{cn, txt, txt}, values: []string{"value-1", "value-2"}}},
		{"chain of two", "_acme-challenge.chain.example.test.", txt,
			wantMsg{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{cn, cn, txt, txt}, values: []string{"value-1", "value-2"}}},
		{"target missing: NXDOMAIN of the target", "_acme-challenge.gone.example.test.", txt,
			wantMsg{rcode: dns.RcodeNameError, aa: true, answer: []uint16{cn}, soa: true}},
		{"target without TXT: NODATA", "_acme-challenge.nodata.example.test.", txt,
			wantMsg{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{cn}, soa: true}},
		{"A through alias", "_acme-challenge.nodata.example.test.", dns.TypeA,
			wantMsg{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{cn, dns.TypeA}}},
		{"target outside the zones: CNAME only", "_acme-challenge.away.example.test.", txt,
			wantMsg{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{cn}}},
		{"loop ends", "loop-a.example.test.", txt, wantMsg{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{cn, cn}}},
		{"removed alias", "removed.example.test.", txt, wantMsg{rcode: dns.RcodeNameError, aa: true, soa: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, network := range []string{"udp", "tcp"} {
				checkMsg(t, query(t, network, addr, tc.qname, tc.qtype, 1232), tc.want)
			}
		})
	}
	if got := s.CNAME("_ACME-challenge.www.example.test"); got != "abc.auth.test." {
		t.Errorf("CNAME() = %q, want abc.auth.test.", got)
	}
	if got := s.CNAME("removed.example.test"); got != "" {
		t.Errorf("CNAME() of a removed alias = %q, want empty", got)
	}
}
