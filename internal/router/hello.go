package router

import (
	"errors"
	"fmt"
)

// TLS wire constants (RFC 8446 §5.1, §4, §4.2; RFC 6066 §3; RFC 7301 §3.1).
const (
	recordHeaderLen     = 5
	recordTypeHandshake = 0x16
	maxRecordLen        = 1 << 14 // TLSPlaintext.length limit, RFC 8446 §5.1
	handshakeHeaderLen  = 4
	typeClientHello     = 0x01
	extServerName       = 0
	extALPN             = 16
	sniHostName         = 0
)

// Errors of parseHello. errShort is not a failure: more bytes are needed.
var (
	errShort     = errors.New("client hello incomplete")
	errNotTLS    = errors.New("first bytes are not a TLS handshake record")
	errMalformed = errors.New("malformed client hello")
	errTooLarge  = errors.New("client hello larger than the peek limit")
)

// clientHello is what routing needs from a ClientHello. The byte slices
// point into the peeked data (or, for a hello spanning several records, into
// a copy of its handshake bytes); they are valid until the buffer is reused.
type clientHello struct {
	sni     []byte // host_name of the server_name extension, as sent; nil if absent
	alpn    []byte // protocol_name_list body of the ALPN extension; nil if absent
	hasALPN bool
}

// hasProto reports whether p is in the ALPN list.
func (h *clientHello) hasProto(p string) bool {
	for b := h.alpn; len(b) > 0; {
		n := int(b[0])
		if string(b[1:1+n]) == p { // bounds were checked by parseALPN
			return true
		}
		b = b[1+n:]
	}
	return false
}

// protocols returns the ALPN list; it allocates and is meant for logs and
// tests.
func (h *clientHello) protocols() []string {
	var out []string
	for b := h.alpn; len(b) > 0; {
		n := int(b[0])
		out = append(out, string(b[1:1+n]))
		b = b[1+n:]
	}
	return out
}

// parseHello parses the ClientHello at the start of data, the bytes peeked
// so far, without modifying them. The hello may span several handshake
// records (RFC 8446 §5.1 allows fragmentation); max bounds the bytes a
// complete hello may occupy, record headers included.
//
// It returns errShort while data is a valid prefix of a hello that would fit
// in max, errTooLarge when it cannot fit, errNotTLS when the first record is
// not a TLS handshake record (plain HTTP, a PROXY protocol header, SSLv2),
// and an error wrapping errMalformed for anything else that is wrong.
func parseHello(data []byte, max int) (clientHello, error) {
	if len(data) == 0 {
		return clientHello{}, errShort
	}
	// A record: type(1) legacy_version(2) length(2). Check what can be
	// checked of the first header as soon as its bytes are there, so that
	// garbage is refused on the first read.
	if data[0] != recordTypeHandshake {
		return clientHello{}, errNotTLS
	}
	if len(data) >= 2 && data[1] != 3 {
		return clientHello{}, errNotTLS
	}

	// Walk the records, measuring the handshake bytes available.
	var (
		msgLen   = -1 // handshake message length incl. header, once known
		avail    int  // handshake bytes in complete records so far
		firstLen int  // payload length of the first record
		nrec     int
		end      int // end of the last record needed
	)
	for off := 0; ; {
		if msgLen >= 0 && avail >= msgLen {
			break
		}
		if off+recordHeaderLen > len(data) {
			if off+recordHeaderLen > max {
				return clientHello{}, errTooLarge
			}
			return clientHello{}, errShort
		}
		h := data[off : off+recordHeaderLen]
		if h[0] != recordTypeHandshake || h[1] != 3 {
			if off == 0 {
				return clientHello{}, errNotTLS
			}
			return clientHello{}, malformed("record of type %d inside the client hello", h[0])
		}
		n := int(h[3])<<8 | int(h[4])
		if n == 0 || n > maxRecordLen {
			return clientHello{}, malformed("handshake record length %d", n)
		}
		if off+recordHeaderLen+n > max {
			return clientHello{}, errTooLarge
		}
		if nrec == 0 {
			firstLen = n
		}
		nrec++
		off += recordHeaderLen + n
		if off > len(data) {
			// Partial record. Its visible bytes may already hold the
			// handshake header of a hello that is too large.
			if msgLen < 0 && nrec == 1 && len(data) >= recordHeaderLen+handshakeHeaderLen {
				if err := checkHandshakeHeader(data[recordHeaderLen:], max); err != nil {
					return clientHello{}, err
				}
			}
			return clientHello{}, errShort
		}
		avail += n
		end = off
		if msgLen < 0 && avail >= handshakeHeaderLen {
			hs := handshakeHead(data, end)
			if err := checkHandshakeHeader(hs[:], max); err != nil {
				return clientHello{}, err
			}
			msgLen = handshakeHeaderLen + (int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3]))
			// Records plus headers must fit; a lower bound is enough here.
			if msgLen+recordHeaderLen > max {
				return clientHello{}, errTooLarge
			}
		}
	}

	var msg []byte
	if nrec == 1 || firstLen >= msgLen {
		msg = data[recordHeaderLen : recordHeaderLen+msgLen]
	} else {
		// Fragmented: gather the payloads. Rare (and bounded by max).
		msg = make([]byte, 0, msgLen)
		for off := 0; len(msg) < msgLen; {
			n := int(data[off+3])<<8 | int(data[off+4])
			p := data[off+recordHeaderLen : off+recordHeaderLen+n]
			if rest := msgLen - len(msg); len(p) > rest {
				p = p[:rest]
			}
			msg = append(msg, p...)
			off += recordHeaderLen + n
		}
	}
	return parseClientHelloBody(msg[handshakeHeaderLen:])
}

// handshakeHead returns the first four handshake bytes found in the complete
// records of data[:end].
func handshakeHead(data []byte, end int) [4]byte {
	var out [4]byte
	got := 0
	for off := 0; off < end && got < 4; {
		n := int(data[off+3])<<8 | int(data[off+4])
		for _, b := range data[off+recordHeaderLen : off+recordHeaderLen+n] {
			out[got] = b
			got++
			if got == 4 {
				break
			}
		}
		off += recordHeaderLen + n
	}
	return out
}

// checkHandshakeHeader checks the message type and length in the first four
// handshake bytes.
func checkHandshakeHeader(hs []byte, max int) error {
	if hs[0] != typeClientHello {
		return malformed("first handshake message has type %d, not client_hello", hs[0])
	}
	n := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
	if n+handshakeHeaderLen+recordHeaderLen > max {
		return errTooLarge
	}
	return nil
}

// parseClientHelloBody parses a ClientHello body (RFC 8446 §4.1.2; the TLS
// 1.2 form of RFC 5246 §7.4.1.2 has the same layout) and its server_name and
// ALPN extensions. Duplicate extensions are refused, as crypto/tls does, so
// that the router and the backend cannot disagree about the name.
func parseClientHelloBody(b []byte) (clientHello, error) {
	var h clientHello
	r := reader(b)
	if !r.skip(2 + 32) { // legacy_version, random
		return h, malformed("truncated version or random")
	}
	// Only the framing of the fields before the extensions matters here;
	// their contents are the backend's business.
	if _, ok := r.vec8(); !ok {
		return h, malformed("bad session id")
	}
	if cs, ok := r.vec16(); !ok || len(cs)%2 != 0 {
		return h, malformed("bad cipher suite list")
	}
	if _, ok := r.vec8(); !ok {
		return h, malformed("bad compression method list")
	}
	if len(r) == 0 {
		return h, nil // no extensions (an old client): no SNI, no ALPN
	}
	exts, ok := r.vec16()
	if !ok || len(r) != 0 {
		return h, malformed("bad extension block")
	}
	var seenSNI bool
	for len(exts) > 0 {
		var typ uint16
		var body []byte
		if typ, ok = exts.u16(); !ok {
			return h, malformed("truncated extension")
		}
		if body, ok = exts.vec16(); !ok {
			return h, malformed("truncated extension %d", typ)
		}
		switch typ {
		case extServerName:
			if seenSNI {
				return h, malformed("duplicate server_name extension")
			}
			seenSNI = true
			sni, err := parseSNI(body)
			if err != nil {
				return h, err
			}
			h.sni = sni
		case extALPN:
			if h.hasALPN {
				return h, malformed("duplicate ALPN extension")
			}
			list, err := parseALPN(body)
			if err != nil {
				return h, err
			}
			h.alpn, h.hasALPN = list, true
		}
	}
	return h, nil
}

// parseSNI returns the host_name of a server_name extension body
// (RFC 6066 §3). At most one host_name is allowed.
func parseSNI(body []byte) ([]byte, error) {
	r := reader(body)
	list, ok := r.vec16()
	if !ok || len(r) != 0 || len(list) == 0 {
		return nil, malformed("bad server_name list")
	}
	var host []byte
	for len(list) > 0 {
		typ, ok := list.u8()
		if !ok {
			return nil, malformed("truncated server_name entry")
		}
		name, ok := list.vec16()
		if !ok {
			return nil, malformed("truncated server_name entry")
		}
		if typ != sniHostName {
			continue
		}
		if host != nil {
			return nil, malformed("more than one host_name in server_name")
		}
		if len(name) == 0 || len(name) > 255 {
			return nil, malformed("host_name of length %d", len(name))
		}
		host = name
	}
	return host, nil
}

// parseALPN checks an ALPN extension body (RFC 7301 §3.1) and returns its
// protocol_name_list contents.
func parseALPN(body []byte) ([]byte, error) {
	r := reader(body)
	list, ok := r.vec16()
	if !ok || len(r) != 0 || len(list) < 2 {
		return nil, malformed("bad ALPN list")
	}
	for l := list; len(l) > 0; {
		p, ok := l.vec8()
		if !ok || len(p) == 0 {
			return nil, malformed("bad ALPN protocol name")
		}
	}
	return list, nil
}

// routingName returns sni lower-cased and without a trailing dot, written
// into dst so that no allocation is needed.
func routingName(dst *[255]byte, sni []byte) []byte {
	n := copy(dst[:], sni)
	out := dst[:n]
	for i, c := range out {
		if 'A' <= c && c <= 'Z' {
			out[i] = c + ('a' - 'A')
		}
	}
	if n > 0 && out[n-1] == '.' {
		out = out[:n-1]
	}
	return out
}

// reader consumes TLS vectors from a byte slice.
type reader []byte

func (r *reader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

func (r *reader) u8() (byte, bool) {
	if len(*r) < 1 {
		return 0, false
	}
	v := (*r)[0]
	*r = (*r)[1:]
	return v, true
}

func (r *reader) u16() (uint16, bool) {
	if len(*r) < 2 {
		return 0, false
	}
	v := uint16((*r)[0])<<8 | uint16((*r)[1])
	*r = (*r)[2:]
	return v, true
}

// vec8 reads a vector with a one-byte length prefix.
func (r *reader) vec8() (reader, bool) {
	n, ok := r.u8()
	if !ok || len(*r) < int(n) {
		return nil, false
	}
	v := (*r)[:n:n]
	*r = (*r)[n:]
	return v, true
}

// vec16 reads a vector with a two-byte length prefix.
func (r *reader) vec16() (reader, bool) {
	n, ok := r.u16()
	if !ok || len(*r) < int(n) {
		return nil, false
	}
	v := (*r)[:n:n]
	*r = (*r)[n:]
	return v, true
}

// malformed returns an error wrapping errMalformed.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errMalformed}, args...)...)
}
