package dnsserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestListen(t *testing.T) {
	pc, ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer pc.Close()
	defer ln.Close()
	up, tp := pc.LocalAddr().(*net.UDPAddr).Port, ln.Addr().(*net.TCPAddr).Port
	if up == 0 || up != tp {
		t.Fatalf("UDP port %d, TCP port %d; want one non-zero port for both", up, tp)
	}

	tests := []struct {
		name   string
		addr   string
		wantIs error
		substr string
	}{
		{"port in use", pc.LocalAddr().String(), syscall.EADDRINUSE, "binding UDP"},
		{"missing port", "127.0.0.1", nil, "write host:port"},
		{"unknown host", "no-such-host.invalid:53", nil, "binding UDP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc, ln, err := Listen(tt.addr)
			if err == nil {
				pc.Close()
				ln.Close()
				t.Fatalf("Listen(%q) succeeded, want an error", tt.addr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v does not wrap %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.substr) {
				t.Errorf("error %q does not mention %q", err, tt.substr)
			}
		})
	}
}

func TestServeLifecycle(t *testing.T) {
	s := New(Options{})
	s.SetAddrs("a.test.", netip.MustParseAddr("192.0.2.1"))

	t.Run("nothing to serve", func(t *testing.T) {
		if err := s.Serve(context.Background(), nil, nil); err == nil {
			t.Error("Serve(nil, nil) succeeded, want an error")
		}
	})

	t.Run("UDP only, ready, stops on cancel", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx, pc, nil) }()
		<-s.Ready()
		if r := query(t, "udp", pc.LocalAddr().String(), "a.test.", dns.TypeA, 0); len(r.Answer) != 1 {
			t.Errorf("answer %v, want one A record", r.Answer)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v, want nil after cancel", err)
		}
		select {
		case <-s.Ready():
			t.Error("Ready still closed after Serve returned")
		default:
		}
	})

	t.Run("listener closed underneath", func(t *testing.T) {
		pc, ln, err := Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Serve(context.Background(), pc, ln) }()
		<-s.Ready()
		ln.Close()
		err = <-done
		if err == nil || !strings.Contains(err.Error(), "over tcp") {
			t.Errorf("Serve: %v, want an error naming tcp", err)
		}
	})

	t.Run("cancelled before start", func(t *testing.T) {
		pc, ln, err := Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.Serve(ctx, pc, ln); err != nil {
			t.Errorf("Serve: %v, want nil", err)
		}
	})
}

// packed returns the wire form of a query for name/qtype changed by edit.
func packed(t *testing.T, id uint16, qtype uint16, edit func(*dns.Msg)) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("a.detour.test.", qtype)
	m.Id = id
	if edit != nil {
		edit(m)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("packing: %v", err)
	}
	return b
}

func TestMalformedQueries(t *testing.T) {
	s := New(Options{Zones: []string{"detour.test."}})
	s.SetAddrs("a.detour.test.", netip.MustParseAddr("192.0.2.1"))
	addr := serve(t, s)

	header := func(id, bits, qd, an, ns, ar uint16) []byte {
		b := make([]byte, 12)
		for i, v := range []uint16{id, bits, qd, an, ns, ar} {
			binary.BigEndian.PutUint16(b[2*i:], v)
		}
		return b
	}
	valid := packed(t, 7, dns.TypeA, nil)

	tests := []struct {
		name   string
		wire   []byte
		answer bool // a response is expected
		rcode  int
	}{
		{"shorter than a header", []byte{1, 2, 3, 4, 5}, false, 0},
		{"no question", header(1, 0, 0, 0, 0, 0), true, dns.RcodeFormatError},
		{"two questions", packed(t, 2, dns.TypeA, func(m *dns.Msg) {
			m.Question = append(m.Question, m.Question[0])
		}), true, dns.RcodeFormatError},
		{"opcode UPDATE", packed(t, 3, dns.TypeA, func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }), true, dns.RcodeNotImplemented},
		{"opcode NOTIFY", packed(t, 4, dns.TypeSOA, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }), true, dns.RcodeNotImplemented},
		{"response bit set", packed(t, 5, dns.TypeA, func(m *dns.Msg) { m.Response = true }), false, 0},
		{"question cut short", valid[:16], true, dns.RcodeFormatError},
		{"compression pointer loop", append(header(8, 0, 1, 0, 0, 0), 0xc0, 12, 0, 1, 0, 1), true, dns.RcodeFormatError},
		{"label past the end", append(header(9, 0, 1, 0, 0, 0), 0x3f, 'a', 'b'), true, dns.RcodeFormatError},
		{"answer section in a query", packed(t, 10, dns.TypeA, func(m *dns.Msg) {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(1, 2, 3, 4)})
		}), true, dns.RcodeFormatError},
		{"two OPT records", packed(t, 11, dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, false).SetEdns0(1232, false) }), true, dns.RcodeFormatError},
		{"OPT as question type", packed(t, 12, dns.TypeOPT, nil), true, dns.RcodeFormatError},
	}
	c := rawConn(t, "127.0.0.1:0", addr)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Write(tt.wire); err != nil {
				t.Fatal(err)
			}
			if tt.answer {
				r := readMsg(t, c)
				if r.Id != binary.BigEndian.Uint16(tt.wire) || !r.Response || r.Rcode != tt.rcode {
					t.Errorf("response id %d rcode %s, want id %d rcode %s",
						r.Id, dns.RcodeToString[r.Rcode], binary.BigEndian.Uint16(tt.wire), dns.RcodeToString[tt.rcode])
				}
			}
			// The server must still answer, and (for ignored packets) the
			// next message must be this answer, not a reply to the junk.
			probe := packed(t, 0xbeef, dns.TypeA, nil)
			if _, err := c.Write(probe); err != nil {
				t.Fatal(err)
			}
			if r := readMsg(t, c); r.Id != 0xbeef || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Errorf("probe answered with id %#x rcode %s, %d answers; want id 0xbeef NOERROR with one A",
					r.Id, dns.RcodeToString[r.Rcode], len(r.Answer))
			}
		})
	}
}

// recorder is a dns.ResponseWriter that keeps what is written.
type recorder struct{ msgs []*dns.Msg }

var _ dns.ResponseWriter = (*recorder)(nil)

func (r *recorder) LocalAddr() net.Addr         { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr        { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353} }
func (r *recorder) WriteMsg(m *dns.Msg) error   { r.msgs = append(r.msgs, m); return nil }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) Close() error                { return nil }
func (r *recorder) TsigStatus() error           { return nil }
func (r *recorder) TsigTimersOnly(bool)         {}
func (r *recorder) Hijack()                     {}

func TestServeDNSDirect(t *testing.T) {
	s := New(Options{Zones: []string{"detour.test."}})
	q := func(edit func(*dns.Msg)) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion("a.detour.test.", dns.TypeA)
		if edit != nil {
			edit(m)
		}
		return m
	}
	tests := []struct {
		name  string
		req   *dns.Msg
		reply bool
		rcode int
	}{
		{"nil message", nil, false, 0},
		{"response", q(func(m *dns.Msg) { m.Response = true }), false, 0},
		{"no question", q(func(m *dns.Msg) { m.Question = nil }), true, dns.RcodeFormatError},
		{"two questions", q(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }), true, dns.RcodeFormatError},
		{"opcode STATUS", q(func(m *dns.Msg) { m.Opcode = dns.OpcodeStatus }), true, dns.RcodeNotImplemented},
		{"opcode NOTIFY", q(func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }), true, dns.RcodeNotImplemented},
		{"in zone", q(nil), true, dns.RcodeNameError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &recorder{}
			s.ServeDNS(w, tt.req)
			if !tt.reply {
				if len(w.msgs) != 0 {
					t.Errorf("wrote %v, want nothing", w.msgs)
				}
				return
			}
			if len(w.msgs) != 1 {
				t.Fatalf("wrote %d messages, want 1", len(w.msgs))
			}
			r := w.msgs[0]
			if r.Rcode != tt.rcode || !r.Response || r.Id != tt.req.Id || r.RecursionAvailable {
				t.Errorf("rcode %s QR %v id %d RA %v; want rcode %s, QR, id %d, no RA",
					dns.RcodeToString[r.Rcode], r.Response, r.Id, r.RecursionAvailable, dns.RcodeToString[tt.rcode], tt.req.Id)
			}
			if _, err := r.Pack(); err != nil {
				t.Errorf("response does not pack: %v", err)
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	tests := []struct {
		name     string
		rate     float64
		burst    int
		queries  int
		answered int
	}{
		{"burst then drop", 1, 3, 5, 3},
		{"disabled", -1, 0, 30, 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock() // frozen: no tokens come back unless moved
			s := New(Options{RateLimit: tt.rate, RateBurst: tt.burst, Now: clock.Now})
			s.SetAddrs("a.test.", netip.MustParseAddr("192.0.2.1"))
			addr := serve(t, s)
			flood := rawConn(t, "127.0.0.1:0", addr)

			answered := 0
			for i := range tt.queries {
				if _, err := flood.Write(packed(t, uint16(i), dns.TypeA, nil)); err != nil {
					t.Fatal(err)
				}
				// A query from another source is read after the flood's,
				// so once it is answered the flood's has been handled.
				other := rawConn(t, fmt.Sprintf("127.0.0.%d:0", i+2), addr)
				if _, err := other.Write(packed(t, 0xbeef, dns.TypeA, nil)); err != nil {
					t.Fatal(err)
				}
				if r := readMsg(t, other); r.Id != 0xbeef {
					t.Fatalf("other source got id %d", r.Id)
				}
				if s.Dropped() == uint64(i-answered) { // not dropped
					if r := readMsg(t, flood); r.Id != uint16(i) {
						t.Fatalf("flood got id %d, want %d", r.Id, i)
					}
					answered++
				}
			}
			if answered != tt.answered {
				t.Errorf("%d of %d answered, want %d", answered, tt.queries, tt.answered)
			}
			if want := uint64(tt.queries - tt.answered); s.Dropped() != want {
				t.Errorf("Dropped() = %d, want %d", s.Dropped(), want)
			}
			if tt.rate < 0 {
				return
			}
			// Nothing was sent for the dropped queries.
			if err := flood.SetReadDeadline(time.Now()); err != nil {
				t.Fatal(err)
			}
			if n, err := flood.Read(make([]byte, 512)); err == nil {
				t.Errorf("read %d unexpected octets from a limited source", n)
			}
			// TCP is not limited.
			if r := query(t, "tcp", addr, "a.test.", dns.TypeA, 0); len(r.Answer) != 1 {
				t.Errorf("TCP answer %v", r.Answer)
			}
			// Tokens come back with time.
			clock.Add(time.Second)
			if _, err := flood.Write(packed(t, 0xcafe, dns.TypeA, nil)); err != nil {
				t.Fatal(err)
			}
			if r := readMsg(t, flood); r.Id != 0xcafe {
				t.Errorf("after refill got id %d, want 0xcafe", r.Id)
			}
		})
	}
}
