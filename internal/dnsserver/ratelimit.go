package dnsserver

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// Rate limiter parameters.
const (
	// maxSources bounds the limiter's memory. Sources seen once the table
	// is full share one overflow bucket, so a flood from many (spoofed)
	// sources is still limited as a whole.
	maxSources = 1 << 16
	// sweepInterval is how often buckets that have refilled are forgotten.
	sweepInterval = 10 * time.Second
)

// limitReader is a dns.DecorateReader that drops UDP queries over the rate
// limit before they are parsed or answered.
func (s *Server) limitReader(r dns.Reader) dns.Reader {
	pcr, _ := r.(dns.PacketConnReader)
	return &limitedReader{Reader: r, pcr: pcr, s: s}
}

type limitedReader struct {
	dns.Reader // ReadTCP passes through
	pcr        dns.PacketConnReader
	s          *Server
}

var _ dns.PacketConnReader = (*limitedReader)(nil)

func (r *limitedReader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *dns.SessionUDP, error) {
	for {
		m, sess, err := r.Reader.ReadUDP(conn, timeout)
		if err != nil || r.s.admit(sess.RemoteAddr()) {
			return m, sess, err
		}
	}
}

func (r *limitedReader) ReadPacketConn(conn net.PacketConn, timeout time.Duration) ([]byte, net.Addr, error) {
	if r.pcr == nil {
		return nil, nil, errors.New("reading UDP: the DNS reader cannot read a generic net.PacketConn")
	}
	for {
		m, addr, err := r.pcr.ReadPacketConn(conn, timeout)
		if err != nil || r.s.admit(addr) {
			return m, addr, err
		}
	}
}

// admit applies the rate limit to a query from addr, counting what it drops
// and handing the drops to the DropLog, which logs episodes rather than
// drops.
func (s *Server) admit(addr net.Addr) bool {
	var src netip.Addr
	switch a := addr.(type) {
	case *net.UDPAddr:
		src = a.AddrPort().Addr()
	default:
		ap, err := netip.ParseAddrPort(addr.String())
		if err != nil {
			return true
		}
		src = ap.Addr()
	}
	ok, _ := s.limit.Allow(src)
	if ok {
		s.drops.Tick() // ends episodes that went quiet; cheap
		return true
	}
	s.dropped.Add(1)
	s.drops.Drop(src)
	return false
}

// tickDrops calls the DropLog's Tick every second until stop is closed, so
// that an episode's end is logged even when no query comes; then it ends
// the open episodes.
func (s *Server) tickDrops(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.drops.Tick()
		case <-stop:
			s.drops.Flush()
			return
		}
	}
}
