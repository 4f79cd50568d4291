package firewall

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The values nftables rules load into registers, for the one packet
// Inbound asks about.

// nval is what a register holds: a value of the packet, known exactly or
// only in part.
type nval struct {
	name   string // as nft writes it: "tcp dport"
	size   int    // bytes
	known  []byte // the exact value; nil when not known
	not    []byte // not known, but certainly not this (loopback, zero)
	remote bool   // the source address: no list of addresses holds it
	local  bool   // a destination address of this host, not loopback
	host   bool   // host byte order: no ordering comparisons
	flags  bool   // a bitmask (ct state, tcp flags): render by bits
}

// slot is one 32-bit register word.
type slot struct {
	v   *nval
	idx int // word of v
}

type regs [16]slot

// regWord maps a register number to its first 32-bit word.
func regWord(r uint32) int {
	switch {
	case r >= unix.NFT_REG_1 && r <= unix.NFT_REG_4:
		return int(r-unix.NFT_REG_1) * 4
	case r >= unix.NFT_REG32_00 && r <= unix.NFT_REG32_15:
		return int(r - unix.NFT_REG32_00)
	}
	return -1
}

func (rg *regs) load(r uint32, v *nval) {
	w := regWord(r)
	if w < 0 {
		return
	}
	for i := 0; i < (v.size+3)/4 && w+i < len(rg); i++ {
		rg[w+i] = slot{v, i}
	}
}

// clear forgets what a comparison consumed, so that an expression the
// netlink library could not decode never leaves a stale value behind.
func (rg *regs) clear(r uint32, n int) {
	w := regWord(r)
	for i := 0; w >= 0 && i < (n+3)/4 && w+i < len(rg); i++ {
		rg[w+i] = slot{}
	}
}

// comp is one field of a register read: a value, or nil when unknown.
type comp struct {
	v     *nval
	off   int // byte offset in the read
	whole bool
}

func (rg *regs) read(r uint32, n int) []comp {
	w := regWord(r)
	var out []comp
	for i := 0; i < (n+3)/4; i++ {
		var s slot
		if w >= 0 && w+i < len(rg) {
			s = rg[w+i]
		}
		if len(out) > 0 && s.v != nil && s.v == out[len(out)-1].v && s.idx > 0 {
			continue
		}
		out = append(out, comp{v: s.v, off: i * 4, whole: s.v != nil && s.idx == 0})
	}
	return out
}

func pad(b []byte, n int) []byte {
	out := make([]byte, max(n, len(b)))
	copy(out, b)
	return out
}

// eq says whether v equals data (the first len(data) bytes of its
// register words).
func (v *nval) eq(data []byte) tri {
	switch {
	case v.known != nil:
		return triOf(bytes.Equal(pad(v.known, len(data))[:len(data)], data))
	case v.not != nil:
		if len(data) >= v.size && bytes.Equal(pad(v.not, len(data)), data) {
			return no
		}
	case v.remote:
		return no
	case v.local:
		if a, ok := netip.AddrFromSlice(data[:min(len(data), v.size)]); ok && v.size == len(a.AsSlice()) && notLocal(a) {
			return no
		}
	}
	return maybe
}

// notLocal reports whether a is an address a remote packet to this host
// is never sent to.
func notLocal(a netip.Addr) bool { return a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() }

// inRange says whether lo <= v <= hi.
func (v *nval) inRange(lo, hi []byte) tri {
	switch {
	case v.known != nil && !v.host:
		k := pad(v.known, len(lo))[:len(lo)]
		return triOf(bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) <= 0)
	case v.known != nil && bytes.Equal(lo, hi):
		return v.eq(lo)
	case v.remote:
		if bytes.Count(lo, []byte{0}) == len(lo) && bytes.Count(hi, []byte{0xff}) == len(hi) {
			return yes
		}
		return no
	case v.local:
		a, ok1 := netip.AddrFromSlice(lo)
		b, ok2 := netip.AddrFromSlice(hi)
		if ok1 && ok2 && a.IsLoopback() && b.IsLoopback() {
			return no
		}
	case v.not != nil && bytes.Equal(lo, hi):
		return v.eq(lo)
	}
	return maybe
}

// compare applies a cmp expression's operator.
func (v *nval) compare(op expr.CmpOp, data []byte) tri {
	switch op {
	case expr.CmpOpEq:
		return v.eq(data)
	case expr.CmpOpNeq:
		return v.eq(data).not()
	}
	if v.known == nil || v.host {
		return maybe
	}
	c := bytes.Compare(pad(v.known, len(data))[:len(data)], data)
	switch op {
	case expr.CmpOpLt:
		return triOf(c < 0)
	case expr.CmpOpLte:
		return triOf(c <= 0)
	case expr.CmpOpGt:
		return triOf(c > 0)
	case expr.CmpOpGte:
		return triOf(c >= 0)
	}
	return maybe
}

func (v *nval) render(data []byte) string {
	switch {
	case strings.HasSuffix(v.name, "dport") || strings.HasSuffix(v.name, "sport") || v.name == "ct proto-dst":
		if len(data) >= 2 {
			return strconv.Itoa(int(binary.BigEndian.Uint16(data)))
		}
	case strings.HasSuffix(v.name, "l4proto") || strings.HasSuffix(v.name, "protocol") || strings.HasSuffix(v.name, "nexthdr"):
		if len(data) >= 1 {
			if n, ok := map[byte]string{1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp"}[data[0]]; ok {
				return n
			}
		}
	case v.name == "meta nfproto":
		if len(data) >= 1 {
			return map[byte]string{unix.NFPROTO_IPV4: "ipv4", unix.NFPROTO_IPV6: "ipv6"}[data[0]]
		}
	case strings.HasSuffix(v.name, "iifname"):
		s, _, term := strings.Cut(string(data), "\x00")
		if !term {
			s += "*"
		}
		return strconv.Quote(s)
	case v.name == "meta iif":
		if len(data) == 4 && binary.NativeEndian.Uint32(data) == 1 {
			return `"lo"`
		}
	case v.name == "ct state":
		if len(data) == 4 {
			var names []string
			bits := binary.NativeEndian.Uint32(data)
			for _, b := range []struct {
				bit  uint32
				name string
			}{{1, "invalid"}, {2, "established"}, {4, "related"}, {8, "new"}, {64, "untracked"}} {
				if bits&b.bit != 0 {
					names = append(names, b.name)
				}
			}
			return strings.Join(names, ",")
		}
	case v.remote || v.local:
		if a, ok := netip.AddrFromSlice(data); ok {
			return a.String()
		}
	}
	return fmt.Sprintf("0x%x", data)
}

// load values: what the packet holds.
func (p packet) meta(key expr.MetaKey) *nval {
	nfproto, proto := byte(unix.NFPROTO_IPV4), []byte{0x08, 0x00}
	if p.fam == IPv6 {
		nfproto, proto = unix.NFPROTO_IPV6, []byte{0x86, 0xdd}
	}
	switch key {
	case expr.MetaKeyNFPROTO:
		return &nval{name: "meta nfproto", size: 1, known: []byte{nfproto}}
	case expr.MetaKeyL4PROTO:
		return &nval{name: "meta l4proto", size: 1, known: []byte{unix.IPPROTO_TCP}}
	case expr.MetaKeyPROTOCOL:
		return &nval{name: "meta protocol", size: 2, known: proto}
	case expr.MetaKeyPKTTYPE:
		return &nval{name: "meta pkttype", size: 1, known: []byte{unix.PACKET_HOST}}
	case expr.MetaKeyIIFNAME:
		if p.iface != "" {
			return &nval{name: "iifname", size: unix.IFNAMSIZ, known: pad([]byte(p.iface), unix.IFNAMSIZ)}
		}
		return &nval{name: "iifname", size: unix.IFNAMSIZ, not: pad([]byte("lo"), unix.IFNAMSIZ)}
	case expr.MetaKeyIIF:
		return &nval{name: "meta iif", size: 4, host: true, not: binary.NativeEndian.AppendUint32(nil, 1)}
	case expr.MetaKeyIIFTYPE:
		return &nval{name: "meta iiftype", size: 2, host: true, not: binary.NativeEndian.AppendUint16(nil, unix.ARPHRD_LOOPBACK)}
	}
	return &nval{name: "meta", size: 4}
}

func (p packet) ct(key expr.CtKey) *nval {
	switch key {
	case expr.CtKeySTATE:
		return &nval{name: "ct state", size: 4, host: true, flags: true, known: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitNEW)}
	case expr.CtKeySTATUS:
		// A new connection nobody translated: no status bit set.
		return &nval{name: "ct status", size: 4, host: true, flags: true, known: make([]byte, 4)}
	case expr.CtKeyDIRECTION:
		return &nval{name: "ct direction", size: 1, known: []byte{0}}
	case expr.CtKeyPROTOCOL:
		return &nval{name: "ct protocol", size: 1, known: []byte{unix.IPPROTO_TCP}}
	case expr.CtKeyPROTODST:
		return &nval{name: "ct proto-dst", size: 2, known: binary.BigEndian.AppendUint16(nil, uint16(p.port))}
	case expr.CtKeySRC:
		return &nval{name: "ct saddr", size: p.addrLen(), remote: !p.anySource}
	case expr.CtKeyDST:
		return &nval{name: "ct daddr", size: p.addrLen(), local: true}
	}
	return &nval{name: "ct", size: 4}
}

func (p packet) addrLen() int {
	if p.fam == IPv6 {
		return 16
	}
	return 4
}

func (p packet) payload(e *expr.Payload) *nval {
	v := &nval{name: "payload", size: int(e.Len)}
	switch e.Base {
	case expr.PayloadBaseNetworkHeader:
		proto, saddr, daddr, pre := uint32(9), uint32(12), uint32(16), "ip "
		if p.fam == IPv6 {
			proto, saddr, daddr, pre = 6, 8, 24, "ip6 "
		}
		switch {
		case e.Offset == proto && e.Len == 1:
			v.name, v.known = pre+"protocol", []byte{unix.IPPROTO_TCP}
		case e.Offset == saddr && int(e.Len) == p.addrLen():
			v.name, v.remote = pre+"saddr", !p.anySource
		case e.Offset == daddr && int(e.Len) == p.addrLen():
			v.name, v.local = pre+"daddr", true
		}
	case expr.PayloadBaseTransportHeader:
		switch {
		case e.Offset == 2 && e.Len == 2:
			v.name, v.known = "tcp dport", binary.BigEndian.AppendUint16(nil, uint16(p.port))
		case e.Offset == 0 && e.Len == 2:
			v.name = "tcp sport"
		case e.Offset == 13 && e.Len == 1:
			v.name, v.known, v.flags = "tcp flags", []byte{0x02}, true // SYN
		}
	}
	return v
}

// bitwise applies (v & mask) ^ xor.
func bitwise(c []comp, e *expr.Bitwise) *nval {
	out := &nval{name: "bitwise", size: int(e.Len)}
	if bytes.Count(e.Mask, []byte{0}) == len(e.Mask) {
		out.known = pad(e.Xor, int(e.Len))
		return out
	}
	if len(c) != 1 || !c[0].whole {
		return out
	}
	v := c[0].v
	out.name, out.host, out.flags = v.name, v.host, true
	switch {
	case v.known != nil:
		k := pad(v.known, int(e.Len))[:e.Len]
		for i := range k {
			k[i] = k[i]&pad(e.Mask, len(k))[i] ^ pad(e.Xor, len(k))[i]
		}
		out.known = k
	case v.remote:
		out.remote, out.flags = true, false
	case v.local:
		out.local, out.flags = true, false
	}
	return out
}
