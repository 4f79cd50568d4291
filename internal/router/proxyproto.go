package router

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// proxyV2Sig is the PROXY protocol version 2 signature (PROXY protocol
// specification, haproxy.org proxy-protocol.txt §2.2).
var proxyV2Sig = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// maxProxyHeader is the largest header writeProxyV2 produces (TCP over
// IPv6: 16 bytes of header and 36 of addresses).
const maxProxyHeader = 16 + 36

// PROXY v2 fields.
const (
	proxyV2Proxy   = 0x21 // version 2, command PROXY
	proxyV2Local   = 0x20 // version 2, command LOCAL
	proxyFamUnspec = 0x00
	proxyFamTCP4   = 0x11
	proxyFamTCP6   = 0x21
)

// appendProxyV2 appends a PROXY v2 header for a connection from src to dst
// (the client's address and the address it connected to). When either is
// not a TCP address (a Unix listener), the header is a LOCAL command with
// family UNSPEC and no addresses, as HAProxy sends then, which tells the
// backend to use the connection's own endpoints.
func appendProxyV2(b []byte, src, dst net.Addr) []byte {
	b = append(b, proxyV2Sig[:]...)
	s, ok1 := tcpAddrPort(src)
	d, ok2 := tcpAddrPort(dst)
	if !ok1 || !ok2 {
		return append(b, proxyV2Local, proxyFamUnspec, 0, 0)
	}
	b = append(b, proxyV2Proxy)
	sa, da := s.Addr().Unmap(), d.Addr().Unmap()
	if sa.Is4() && da.Is4() {
		b = append(b, proxyFamTCP4, 0, 12)
		s4, d4 := sa.As4(), da.As4()
		b = append(b, s4[:]...)
		b = append(b, d4[:]...)
	} else {
		// Mixed families: give both as IPv6 (v4-mapped for the IPv4 one).
		b = append(b, proxyFamTCP6, 0, 36)
		s16, d16 := sa.As16(), da.As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, s.Port())
	return binary.BigEndian.AppendUint16(b, d.Port())
}

// tcpAddrPort converts a TCP net.Addr without allocating.
func tcpAddrPort(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta == nil {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	return ap, ap.Addr().IsValid()
}
