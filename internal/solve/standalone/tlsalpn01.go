package standalone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// handshakeTimeout bounds one validation connection, from accept to close.
const handshakeTimeout = 10 * time.Second

// inUseHelpTLS is what a user whose port 443 is taken can do instead.
const inUseHelpTLS = "Keep that server and use the front-door or ALPN-forward path instead, " +
	"or an http-01 path (side-port, webroot or stateless: `detour snippet http` prints the configuration); " +
	"a firewall window helps when port 443 is free but blocked"

// TLSALPN01 answers tls-alpn-01 challenges (RFC 8737) on a port it binds
// itself (":443" by default) while challenges are presented.
//
// A handshake whose ClientHello offers the "acme-tls/1" protocol and names a
// presented identifier in its SNI gets the challenge certificate (RFC 8737
// §3), negotiates acme-tls/1 and is closed; any other handshake is refused.
// For an IP identifier the SNI is the reverse-DNS name of the address
// (RFC 8738 §6).
type TLSALPN01 struct {
	log *slog.Logger
	lc  *lifecycle
	cfg *tls.Config

	mu    sync.RWMutex
	certs map[string][]tlsEntry // normalised identifier value -> presented answers, newest last
}

// tlsEntry is one presented challenge certificate.
type tlsEntry struct {
	token   string
	keyAuth string
	cert    *tls.Certificate
}

var _ solve.Solver = (*TLSALPN01)(nil)

// NewTLSALPN01 returns a tls-alpn-01 solver. It binds nothing until the
// first Present.
func NewTLSALPN01(opts Options) (*TLSALPN01, error) {
	opts, err := opts.withDefaults(":443")
	if err != nil {
		return nil, err
	}
	s := &TLSALPN01{
		log:   opts.Logger,
		certs: make(map[string][]tlsEntry),
	}
	s.cfg = &tls.Config{
		MinVersion:             tls.VersionTLS12, // RFC 8737 §3
		NextProtos:             []string{acmez.ACMETLS1Protocol},
		GetCertificate:         s.getCertificate,
		SessionTicketsDisabled: true,
	}
	s.lc = opts.newLifecycle(solve.TLSALPN01, inUseHelpTLS, func() runner {
		return &tlsServer{cfg: s.cfg, log: s.log, conns: make(map[net.Conn]struct{})}
	})
	return s, nil
}

// Type returns solve.TLSALPN01.
func (s *TLSALPN01) Type() string { return solve.TLSALPN01 }

// Check reports whether id can be validated through this solver: wildcards
// cannot (they need dns-01), and the listen address must be bindable now,
// unless the solver already serves it.
func (s *TLSALPN01) Check(ctx context.Context, id ident.Identifier) error {
	if !solve.Applicable(solve.TLSALPN01, id) {
		return fmt.Errorf("%w: tls-alpn-01 cannot validate %q; wildcard names need a dns-01 path", solve.ErrNotApplicable, id.Value)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.lc.check()
}

// Present makes the solver answer ch, binding the listen address if this is
// the first challenge presented.
func (s *TLSALPN01) Present(ctx context.Context, ch solve.Challenge) error {
	name, err := s.nameFor(ch)
	if err != nil {
		return err
	}
	if ch.KeyAuthorization == "" {
		return fmt.Errorf("presenting tls-alpn-01 for %q: empty key authorization", ch.Identifier.Value)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cert, err := acmez.TLSALPN01ChallengeCert(acme.Challenge{
		Type:             solve.TLSALPN01,
		Identifier:       acme.Identifier{Type: ch.Identifier.Type, Value: name},
		Token:            ch.Token,
		KeyAuthorization: ch.KeyAuthorization,
	})
	if err != nil {
		return fmt.Errorf("creating tls-alpn-01 certificate for %q: %w", ch.Identifier.Value, err)
	}
	if err := s.lc.acquire(); err != nil {
		return fmt.Errorf("presenting tls-alpn-01 for %q: %w", ch.Identifier.Value, err)
	}
	s.mu.Lock()
	s.certs[name] = append(s.certs[name], tlsEntry{token: ch.Token, keyAuth: ch.KeyAuthorization, cert: cert})
	s.mu.Unlock()
	s.log.Debug("presented tls-alpn-01 certificate", "identifier", ch.Identifier.Value, "token", ch.Token)
	return nil
}

// CleanUp stops answering ch; after the last CleanUp the port is released
// (unless a Listener was given). Cleaning up a challenge that was never
// presented does nothing.
func (s *TLSALPN01) CleanUp(ctx context.Context, ch solve.Challenge) error {
	name, err := s.nameFor(ch)
	if err != nil {
		return nil // Present refused it, so nothing is in place.
	}
	s.mu.Lock()
	list := s.certs[name]
	i := slices.IndexFunc(list, func(e tlsEntry) bool {
		return e.token == ch.Token && e.keyAuth == ch.KeyAuthorization
	})
	if i >= 0 {
		list = slices.Delete(list, i, i+1)
		if len(list) == 0 {
			delete(s.certs, name)
		} else {
			s.certs[name] = list
		}
	}
	s.mu.Unlock()
	if i < 0 {
		return nil
	}
	if err := s.lc.release(ctx); err != nil {
		return fmt.Errorf("cleaning up tls-alpn-01 for %q: %w", ch.Identifier.Value, err)
	}
	return nil
}

// Close stops serving and closes the listener, including a given one.
// Present fails afterwards.
func (s *TLSALPN01) Close() error { return s.lc.close() }

// Addr returns the address being served, or nil when the solver is not
// serving.
func (s *TLSALPN01) Addr() net.Addr { return s.lc.addrNow() }

// nameFor validates ch and returns the normalised identifier it is keyed by.
func (s *TLSALPN01) nameFor(ch solve.Challenge) (string, error) {
	if ch.Type != "" && ch.Type != solve.TLSALPN01 {
		return "", fmt.Errorf("presenting %s challenge with the tls-alpn-01 %s solver: wrong challenge type", ch.Type, s.lc.solverName())
	}
	if !solve.Applicable(solve.TLSALPN01, ch.Identifier) {
		return "", fmt.Errorf("%w: tls-alpn-01 cannot validate %q", solve.ErrNotApplicable, ch.Identifier.Value)
	}
	name := normalizeHost(ch.Identifier.Value)
	if name == "" {
		return "", fmt.Errorf("presenting tls-alpn-01: invalid identifier %q", ch.Identifier.Value)
	}
	if _, err := netip.ParseAddr(name); (err == nil) != (ch.Identifier.Type == ident.TypeIP) {
		return "", fmt.Errorf("presenting tls-alpn-01: identifier %q does not match its type %q", ch.Identifier.Value, ch.Identifier.Type)
	}
	return name, nil
}

// getCertificate picks the challenge certificate for a ClientHello, or
// refuses the handshake.
func (s *TLSALPN01) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	remote := ""
	if hello.Conn != nil {
		remote = hello.Conn.RemoteAddr().String()
	}
	name := sniName(hello.ServerName)
	var cert *tls.Certificate
	if slices.Contains(hello.SupportedProtos, acmez.ACMETLS1Protocol) && name != "" {
		s.mu.RLock()
		if list := s.certs[name]; len(list) > 0 {
			cert = list[len(list)-1].cert
		}
		s.mu.RUnlock()
	}
	s.log.Debug("tls-alpn-01 handshake", "remote_addr", remote, "sni", hello.ServerName, "identifier", name, "alpn", hello.SupportedProtos, "found", cert != nil)
	switch {
	case !slices.Contains(hello.SupportedProtos, acmez.ACMETLS1Protocol):
		return nil, fmt.Errorf("refusing handshake from %s: %s not offered; this port answers only ACME validation", remote, acmez.ACMETLS1Protocol)
	case cert == nil:
		return nil, fmt.Errorf("refusing handshake from %s: no challenge presented for SNI %q", remote, hello.ServerName)
	}
	return cert, nil
}

// sniName maps an SNI value to the normalised identifier it validates: a
// reverse-DNS name (RFC 8738 §6) to its IP address, a DNS name to itself.
// It returns "" when there is no SNI.
func sniName(sni string) string {
	n := normalizeHost(sni)
	if ip, ok := parseReverseName(n); ok {
		return ip.String()
	}
	if _, err := netip.ParseAddr(n); err == nil {
		return "" // a literal IP is not a valid SNI (RFC 6066 §3)
	}
	return n
}

// parseReverseName parses "4.3.2.1.in-addr.arpa" or the 32-nibble
// "….ip6.arpa" form back to an address. name is lower case without a
// trailing dot.
func parseReverseName(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, l := range labels {
			if len(l) == 0 || len(l) > 3 || (len(l) > 1 && l[0] == '0') {
				return netip.Addr{}, false
			}
			v, err := strconv.ParseUint(l, 10, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			b[3-i] = byte(v)
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, l := range labels {
			if len(l) != 1 {
				return netip.Addr{}, false
			}
			v, err := strconv.ParseUint(l, 16, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			pos := 31 - i // nibble index, most significant first
			if pos%2 == 0 {
				b[pos/2] |= byte(v) << 4
			} else {
				b[pos/2] |= byte(v)
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// tlsServer accepts connections and runs one challenge handshake on each.
type tlsServer struct {
	cfg *tls.Config
	log *slog.Logger

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func (t *tlsServer) serve(ln net.Listener) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ln.Close()
	}
	t.ln = ln
	t.mu.Unlock()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			t.mu.Lock()
			closed := t.closed
			t.mu.Unlock()
			if closed {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accepting connections: %w", err)
			}
			// Transient failure such as EMFILE: back off as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t.log.Warn("accepting tls-alpn-01 connection", "error", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			_ = c.Close()
			return nil
		}
		t.conns[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go t.handle(c)
	}
}

// handle runs the handshake on c and closes it: RFC 8737 §3 says no data
// follows the handshake.
func (t *tlsServer) handle(c net.Conn) {
	defer t.wg.Done()
	defer func() {
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
		_ = c.Close()
	}()
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	tc := tls.Server(c, t.cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		t.log.Debug("tls-alpn-01 handshake failed", "remote_addr", c.RemoteAddr().String(), "error", err)
		return
	}
	st := tc.ConnectionState()
	t.log.Debug("tls-alpn-01 handshake done", "remote_addr", c.RemoteAddr().String(), "sni", st.ServerName, "alpn", st.NegotiatedProtocol)
	_ = tc.Close()
}

func (t *tlsServer) shutdown(ctx context.Context) error {
	t.mu.Lock()
	t.closed = true
	var err error
	if t.ln != nil {
		err = t.ln.Close()
	}
	t.mu.Unlock()

	idle := make(chan struct{})
	go func() {
		t.wg.Wait()
		close(idle)
	}()
	select {
	case <-idle:
		return err
	case <-ctx.Done():
	}
	t.mu.Lock()
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	<-idle
	return err
}
