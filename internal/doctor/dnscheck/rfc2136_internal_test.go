package dnscheck

import (
	"net"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/doctor/check"
)

// fakePrimary serves zone example.com over UDP and TCP on one port: its
// SOA (MNAME ns.example.com.) and NS, and UPDATE messages answered with
// updateRcode. It counts the updates that carried an update section.
func fakePrimary(t *testing.T, updateRcode int) (addr string, changes *int) {
	t.Helper()
	changes = new(int)
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		if q.Opcode == mdns.OpcodeUpdate {
			if len(q.Ns) > 0 {
				*changes++
			}
			m.Rcode = updateRcode
			w.WriteMsg(m)
			return
		}
		name := q.Question[0].Name
		switch {
		case q.Question[0].Qtype == mdns.TypeSOA && name == "example.com.":
			m.Answer = []mdns.RR{&mdns.SOA{Hdr: mdns.RR_Header{Name: name, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 60},
				Ns: "ns.example.com.", Mbox: "h.example.com.", Serial: 1}}
		case q.Question[0].Qtype == mdns.TypeNS && name == "example.com.":
			m.Answer = []mdns.RR{&mdns.NS{Hdr: mdns.RR_Header{Name: name, Rrtype: mdns.TypeNS, Class: mdns.ClassINET, Ttl: 60}, Ns: "ns.example.com."}}
		case strings.HasSuffix(name, ".example.com."):
			m.Rcode = mdns.RcodeNameError
			m.Ns = []mdns.RR{&mdns.SOA{Hdr: mdns.RR_Header{Name: "example.com.", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 60},
				Ns: "ns.example.com.", Mbox: "h.example.com.", Serial: 1}}
		default:
			m.Rcode = mdns.RcodeRefused
		}
		w.WriteMsg(m)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	for _, srv := range []*mdns.Server{{Listener: ln, Handler: h}, {PacketConn: pc, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		// miekg/dns answers UPDATE with NOTIMP by default.
		srv.MsgAcceptFunc = func(mdns.Header) mdns.MsgAcceptAction { return mdns.MsgAccept }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return ln.Addr().String(), changes
}

func TestRFC2136Unsigned(t *testing.T) {
	tests := []struct {
		rcode  int
		status check.Status
		ok     bool
		says   string
	}{
		{mdns.RcodeSuccess, check.OK, true, "accepts unsigned updates of zone example.com from this host"},
		{mdns.RcodeNotImplemented, check.Info, false, "refused (NOTIMP): the server does not implement dynamic updates"},
		{mdns.RcodeNotAuth, check.Info, false, "refused (NOTAUTH): the server is not authoritative for the zone, or wants a signed update"},
	}
	for _, tc := range tests {
		t.Run(mdns.RcodeToString[tc.rcode], func(t *testing.T) {
			addr, changes := fakePrimary(t, tc.rcode)
			r, err := newRun("www.example.com", Options{Resolver: addr, Timeout: time.Second, Nameservers: map[string]string{"ns.example.com": addr}})
			if err != nil {
				t.Fatal(err)
			}
			u, res := r.checkRFC2136(t.Context(), Facts{Zone: "example.com."})
			if all := res.String(); res.Status != tc.status || u.Accepted != tc.ok || !strings.Contains(all, tc.says) {
				t.Errorf("status %s accepted %v, want %s %v saying %q:\n%s", res.Status, u.Accepted, tc.status, tc.ok, tc.says, all)
			}
			if u.Server != addr || u.Zone != "example.com." || u.Key.Name != "" {
				t.Errorf("RFC2136 = %+v", u)
			}
			if *changes != 0 {
				t.Errorf("%d update(s) with an update section sent; the probe must carry none", *changes)
			}
		})
	}
}
