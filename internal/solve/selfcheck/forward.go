package selfcheck

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"github.com/mholt/acmez/v3"

	"github.com/detour-acme/detour/internal/solve/standalone"
)

// alpnForwardKind is the kind of the path that answers tls-alpn-01 behind a
// forward on port 443 (package alpnforward).
const alpnForwardKind = "alpn-forward"

// closedSilently reports whether a handshake ended with the peer closing or
// resetting the connection without a TLS record: what a TCP forward (nginx
// stream with ssl_preread, HAProxy in tcp mode) does after reading the
// ClientHello when its target does not answer. A TLS server answers with a
// ServerHello or an alert.
func closedSilently(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// notReached is the hint for an acme-tls/1 connection that reached a TLS
// server other than Detour's responder.
func (c *tlsCheck) notReached(ctx context.Context) string {
	if c.o.PathKind != alpnForwardKind {
		return useFrontDoor
	}
	return "the " + acmez.ACMETLS1Protocol + " connection reached a TLS server that is not Detour: either no forward " +
		"on port " + strconv.Itoa(c.o.TLSPort) + " sends " + acmez.ACMETLS1Protocol + " to Detour yet (add the rule " +
		"`detour snippet tls-alpn` prints), or it sends it to the wrong place; " + c.forwardTarget(ctx)
}

// forwardTarget says where the forward on port 443 must send acme-tls/1.
// When the path is an alpn-forward path whose listen address is known,
// Detour's responder there is checked directly, so the hint can tell a
// forward that points elsewhere from a responder that is not there.
func (c *tlsCheck) forwardTarget(ctx context.Context) string {
	l := c.o.Listen
	if c.o.PathKind == "standalone" {
		return "a standalone path needs port " + strconv.Itoa(c.o.TLSPort) + " itself: free it, or keep the forward " +
			"and use an alpn-forward path behind it (`detour snippet tls-alpn` prints the rule)"
	}
	if l == "" || c.o.PathKind != alpnForwardKind {
		return "its " + acmez.ACMETLS1Protocol + " target must be the listen address of Detour's alpn-forward path " +
			"(its `listen` setting, 127.0.0.1:8403 by default; `detour snippet tls-alpn` prints the rule with it)"
	}
	if c.comparing {
		return "its " + acmez.ACMETLS1Protocol + " target must be " + l + ", where this path listens"
	}
	problem, connected := c.probeListen(ctx)
	switch {
	case problem == "":
		return fmt.Sprintf("Detour answers this challenge at %s, this path's listen address, when connected to "+
			"directly: make the forward's %s target %s (nginx stream: the %s entry of the map; HAProxy: the server "+
			"line of the %s backend; `detour snippet tls-alpn` prints the rule) and reload the proxy",
			l, acmez.ACMETLS1Protocol, l, acmez.ACMETLS1Protocol, acmez.ACMETLS1Protocol)
	case !connected:
		return fmt.Sprintf("and nothing answers at %s, this path's listen address, either (%s): check that this "+
			"Detour runs with this path, and that the forward's %s target is %s", l, problem, acmez.ACMETLS1Protocol, l)
	}
	return fmt.Sprintf("a direct handshake with %s, this path's listen address, does not prove this challenge "+
		"either (%s): check that the address is this Detour's, and that the forward's %s target is %s",
		l, problem, acmez.ACMETLS1Protocol, l)
}

// probeListen handshakes with the path's listen address directly, as the
// forward would. problem is "" when the answer proves the challenge;
// connected is false when no connection could be made.
func (c *tlsCheck) probeListen(ctx context.Context) (problem string, connected bool) {
	network, address, ok := standalone.SplitAddr(c.o.Listen)
	if !ok {
		return fmt.Sprintf("%q is not a host:port or unix:/path", c.o.Listen), false
	}
	if network == "tcp" {
		address = dialable(address)
	}
	pctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	state, err := handshake(pctx, network, address, c.sni())
	var ce *connectedError
	switch {
	case err != nil && !errors.As(err, &ce):
		return describeNetErr(err), false
	case err != nil:
		return "the handshake failed: " + describeNetErr(errors.Unwrap(err)), true
	}
	return c.proves(state), true
}

// dialable turns a listen address into one to connect to: an unspecified
// or empty host becomes the loopback address of its family.
func dialable(hostport string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	switch ip, err := netip.ParseAddr(host); {
	case host == "":
		host = "127.0.0.1"
	case err == nil && ip.IsUnspecified() && ip.Is4():
		host = "127.0.0.1"
	case err == nil && ip.IsUnspecified():
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// proves returns "" when a completed handshake proves the challenge's key
// authorization (RFC 8737 §3), else what is wrong, in a few words.
func (c *tlsCheck) proves(state tls.ConnectionState) string {
	if state.NegotiatedProtocol != acmez.ACMETLS1Protocol {
		return acmez.ACMETLS1Protocol + " was not negotiated"
	}
	if len(state.PeerCertificates) == 0 {
		return "no certificate"
	}
	leaf := state.PeerCertificates[0]
	if !namesOnly(leaf, c.ch.Identifier) {
		return "a certificate for " + certNames(leaf)
	}
	want := sha256.Sum256([]byte(c.ch.KeyAuthorization))
	for _, ext := range leaf.Extensions {
		if !ext.Id.Equal(oidACMEIdentifier) {
			continue
		}
		var got []byte
		if rest, err := asn1.Unmarshal(ext.Value, &got); err != nil || len(rest) > 0 || !ext.Critical {
			return "a malformed acmeIdentifier extension"
		}
		if !bytes.Equal(got, want[:]) {
			return "a certificate for another key authorization"
		}
		return ""
	}
	return "no acmeIdentifier extension"
}
