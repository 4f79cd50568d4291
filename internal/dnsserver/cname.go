package dnsserver

import (
	"time"

	"github.com/miekg/dns"
)

// maxChase bounds how many aliases one answer follows (a loop ends sooner).
const maxChase = 8

// SetCNAME makes name an alias of target (RFC 1034 §3.6.2); an empty target
// removes the alias. A CNAME excludes other data at its name (RFC 2181
// §10.1): while it is set, queries for name of any type but ANY are
// answered with the CNAME, and records added to name are not served.
//
// A typical use is the one CNAME an acme-dns user creates,
// _acme-challenge.example.com -> <subdomain>.auth.example.net, so that a
// test CA resolving through this server follows it.
func (s *Server) SetCNAME(name, target string) {
	name = canonical(name)
	if target != "" {
		target = canonical(target)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n, before := s.nodeLocked(name)
	n.cname = target
	s.settleLocked(name, n, before)
}

// CNAME returns the alias target of name, or "" when it has none.
func (s *Server) CNAME(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.names[canonical(name)]; n != nil {
		return n.cname
	}
	return ""
}

// chaseLocked answers a query of type qtype for owner, an alias of target:
// the CNAME record, then, as RFC 1034 §4.3.2 step 3a asks of a server
// authoritative for the target, the target's records, following further
// aliases up to maxChase. The RCODE and the authority section describe the
// last name of the chain (RFC 6604 §2). A target outside the served zones
// ends the answer there; the client's resolver continues from it.
func (s *Server) chaseLocked(m *dns.Msg, owner, target string, qtype uint16, now time.Time) {
	m.Answer = append(m.Answer, &dns.CNAME{Hdr: s.hdr(owner, dns.TypeCNAME, s.ttl), Target: target})
	seen := map[string]bool{canonical(owner): true}
	for range maxChase {
		if seen[target] {
			return // a loop: what was answered is all there is
		}
		seen[target] = true
		apex, ok := s.zoneLocked(target)
		if !ok {
			return
		}
		n := s.names[target]
		if n == nil && s.ents[target] == 0 && target != apex {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{s.negativeSOALocked(apex)}
			return
		}
		if n != nil && n.cname != "" {
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: s.hdr(target, dns.TypeCNAME, s.ttl), Target: n.cname})
			target = n.cname
			continue
		}
		before := len(m.Answer)
		if n != nil {
			switch qtype {
			case dns.TypeA, dns.TypeAAAA:
				m.Answer = append(m.Answer, s.addrRRs(n, target, qtype)...)
			case dns.TypeTXT:
				m.Answer = append(m.Answer, s.txtRRs(n, target, now)...)
			}
		}
		if len(m.Answer) == before {
			m.Ns = []dns.RR{s.negativeSOALocked(apex)} // NODATA at the target
		}
		return
	}
}
