package dnsserver

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

type wantMsg struct {
	rcode  int
	aa     bool
	answer []uint16 // record types, in order
	soa    bool     // SOA in the authority section
	values []string // TXT values, sorted
}

func checkMsg(t *testing.T, r *dns.Msg, w wantMsg) {
	t.Helper()
	if r.Rcode != w.rcode {
		t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[w.rcode])
	}
	if r.Authoritative != w.aa {
		t.Errorf("AA %v, want %v", r.Authoritative, w.aa)
	}
	if r.RecursionAvailable {
		t.Error("RA set; the server must not offer recursion")
	}
	var types []uint16
	for _, rr := range r.Answer {
		types = append(types, rr.Header().Rrtype)
	}
	if !slices.Equal(types, w.answer) {
		t.Errorf("answer types %v, want %v (answer %v)", types, w.answer, r.Answer)
	}
	if got := hasSOA(r.Ns); got != w.soa {
		t.Errorf("SOA in authority %v, want %v (%v)", got, w.soa, r.Ns)
	}
	if w.values != nil {
		got := txtValues(r)
		slices.Sort(got)
		if !slices.Equal(got, w.values) {
			t.Errorf("TXT values %q, want %q", got, w.values)
		}
	}
}

func TestAnswersWithZones(t *testing.T) {
	s := New(Options{Zones: []string{"Detour.Test"}})
	s.SetAddrs("Example.Detour.test", netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"))
	s.SetAddrs("ns.detour.test.", netip.MustParseAddr("192.0.2.53"))
	s.AddTXT("_acme-challenge.example.detour.test.", "v1", time.Time{})
	s.AddTXT("_ACME-CHALLENGE.example.detour.test.", "v2", time.Time{})
	s.AddTXT("_acme-challenge.sub.detour.test.", "only", time.Time{})
	s.AddTXT("_acme-challenge.example.com.", "outside", time.Time{})
	addr := serve(t, s)

	const (
		A, AAAA, TXT, SOA, NS, HINFO = dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypeSOA, dns.TypeNS, dns.TypeHINFO
	)
	tests := []struct {
		name  string
		qname string
		qtype uint16
		class uint16
		want  wantMsg
	}{
		{"A", "example.detour.test.", A, 0, wantMsg{aa: true, answer: []uint16{A}}},
		{"AAAA", "example.detour.test.", AAAA, 0, wantMsg{aa: true, answer: []uint16{AAAA}}},
		{"TXT two values", "_acme-challenge.example.detour.test.", TXT, 0,
			wantMsg{aa: true, answer: []uint16{TXT, TXT}, values: []string{"v1", "v2"}}},
		{"mixed case", "_ACME-Challenge.EXAMPLE.detour.TEST.", TXT, 0,
			wantMsg{aa: true, answer: []uint16{TXT, TXT}, values: []string{"v1", "v2"}}},
		{"NODATA on TXT owner", "_acme-challenge.example.detour.test.", A, 0, wantMsg{aa: true, soa: true}},
		{"NODATA on address owner", "example.detour.test.", TXT, 0, wantMsg{aa: true, soa: true}},
		{"NODATA on empty non-terminal", "sub.detour.test.", A, 0, wantMsg{aa: true, soa: true}},
		{"NXDOMAIN", "nope.detour.test.", A, 0, wantMsg{rcode: dns.RcodeNameError, aa: true, soa: true}},
		{"NXDOMAIN below owner", "x.example.detour.test.", TXT, 0, wantMsg{rcode: dns.RcodeNameError, aa: true, soa: true}},
		{"SOA at apex", "detour.test.", SOA, 0, wantMsg{aa: true, answer: []uint16{SOA}}},
		{"NS at apex", "detour.test.", NS, 0, wantMsg{aa: true, answer: []uint16{NS}}},
		{"NODATA at apex", "detour.test.", TXT, 0, wantMsg{aa: true, soa: true}},
		{"SOA below apex", "example.detour.test.", SOA, 0, wantMsg{aa: true, soa: true}},
		{"outside zones", "_acme-challenge.example.com.", TXT, 0, wantMsg{rcode: dns.RcodeRefused}},
		{"parent of zone", "test.", SOA, 0, wantMsg{rcode: dns.RcodeRefused}},
		{"ANY minimal", "example.detour.test.", dns.TypeANY, 0, wantMsg{aa: true, answer: []uint16{HINFO}}},
		{"ANY on missing name", "nope.detour.test.", dns.TypeANY, 0, wantMsg{rcode: dns.RcodeNameError, aa: true, soa: true}},
		{"CHAOS class", "version.bind.", TXT, dns.ClassCHAOS, wantMsg{rcode: dns.RcodeRefused}},
		{"AXFR", "detour.test.", dns.TypeAXFR, 0, wantMsg{rcode: dns.RcodeRefused}},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			t.Run(network+"/"+tt.name, func(t *testing.T) {
				m := new(dns.Msg)
				m.SetQuestion(tt.qname, tt.qtype)
				if tt.class != 0 {
					m.Question[0].Qclass = tt.class
				}
				r := exchange(t, network, addr, m)
				checkMsg(t, r, tt.want)
				for _, rr := range r.Answer {
					if rr.Header().Name != tt.qname {
						t.Errorf("owner %q, want the question's spelling %q", rr.Header().Name, tt.qname)
					}
				}
			})
		}
	}

	t.Run("NS glue and SOA fields", func(t *testing.T) {
		r := query(t, "udp", addr, "detour.test.", dns.TypeNS, 0)
		if ns := r.Answer[0].(*dns.NS).Ns; ns != "ns.detour.test." {
			t.Errorf("NS %q, want ns.detour.test.", ns)
		}
		if len(r.Extra) != 1 || r.Extra[0].(*dns.A).A.String() != "192.0.2.53" {
			t.Errorf("glue %v, want ns.detour.test. A 192.0.2.53", r.Extra)
		}
		r = query(t, "udp", addr, "nope.detour.test.", dns.TypeA, 0)
		soa := r.Ns[0].(*dns.SOA)
		if soa.Hdr.Name != "detour.test." || soa.Ns != "ns.detour.test." || soa.Minttl != DefaultTXTTTL || soa.Hdr.Ttl != DefaultTXTTTL {
			t.Errorf("negative SOA %v: want owner detour.test., ns.detour.test., MINIMUM and TTL %d", soa, DefaultTXTTTL)
		}
	})
}

func TestAnswersWithoutZones(t *testing.T) {
	s := New(Options{NS: "ns1.example.net"})
	s.AddTXT("_acme-challenge.example.test.", "tok", time.Time{})
	s.SetAddrs("host.other.test.", netip.MustParseAddr("192.0.2.7"))
	addr := serve(t, s)

	tests := []struct {
		name  string
		qname string
		qtype uint16
		want  wantMsg
	}{
		{"TXT", "_acme-challenge.example.test.", dns.TypeTXT,
			wantMsg{aa: true, answer: []uint16{dns.TypeTXT}, values: []string{"tok"}}},
		{"implied apex NODATA", "example.test.", dns.TypeA, wantMsg{aa: true, soa: true}},
		{"implied apex SOA", "example.test.", dns.TypeSOA, wantMsg{aa: true, answer: []uint16{dns.TypeSOA}}},
		{"NXDOMAIN inside implied zone", "www.example.test.", dns.TypeA,
			wantMsg{rcode: dns.RcodeNameError, aa: true, soa: true}},
		{"address owner is its own apex", "host.other.test.", dns.TypeA,
			wantMsg{aa: true, answer: []uint16{dns.TypeA}}},
		{"sibling refused", "other.test.", dns.TypeA, wantMsg{rcode: dns.RcodeRefused}},
		{"parent refused", "test.", dns.TypeA, wantMsg{rcode: dns.RcodeRefused}},
		{"unknown refused", "example.org.", dns.TypeA, wantMsg{rcode: dns.RcodeRefused}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkMsg(t, query(t, "udp", addr, tt.qname, tt.qtype, 0), tt.want)
		})
	}

	t.Run("SOA names the configured NS", func(t *testing.T) {
		r := query(t, "tcp", addr, "example.test.", dns.TypeSOA, 0)
		if soa := r.Answer[0].(*dns.SOA); soa.Ns != "ns1.example.net." || soa.Mbox != "hostmaster.example.test." {
			t.Errorf("SOA %v", soa)
		}
	})

	t.Run("removing the last record refuses again", func(t *testing.T) {
		s.RemoveTXT("_acme-challenge.example.test.", "tok")
		checkMsg(t, query(t, "udp", addr, "_acme-challenge.example.test.", dns.TypeTXT, 0),
			wantMsg{rcode: dns.RcodeRefused})
	})
}

func TestEDNSAndTruncation(t *testing.T) {
	s := New(Options{Zones: []string{"detour.test."}})
	value := strings.Repeat("x", 43) // the length of a dns-01 value
	for i := range 15 {
		s.AddTXT("medium.detour.test.", fmt.Sprintf("%02d%s", i, value), time.Time{})
	}
	for i := range 40 {
		s.AddTXT("large.detour.test.", fmt.Sprintf("%02d%s", i, value), time.Time{})
	}
	s.AddTXT("long.detour.test.", strings.Repeat("y", 600), time.Time{})
	addr := serve(t, s)

	tests := []struct {
		name    string
		network string
		qname   string
		edns    uint16
		tc      bool // truncated: fewer answers than values
		values  int
	}{
		{"UDP without EDNS truncates at 512", "udp", "medium.detour.test.", 0, true, 15},
		{"UDP with EDNS 4096 fits", "udp", "medium.detour.test.", 4096, false, 15},
		{"UDP with EDNS 600 honours client size", "udp", "medium.detour.test.", 600, true, 15},
		{"UDP larger than server limit", "udp", "large.detour.test.", 4096, true, 40},
		{"TCP without EDNS carries all", "tcp", "large.detour.test.", 0, false, 40},
		{"TCP with EDNS carries all", "tcp", "large.detour.test.", 512, false, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := query(t, tt.network, addr, tt.qname, dns.TypeTXT, tt.edns)
			if r.Truncated != tt.tc {
				t.Errorf("TC %v, want %v", r.Truncated, tt.tc)
			}
			if full := len(r.Answer) == tt.values; full == tt.tc {
				t.Errorf("%d of %d values answered with TC %v", len(r.Answer), tt.values, r.Truncated)
			}
			opt := r.IsEdns0()
			if (opt != nil) != (tt.edns > 0) {
				t.Fatalf("OPT in response %v, want %v", opt != nil, tt.edns > 0)
			}
			if opt != nil && opt.UDPSize() != DefaultUDPSize {
				t.Errorf("advertised UDP size %d, want %d", opt.UDPSize(), DefaultUDPSize)
			}
			if tt.network == "udp" {
				r.Compress = true
				size := r.Len()
				if limit := max(512, min(int(tt.edns), DefaultUDPSize)); size > limit {
					t.Errorf("response of %d octets exceeds %d", size, limit)
				}
			}
		})
	}

	t.Run("long value split into character-strings", func(t *testing.T) {
		r := query(t, "tcp", addr, "long.detour.test.", dns.TypeTXT, 0)
		txt := r.Answer[0].(*dns.TXT)
		if len(txt.Txt) != 3 || strings.Join(txt.Txt, "") != strings.Repeat("y", 600) {
			t.Errorf("TXT strings %d, joined length %d; want 3 strings making the value", len(txt.Txt), len(strings.Join(txt.Txt, "")))
		}
	})

	t.Run("EDNS version 1 is BADVERS", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion("medium.detour.test.", dns.TypeTXT)
		m.SetEdns0(4096, false)
		m.IsEdns0().SetVersion(1)
		r := exchange(t, "udp", addr, m)
		if r.Rcode != dns.RcodeBadVers || r.IsEdns0() == nil || len(r.Answer) != 0 {
			t.Errorf("rcode %d, OPT %v, %d answers; want BADVERS with an OPT and no answers", r.Rcode, r.IsEdns0(), len(r.Answer))
		}
	})
}

func TestExpiry(t *testing.T) {
	clock := newFakeClock()
	s := New(Options{Zones: []string{"detour.test."}, TXTTTL: 30, Now: clock.Now})
	name := "_acme-challenge.example.detour.test."
	t0 := clock.Now()
	s.AddTXT(name, "short", t0.Add(10*time.Second))
	s.AddTXT(name, "long", t0.Add(60*time.Second))
	s.AddTXT("_acme-challenge.other.detour.test.", "gone", t0.Add(5*time.Second))
	s.AddTXT(name, "forever", time.Time{})
	addr := serve(t, s)

	steps := []struct {
		name    string
		advance time.Duration
		values  []string
		ttls    map[string]uint32
		other   int // rcode for the other name's parent
	}{
		{"all live, TTL clamped to expiry", 0, []string{"forever", "long", "short"},
			map[string]uint32{"short": 10, "long": 30, "forever": 30}, dns.RcodeSuccess},
		{"short expired", 10 * time.Second, []string{"forever", "long"},
			map[string]uint32{"long": 30}, dns.RcodeNameError},
		{"long ends in under a second", 49*time.Second + 500*time.Millisecond, []string{"forever", "long"},
			map[string]uint32{"long": 1}, dns.RcodeNameError},
		{"long expired", 500 * time.Millisecond, []string{"forever"}, nil, dns.RcodeNameError},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.Add(st.advance)
			got := s.TXT(name)
			slices.Sort(got)
			if !slices.Equal(got, st.values) {
				t.Errorf("TXT() = %q, want %q", got, st.values)
			}
			r := query(t, "udp", addr, name, dns.TypeTXT, 0)
			vals := txtValues(r)
			slices.Sort(vals)
			if !slices.Equal(vals, st.values) {
				t.Errorf("served %q, want %q", vals, st.values)
			}
			for _, rr := range r.Answer {
				txt := rr.(*dns.TXT)
				if want, ok := st.ttls[txt.Txt[0]]; ok && txt.Hdr.Ttl != want {
					t.Errorf("TTL of %q = %d, want %d", txt.Txt[0], txt.Hdr.Ttl, want)
				}
			}
			// The other name's only value expires after 5s; its parent
			// stops being an empty non-terminal at the same moment.
			if r := query(t, "udp", addr, "other.detour.test.", dns.TypeA, 0); r.Rcode != st.other {
				t.Errorf("other.detour.test. rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[st.other])
			}
		})
	}

	t.Run("pruned from memory", func(t *testing.T) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.names["_acme-challenge.other.detour.test."]; ok {
			t.Error("expired name still stored")
		}
		if n := len(s.names[name].txt); n != 1 {
			t.Errorf("%d values stored, want 1", n)
		}
		if len(s.ents) != 4 { // example.detour.test., detour.test., test., .
			t.Errorf("empty non-terminals %v, want the 4 ancestors of %s", s.ents, name)
		}
	})
}

func TestConcurrentChanges(t *testing.T) {
	s := New(Options{Zones: []string{"detour.test."}})
	addr := serve(t, s)
	const workers, rounds = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			name := fmt.Sprintf("_acme-challenge.h%d.detour.test.", w%3) // names shared between workers
			for i := range rounds {
				v := fmt.Sprintf("w%d-%d", w, i)
				s.AddTXT(name, v, time.Now().Add(time.Minute))
				if !slices.Contains(s.TXT(name), v) {
					t.Errorf("%s missing right after AddTXT", v)
				}
				s.RemoveTXT(name, v)
			}
			s.AddTXT(name, fmt.Sprintf("final-%d", w), time.Time{})
		})
		wg.Go(func() {
			network := []string{"udp", "tcp"}[w%2]
			c := &dns.Client{Net: network, Timeout: 5 * time.Second}
			for range rounds / 5 {
				m := new(dns.Msg).SetQuestion(fmt.Sprintf("_acme-challenge.h%d.detour.test.", w%3), dns.TypeTXT)
				r, _, err := c.Exchange(m, addr)
				if err != nil {
					t.Errorf("%s query during changes: %v", network, err)
					return
				}
				if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
					t.Errorf("rcode %s during changes", dns.RcodeToString[r.Rcode])
				}
			}
		})
	}
	wg.Wait()
	for h := range 3 {
		name := fmt.Sprintf("_acme-challenge.h%d.detour.test.", h)
		var want []string
		for w := h; w < workers; w += 3 {
			want = append(want, fmt.Sprintf("final-%d", w))
		}
		got := txtValues(query(t, "tcp", addr, name, dns.TypeTXT, 0))
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s serves %q, want %q", name, got, want)
		}
	}
}

func TestSetAddrs(t *testing.T) {
	s := New(Options{})
	s.SetAddrs("a.test", netip.MustParseAddr("::ffff:192.0.2.1"), netip.MustParseAddr("192.0.2.1"), netip.Addr{})
	addr := serve(t, s)
	r := query(t, "udp", addr, "a.test.", dns.TypeA, 0)
	if len(r.Answer) != 1 {
		t.Errorf("answers %v, want one A record (mapped address unmapped and deduplicated)", r.Answer)
	}
	if r := query(t, "udp", addr, "a.test.", dns.TypeAAAA, 0); len(r.Answer) != 0 || r.Rcode != dns.RcodeSuccess {
		t.Errorf("AAAA: %v, want NODATA", r)
	}
	s.SetAddrs("A.TEST.")
	if r := query(t, "udp", addr, "a.test.", dns.TypeA, 0); r.Rcode != dns.RcodeRefused {
		t.Errorf("after removal rcode %s, want REFUSED (no records, no zones)", dns.RcodeToString[r.Rcode])
	}
}
