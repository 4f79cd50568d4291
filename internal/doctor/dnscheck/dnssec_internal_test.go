package dnscheck

import (
	"net"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/doctor/check"
)

// fakeResolver serves one zone's SOA the way a resolver in mode does:
// "bogus" answers SERVFAIL unless checking is disabled (a validation
// failure), "down" always SERVFAIL, "validating" sets AD, "plain" does not.
// Questions without RD (asked of it as the authoritative server) are
// answered; other questions get an empty NOERROR.
func fakeResolver(t *testing.T, mode string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		if q.Question[0].Qtype == mdns.TypeSOA {
			switch {
			case !q.RecursionDesired: // asked as the authoritative server: it answers
			case mode == "down", mode == "bogus" && !q.CheckingDisabled:
				m.Rcode = mdns.RcodeServerFailure
			default:
				m.Answer = []mdns.RR{&mdns.SOA{Hdr: mdns.RR_Header{Name: q.Question[0].Name, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 60},
					Ns: "ns.example.com.", Mbox: "h.example.com.", Serial: 1}}
				m.AuthenticatedData = mode == "validating" && q.RecursionDesired && !q.CheckingDisabled
			}
		}
		w.WriteMsg(m)
	})
	started := make(chan struct{})
	srv := &mdns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestResolverValidates(t *testing.T) {
	tests := []struct {
		mode   string
		status check.Status
		broken bool
		says   string
	}{
		{"bogus", check.Problem, true, "SERVFAIL, but NOERROR with checking disabled (CD): it fails to validate the zone"},
		{"down", check.OK, false, "SERVFAIL, also with checking disabled: not a validation failure"},
		{"validating", check.OK, false, "validated (AD bit set)"},
		{"plain", check.OK, false, "without the AD bit"},
	}
	for _, tc := range tests {
		t.Run(tc.mode, func(t *testing.T) {
			addr := fakeResolver(t, tc.mode)
			r, err := newRun("example.com", Options{Resolver: addr, Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			r.servers = []nameserver{{Name: "ns.example.com.", Addr: addr}}
			dr, res := r.checkDNSSEC(t.Context(), Facts{Zone: "example.com."})
			all := res.String()
			if res.Status != tc.status || dr.Broken != tc.broken || !strings.Contains(all, tc.says) {
				t.Errorf("status %s broken %v, want %s %v saying %q:\n%s", res.Status, dr.Broken, tc.status, tc.broken, tc.says, all)
			}
			if tc.broken && !strings.Contains(res.Summary, "every DNS path and the CA's CAA lookup fail") {
				t.Errorf("summary does not name the consequence: %s", res.Summary)
			}
		})
	}
}
