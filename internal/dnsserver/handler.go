package dnsserver

import (
	"math"
	"net"
	"time"

	"github.com/miekg/dns"
)

// SOA timers. Secondaries are not expected; the values only need to be sane.
const (
	soaRefresh = 3600
	soaRetry   = 600
	soaExpire  = 86400
)

// ServeDNS answers one query. It implements dns.Handler, so the Server can
// also be mounted on a dns.Server of the caller's; the UDP rate limit is
// applied only by Serve.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := s.answer(r, isUDP(w))
	if m == nil {
		return
	}
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("writing DNS response failed", "remote", remote(w), "error", err)
	}
}

func isUDP(w dns.ResponseWriter) bool {
	if w == nil {
		return false
	}
	switch a := w.LocalAddr(); a.(type) {
	case *net.UDPAddr:
		return true
	case nil:
		return false
	default:
		return a.Network() == "udp"
	}
}

func remote(w dns.ResponseWriter) string {
	if a := w.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// answer builds the response to r, or returns nil when nothing must be sent.
func (s *Server) answer(r *dns.Msg, udp bool) *dns.Msg {
	if r == nil || r.Response {
		return nil // never answer a response: that is how reflection loops start
	}
	m := new(dns.Msg)
	m.Id = r.Id
	m.Response = true
	m.Opcode = r.Opcode
	m.RecursionDesired = r.RecursionDesired
	m.CheckingDisabled = r.CheckingDisabled
	if len(r.Question) == 1 {
		m.Question = []dns.Question{r.Question[0]}
	}

	var opt *dns.OPT
	nOPT := 0
	for _, rr := range r.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			opt = o
			nOPT++
		}
	}
	switch {
	case r.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		return s.finish(m, opt, udp)
	case len(r.Question) != 1, nOPT > 1:
		m.Rcode = dns.RcodeFormatError // RFC 6891 §6.1.1: at most one OPT
		return s.finish(m, nil, udp)
	case opt != nil && opt.Version() != 0:
		m.Rcode = dns.RcodeBadVers // RFC 6891 §6.1.3
		return s.finish(m, opt, udp)
	}

	q := r.Question[0]
	switch {
	case q.Qtype == dns.TypeOPT:
		m.Rcode = dns.RcodeFormatError // RFC 6891 §6.1.1: OPT is not a question
		return s.finish(m, opt, udp)
	case q.Qclass != dns.ClassINET, q.Qtype == dns.TypeAXFR, q.Qtype == dns.TypeIXFR:
		m.Rcode = dns.RcodeRefused // no other classes, no zone transfers
		return s.finish(m, opt, udp)
	}

	s.resolve(m, q)
	return s.finish(m, opt, udp)
}

// resolve fills the answer, authority and additional sections for q.
func (s *Server) resolve(m *dns.Msg, q dns.Question) {
	name := canonical(q.Name)
	owner := q.Name // echo the question's case (resolvers may use 0x20)
	now := s.now()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)

	apex, ok := s.zoneLocked(name)
	if !ok {
		m.Rcode = dns.RcodeRefused
		return
	}
	m.Authoritative = true
	n := s.names[name]
	exists := n != nil || s.ents[name] > 0 || name == apex

	if !exists {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{s.negativeSOALocked(apex)}
		return
	}

	if n != nil && n.cname != "" && q.Qtype != dns.TypeCNAME && q.Qtype != dns.TypeANY {
		s.chaseLocked(m, owner, n.cname, q.Qtype, now)
		return
	}

	switch q.Qtype {
	case dns.TypeCNAME:
		if n != nil && n.cname != "" {
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: s.hdr(owner, dns.TypeCNAME, s.ttl), Target: n.cname})
		}
	case dns.TypeANY:
		// RFC 8482 §4.2: one synthesised HINFO record instead of the set.
		m.Answer = append(m.Answer, &dns.HINFO{Hdr: s.hdr(owner, dns.TypeHINFO, s.ttl), Cpu: "RFC8482"})
	case dns.TypeSOA:
		if name == apex {
			soa := s.soaLocked(apex)
			soa.Hdr.Name = owner
			m.Answer = append(m.Answer, soa)
		}
	case dns.TypeNS:
		if name == apex {
			ns := s.nsName(apex)
			m.Answer = append(m.Answer, &dns.NS{Hdr: s.hdr(owner, dns.TypeNS, s.ttl), Ns: ns})
			if g := s.names[ns]; g != nil {
				m.Extra = append(m.Extra, s.addrRRs(g, ns, dns.TypeA)...)
				m.Extra = append(m.Extra, s.addrRRs(g, ns, dns.TypeAAAA)...)
			}
		}
	case dns.TypeA, dns.TypeAAAA:
		if n != nil {
			m.Answer = append(m.Answer, s.addrRRs(n, owner, q.Qtype)...)
		}
	case dns.TypeTXT:
		if n != nil {
			m.Answer = append(m.Answer, s.txtRRs(n, owner, now)...)
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{s.negativeSOALocked(apex)} // NODATA, RFC 2308 §2.2
	}
}

func (s *Server) hdr(owner string, typ uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: typ, Class: dns.ClassINET, Ttl: ttl}
}

func (s *Server) addrRRs(n *node, owner string, typ uint16) []dns.RR {
	var out []dns.RR
	for _, a := range n.addrs {
		switch {
		case typ == dns.TypeA && a.Is4():
			out = append(out, &dns.A{Hdr: s.hdr(owner, dns.TypeA, s.ttl), A: a.AsSlice()})
		case typ == dns.TypeAAAA && a.Is6():
			out = append(out, &dns.AAAA{Hdr: s.hdr(owner, dns.TypeAAAA, s.ttl), AAAA: a.AsSlice()})
		}
	}
	return out
}

// txtRRs returns one TXT record per live value, its TTL never running past
// the value's expiry. Values longer than 255 octets are split into several
// character-strings (RFC 1035 §3.3.14).
func (s *Server) txtRRs(n *node, owner string, now time.Time) []dns.RR {
	var out []dns.RR
	for _, t := range n.txt {
		ttl := s.txtTTL
		if !t.expires.IsZero() {
			left := math.Ceil(t.expires.Sub(now).Seconds())
			if left <= 0 {
				continue
			}
			if left < float64(ttl) {
				ttl = uint32(left)
			}
		}
		out = append(out, &dns.TXT{Hdr: s.hdr(owner, dns.TypeTXT, ttl), Txt: split255(t.value)})
	}
	return out
}

func split255(v string) []string {
	if len(v) <= 255 {
		return []string{v}
	}
	var out []string
	for len(v) > 255 {
		out = append(out, v[:255])
		v = v[255:]
	}
	return append(out, v)
}

func (s *Server) soaLocked(apex string) *dns.SOA {
	return &dns.SOA{
		Hdr:     s.hdr(apex, dns.TypeSOA, s.ttl),
		Ns:      s.nsName(apex),
		Mbox:    child("hostmaster", apex),
		Serial:  s.serial,
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  s.txtTTL,
	}
}

// negativeSOALocked is the SOA for the authority section of a negative
// answer; its TTL is the MINIMUM field (RFC 2308 §3).
func (s *Server) negativeSOALocked(apex string) *dns.SOA {
	soa := s.soaLocked(apex)
	soa.Hdr.Ttl = min(soa.Hdr.Ttl, soa.Minttl)
	return soa
}

// finish adds an OPT record when the query had one and truncates the message
// to the size the transport allows.
func (s *Server) finish(m *dns.Msg, opt *dns.OPT, udp bool) *dns.Msg {
	size := dns.MaxMsgSize
	if udp {
		size = dns.MinMsgSize
		if opt != nil {
			size = min(max(int(opt.UDPSize()), dns.MinMsgSize), s.udpSize)
		}
	}
	if opt != nil {
		m.SetEdns0(uint16(s.udpSize), false)
	}
	m.Truncate(size)
	return m
}
