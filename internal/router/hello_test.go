package router

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// synthHello builds a ClientHello record with the given extensions (each
// already type+length framed).
func synthHello(exts ...[]byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 0)                   // session id
	body = append(body, 0, 2, 0x13, 0x01)    // one cipher suite
	body = append(body, 1, 0)                // null compression
	if exts != nil {
		var e []byte
		for _, x := range exts {
			e = append(e, x...)
		}
		body = append(body, byte(len(e)>>8), byte(len(e)))
		body = append(body, e...)
	}
	hs := append([]byte{typeClientHello, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{recordTypeHandshake, 3, 1, byte(len(hs) >> 8), byte(len(hs))}, hs...)
}

func ext(typ uint16, body []byte) []byte {
	return append([]byte{byte(typ >> 8), byte(typ), byte(len(body) >> 8), byte(len(body))}, body...)
}

func sniExt(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = append(list, sniHostName, byte(len(n)>>8), byte(len(n)))
		list = append(list, n...)
	}
	return ext(extServerName, append([]byte{byte(len(list) >> 8), byte(len(list))}, list...))
}

func alpnExt(protos ...string) []byte {
	var list []byte
	for _, p := range protos {
		list = append(list, byte(len(p)))
		list = append(list, p...)
	}
	return ext(extALPN, append([]byte{byte(len(list) >> 8), byte(len(list))}, list...))
}

func TestParseHello(t *testing.T) {
	real := captureHello(t, helloCfg("App.Example.com", "h2", "http/1.1"))
	acme := captureHello(t, helloCfg("www.example.com", "acme-tls/1"))
	noSNI := captureHello(t, helloCfg(""))
	withAlert := append(fragment(real, 100)[:105:105], 0x15, 3, 3, 0, 2, 1, 0)
	tests := []struct {
		name  string
		data  []byte
		max   int
		sni   string
		alpn  []string
		isErr error
	}{
		{name: "real hello", data: real, sni: "App.Example.com", alpn: []string{"h2", "http/1.1"}},
		{name: "acme", data: acme, sni: "www.example.com", alpn: []string{"acme-tls/1"}},
		{name: "no sni no alpn", data: noSNI},
		{name: "fragmented 100", data: fragment(real, 100), sni: "App.Example.com", alpn: []string{"h2", "http/1.1"}},
		{name: "fragmented 1", data: fragment(acme, 1), sni: "www.example.com", alpn: []string{"acme-tls/1"}},
		{name: "trailing bytes", data: append(slices.Clone(acme), 0x17, 3, 3, 0, 1, 0), sni: "www.example.com", alpn: []string{"acme-tls/1"}},
		{name: "no extensions", data: synthHello()},
		{name: "empty extension block", data: synthHello([]byte{})},
		{name: "synthetic", data: synthHello(sniExt("a.example"), alpnExt("x")), sni: "a.example", alpn: []string{"x"}},
		{name: "empty", data: nil, isErr: errShort},
		{name: "http", data: []byte("GET / HTTP/1.1\r\n"), isErr: errNotTLS},
		{name: "proxy v1", data: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), isErr: errNotTLS},
		{name: "proxy v2", data: append(proxyV2Sig[:], real...), isErr: errNotTLS},
		{name: "sslv2", data: []byte{0x80, 0x2e, 0x01, 0x03, 0x01}, isErr: errNotTLS},
		{name: "bad version", data: []byte{0x16, 0x07}, isErr: errNotTLS},
		{name: "huge handshake", data: []byte{0x16, 3, 1, 0x40, 0, 1, 0x01, 0, 0}, isErr: errTooLarge},
		{name: "over max", data: real, max: 200, isErr: errTooLarge},
		{name: "zero record", data: []byte{0x16, 3, 1, 0, 0}, isErr: errMalformed},
		{name: "record too long", data: []byte{0x16, 3, 1, 0x40, 0x01}, max: 1 << 20, isErr: errMalformed},
		{name: "alert inside", data: withAlert, isErr: errMalformed},
		{name: "server hello", data: []byte{0x16, 3, 3, 0, 4, 2, 0, 0, 0}, isErr: errMalformed},
		{name: "duplicate sni ext", data: synthHello(sniExt("a.example"), sniExt("b.example")), isErr: errMalformed},
		{name: "two host names", data: synthHello(sniExt("a.example", "b.example")), isErr: errMalformed},
		{name: "duplicate alpn", data: synthHello(alpnExt("h2"), alpnExt("h2")), isErr: errMalformed},
		{name: "empty alpn name", data: synthHello(alpnExt("h2", "")), isErr: errMalformed},
		{name: "empty alpn list", data: synthHello(ext(extALPN, []byte{0, 0})), isErr: errMalformed},
		{name: "empty sni", data: synthHello(sniExt("")), isErr: errMalformed},
		{name: "truncated extension", data: synthHello(ext(extALPN, []byte{0, 5, 2, 'h'})), isErr: errMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			max := tt.max
			if max == 0 {
				max = DefaultMaxHello
			}
			h, err := parseHello(tt.data, max)
			if tt.isErr != nil {
				if !errors.Is(err, tt.isErr) {
					t.Fatalf("err = %v, want %v", err, tt.isErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(h.sni) != tt.sni {
				t.Errorf("sni = %q, want %q", h.sni, tt.sni)
			}
			if got := h.protocols(); !slices.Equal(got, tt.alpn) {
				t.Errorf("alpn = %q, want %q", got, tt.alpn)
			}
			for _, p := range tt.alpn {
				if !h.hasProto(p) {
					t.Errorf("hasProto(%q) = false", p)
				}
			}
			if h.hasProto("nope") {
				t.Error("hasProto(nope) = true")
			}
		})
	}
}

// Every proper prefix of a hello asks for more bytes; that is what lets the
// router read a hello that arrives in pieces.
func TestParseHelloPrefixes(t *testing.T) {
	for _, data := range [][]byte{
		captureHello(t, helloCfg("www.example.com", "h2")),
		fragment(captureHello(t, helloCfg("www.example.com", "h2")), 7),
	} {
		for i := range len(data) {
			if _, err := parseHello(data[:i], DefaultMaxHello); !errors.Is(err, errShort) {
				t.Fatalf("prefix of %d/%d bytes: err = %v, want errShort", i, len(data), err)
			}
		}
		if _, err := parseHello(data, DefaultMaxHello); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRoutingName(t *testing.T) {
	var buf [255]byte
	for in, want := range map[string]string{"WWW.Example.COM.": "www.example.com", "": "", "a": "a", ".": ""} {
		if got := routingName(&buf, []byte(in)); string(got) != want {
			t.Errorf("routingName(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseHello checks that the parser never panics, never reads outside
// its input, and agrees with crypto/tls: whenever crypto/tls accepts a
// ClientHello, the parser finds the same server name and ALPN list. The
// seeds in testdata/fuzz/FuzzParseHello run with every `go test`.
func FuzzParseHello(f *testing.F) {
	f.Add(captureHello(f, helloCfg("www.example.com", "h2", "http/1.1")))
	f.Add(captureHello(f, helloCfg("probe.detour.invalid", "acme-tls/1")))
	f.Add(fragment(captureHello(f, helloCfg("a.example", "acme-tls/1")), 50))
	f.Add(synthHello(sniExt("a.example"), alpnExt("x", "y")))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := parseHello(data, DefaultMaxHello)
		if err != nil {
			if !errors.Is(err, errShort) && !errors.Is(err, errNotTLS) && !errors.Is(err, errTooLarge) && !errors.Is(err, errMalformed) {
				t.Fatalf("unexpected error kind: %v", err)
			}
		} else {
			if len(h.sni) > 255 {
				t.Fatalf("sni of %d bytes", len(h.sni))
			}
			protos := h.protocols()
			for _, p := range protos {
				if !h.hasProto(p) {
					t.Fatalf("hasProto(%q) false for a listed protocol", p)
				}
			}
			if h.hasALPN != (len(protos) > 0) {
				t.Fatalf("hasALPN = %v with %d protocols", h.hasALPN, len(protos))
			}
		}

		// Differential check against crypto/tls.
		var info *tls.ClientHelloInfo
		srv := tls.Server(&replayConn{Conn: fakeConn{}, pending: data}, &tls.Config{
			GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
				info = chi
				return nil, errCaptured
			},
		})
		_ = srv.Handshake()
		if info == nil || !saneRecords(data) || len(info.ServerName) > 255 {
			return // crypto/tls refused it, or accepts record framing the router refuses on purpose
		}
		if err != nil {
			t.Fatalf("crypto/tls accepted a hello the parser refused: %v", err)
		}
		if want := strings.TrimSuffix(info.ServerName, "."); !strings.EqualFold(strings.TrimSuffix(string(h.sni), "."), want) {
			t.Fatalf("sni = %q, crypto/tls says %q", h.sni, info.ServerName)
		}
		if got := h.protocols(); !slices.Equal(got, info.SupportedProtos) && !(len(got) == 0 && len(info.SupportedProtos) == 0) {
			t.Fatalf("alpn = %q, crypto/tls says %q", got, info.SupportedProtos)
		}
	})
}

// saneRecords reports whether data starts with handshake records of major
// version 3 and lengths from 1 to 2^14, the framing the router insists on;
// crypto/tls tolerates a little more (versions below 0x1000, records up to
// 2^14+2048).
func saneRecords(data []byte) bool {
	msgLen, avail := -1, 0
	for off := 0; msgLen < 0 || avail < msgLen; {
		if off+recordHeaderLen > len(data) {
			return false
		}
		n := int(data[off+3])<<8 | int(data[off+4])
		if data[off] != recordTypeHandshake || data[off+1] != 3 || n == 0 || n > maxRecordLen || off+recordHeaderLen+n > len(data) {
			return false
		}
		avail += n
		off += recordHeaderLen + n
		if msgLen < 0 && avail >= handshakeHeaderLen {
			hs := handshakeHead(data, off)
			msgLen = handshakeHeaderLen + (int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3]))
		}
	}
	return true
}

// The committed seed corpus must be there, so that plain `go test` runs it.
func TestFuzzCorpusCommitted(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzParseHello"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 5 {
		t.Fatalf("%d seed files, want at least 5", len(entries))
	}
}
