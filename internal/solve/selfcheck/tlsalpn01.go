package selfcheck

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mholt/acmez/v3"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// oidACMEIdentifier is id-pe-acmeIdentifier (RFC 8737 §6.1).
var oidACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// useFrontDoor is what a user whose port 443 is held by a web server does.
const useFrontDoor = "a web server owns port 443; use the front door (`detour router`) " +
	"or an ALPN forward (`detour snippet tls-alpn`)"

// TLSALPN01 performs ch's tls-alpn-01 handshake as a public CA will (see the
// package documentation) and returns nil when the certificate proves the
// key authorization. When it does not, the error is a *MismatchError naming
// what answered and what to change.
func TLSALPN01(ctx context.Context, ch solve.Challenge, opts Options) error {
	o, err := opts.withDefaults()
	if err != nil {
		return err
	}
	if err := validate(ch, solve.TLSALPN01); err != nil {
		return err
	}
	c := &tlsCheck{o: o, ch: ch, target: net.JoinHostPort(ch.Identifier.Value, strconv.Itoa(o.TLSPort))}
	return c.run(ctx)
}

// tlsCheck is one run of TLSALPN01.
type tlsCheck struct {
	o      Options
	ch     solve.Challenge
	target string // identifier:port, for messages
	// comparing is set on the run that connects to the other address
	// family, which is not compared again.
	comparing bool
}

// run connects, handshakes and judges the certificate.
func (c *tlsCheck) run(ctx context.Context) error {
	id := c.ch.Identifier.Value
	addrs, err := lookup(ctx, c.o, id)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("self-checking tls-alpn-01 for %s: %w", id, ctx.Err())
		}
		e := c.mismatch(ReasonDNS, err, fmt.Sprintf("%s does not resolve (%v)", id, err),
			"create an A or AAAA record for "+id+" pointing at this host; the CA resolves it the same way")
		return e
	}
	err = c.check(ctx, addrs)
	if ctx.Err() != nil {
		return fmt.Errorf("self-checking tls-alpn-01 for %s: %w", id, ctx.Err())
	}
	return err
}

// sni is the server name the CA sends for the identifier.
func (c *tlsCheck) sni() string {
	if c.ch.Identifier.Type == ident.TypeIP {
		return reverseName(netip.MustParseAddr(c.ch.Identifier.Value)) // validated in validate
	}
	return c.ch.Identifier.Value
}

// check handshakes with addrs as the CA does and judges the certificate;
// when that fails and the name has an address of the other family, that
// address is checked too (see compareFamilies).
func (c *tlsCheck) check(ctx context.Context, addrs []netip.Addr) error {
	id, sni := c.ch.Identifier.Value, c.sni()
	c.o.Logger.Debug("self-check: handshaking", "challenge", solve.TLSALPN01, "identifier", id,
		"addrs", addrs, "port", c.o.TLSPort, "sni", sni)
	state, attempts, err := tryEach(ctx, c.o, addrs, c.o.TLSPort, anyFailure, func(ctx context.Context, ap netip.AddrPort) (tls.ConnectionState, error) {
		return handshake(ctx, "tcp", ap.String(), sni)
	})
	var fail *MismatchError
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fail = c.handshakeMismatch(ctx, attempts, err, sni)
	} else {
		last := attempts[len(attempts)-1].Addr
		if fail = c.judge(ctx, state, last); fail == nil {
			c.o.Logger.Debug("self-check passed", "challenge", solve.TLSALPN01, "identifier", id, "addr", last.String())
			return nil
		}
		fail.Attempts, fail.Addr = attempts, last
	}
	other := untried(addrs, attempts)
	if c.comparing || !other.IsValid() {
		return fail
	}
	c.o.Logger.Debug("self-check: handshaking with the other address family", "identifier", id, "addr", other.String())
	sub := *c
	sub.comparing = true
	f := family{typ: solve.TLSALPN01, host: id, kind: kindOf(attempts), fail: fail,
		other: netip.AddrPortFrom(other, uint16(c.o.TLSPort))}
	return compareFamilies(f, "answers with the right acme-tls/1 certificate", func() error {
		return sub.check(ctx, []netip.Addr{other})
	})
}

// handshake connects to address and performs the CA's handshake. A failure
// after the connection was made is a *connectedError.
func handshake(ctx context.Context, network, address, sni string) (tls.ConnectionState, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, network, address)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	conn := tls.Client(raw, &tls.Config{
		ServerName: sni,
		NextProtos: []string{acmez.ACMETLS1Protocol},
		MinVersion: tls.VersionTLS12, // RFC 8737 §4
		// The challenge certificate is self-signed by design; it is checked
		// against RFC 8737 after the handshake instead.
		InsecureSkipVerify: true, //nolint:gosec // verified by judge
	})
	defer conn.Close()
	if err := conn.HandshakeContext(ctx); err != nil {
		return tls.ConnectionState{}, &connectedError{err}
	}
	return conn.ConnectionState(), nil
}

// judge checks a completed handshake against RFC 8737 §3; nil means it
// passes.
func (c *tlsCheck) judge(ctx context.Context, state tls.ConnectionState, addr netip.AddrPort) *MismatchError {
	if len(state.PeerCertificates) == 0 {
		return c.mismatch(ReasonCertificate, nil, fmt.Sprintf("the server on %s (%s) sent no certificate", c.target, addr), c.notReached(ctx))
	}
	leaf := state.PeerCertificates[0]
	subject, issuer := certNames(leaf), certIssuer(leaf)
	fill := func(e *MismatchError) *MismatchError {
		e.Protocol, e.CertSubject, e.CertIssuer = state.NegotiatedProtocol, subject, issuer
		return e
	}
	if state.NegotiatedProtocol != acmez.ACMETLS1Protocol {
		return fill(c.mismatch(ReasonProtocol, nil,
			fmt.Sprintf("the server on %s (%s) did not negotiate %s: it answered with a certificate for %s %s",
				c.target, addr, acmez.ACMETLS1Protocol, subject, issuedBy(issuer)),
			c.notReached(ctx)))
	}
	if !namesOnly(leaf, c.ch.Identifier) {
		return fill(c.mismatch(ReasonCertificate, nil,
			fmt.Sprintf("the %s responder on %s (%s) answered with a certificate for %s, not %s",
				acmez.ACMETLS1Protocol, c.target, addr, subject, c.ch.Identifier.Value),
			"RFC 8737 requires exactly one subjectAltName, the identifier: the responder answers for another name; "+
				"check that the forward passes the SNI through unchanged and that this identifier's challenge is presented there"))
	}
	var ext *pkix.Extension
	for i := range leaf.Extensions {
		if leaf.Extensions[i].Id.Equal(oidACMEIdentifier) {
			ext = &leaf.Extensions[i]
			break
		}
	}
	prefix := fmt.Sprintf("the %s certificate for %s from %s (%s)", acmez.ACMETLS1Protocol, subject, c.target, addr)
	if ext == nil {
		return fill(c.mismatch(ReasonCertificate, nil, prefix+" has no acmeIdentifier extension",
			"something other than an ACME responder negotiated acme-tls/1 on this port; point the ALPN forward "+
				"or the front door at Detour (`detour snippet tls-alpn`)"))
	}
	if !ext.Critical {
		return fill(c.mismatch(ReasonCertificate, nil, prefix+" has an acmeIdentifier extension not marked critical",
			"RFC 8737 §3 requires it critical and CAs reject the certificate; replace the responder with Detour's "+
				"(`detour snippet tls-alpn`)"))
	}
	var got []byte
	rest, err := asn1.Unmarshal(ext.Value, &got)
	if err != nil || len(rest) > 0 || len(got) != sha256.Size {
		return fill(c.mismatch(ReasonCertificate, err, prefix+" has a malformed acmeIdentifier extension (want an OCTET STRING of a SHA-256 digest)",
			"replace the responder with Detour's (`detour snippet tls-alpn`)"))
	}
	want := sha256.Sum256([]byte(c.ch.KeyAuthorization))
	if !bytes.Equal(got, want[:]) {
		return fill(c.mismatch(ReasonCertificate, nil, prefix+" proves another key authorization",
			"another ACME client (or a stale Detour process) answers acme-tls/1 on this port: point the ALPN forward "+
				"at this Detour (`detour snippet tls-alpn`) or stop the other client"))
	}
	return nil
}

// handshakeMismatch builds the MismatchError for a failed connection or
// handshake.
func (c *tlsCheck) handshakeMismatch(ctx context.Context, attempts []Attempt, err error, sni string) *MismatchError {
	last := attempts[len(attempts)-1].Addr
	nat, replace := genericNAT, ""
	if notConnected(err) {
		replace, nat = c.o.unreachable(c.ch.Identifier.Value, last)
	}
	port := strconv.Itoa(c.o.TLSPort)
	var detail, hint string
	r := netReason(err)
	var (
		ce  *connectedError
		op  *net.OpError
		rec tls.RecordHeaderError
	)
	switch {
	case r == ReasonRefused:
		detail = fmt.Sprintf("connection to %s refused for %s", last, c.target)
		hint = "nothing listens on port " + port + " there: use the standalone path (Detour binds the port itself), " +
			"or let a firewall window open it" + nat
	case r == ReasonTimeout && errors.As(err, &ce):
		detail = fmt.Sprintf("%s accepted the connection for %s but did not complete a TLS handshake within %v", last, c.target, c.o.Timeout)
		hint = "something holds port " + port + " without answering TLS (a stalled proxy, a firewall that accepts " +
			"and drops, a hung server): check what listens there" + nat
	case r == ReasonTimeout:
		detail = fmt.Sprintf("no connection to %s within %v for %s", last, c.o.Timeout, c.target)
		hint = "a firewall drops port " + port + ": open it, or let a firewall window open it during validation, " +
			"and check that the A/AAAA records point at this host" + nat
	case errors.As(err, &rec):
		r = ReasonProtocol
		detail = fmt.Sprintf("%s did not answer TLS on port %s for %s", last, port, c.target)
		hint = "a service that does not speak TLS (plain HTTP?) holds port " + port + "; free the port for the " +
			"standalone path, or put Detour's front door (`detour router`) there"
	case errors.As(err, &ce) && closedSilently(err):
		r = ReasonProtocol
		detail = fmt.Sprintf("%s accepted the connection for %s and closed it after the ClientHello offering %s, "+
			"without any TLS answer", last, c.target, acmez.ACMETLS1Protocol)
		hint = "that is what a forward on port " + port + " (nginx stream with ssl_preread, HAProxy in tcp mode) " +
			"does when nothing answers at its " + acmez.ACMETLS1Protocol + " target: the forward is there, but it " +
			"sends " + acmez.ACMETLS1Protocol + " where nothing answers; " + c.forwardTarget(ctx)
	case errors.As(err, &op) && op.Op == "remote error" && strings.Contains(op.Err.Error(), "no application protocol"):
		r = ReasonProtocol
		detail = fmt.Sprintf("the TLS server on %s (%s) refused %s (alert: no application protocol)", c.target, last, acmez.ACMETLS1Protocol)
		hint = c.notReached(ctx)
	case errors.As(err, &op) && op.Op == "remote error":
		r = ReasonProtocol
		detail = fmt.Sprintf("the TLS server on %s (%s) rejected the %s handshake for SNI %q (%v)", c.target, last, acmez.ACMETLS1Protocol, sni, op.Err)
		hint = "if it is Detour's responder, this challenge is not presented there: check that the ALPN forward or " +
			"front door points at this Detour; otherwise " + useFrontDoor
		if c.o.PathKind == alpnForwardKind && c.o.Listen != "" {
			hint = "the " + acmez.ACMETLS1Protocol + " connection reached a responder that does not hold this " +
				"challenge (another Detour, or another ACME client); " + c.forwardTarget(ctx)
		}
	case errors.As(err, &ce):
		r = ReasonProtocol
		detail = fmt.Sprintf("the TLS handshake with %s for %s failed: %v", last, c.target, errors.Unwrap(err))
		hint = c.notReached(ctx)
	default:
		detail = fmt.Sprintf("could not connect to %s for %s: %s", last, c.target, describeNetErr(err))
		hint = "check that the A/AAAA records of " + c.ch.Identifier.Value + " point at this host and that port " +
			port + " is reachable" + nat
	}
	if replace != "" {
		hint = replace
	}
	e := c.mismatch(r, err, detail, hint)
	e.Attempts, e.Addr = attempts, last
	return e
}

// mismatch fills the fields every tls-alpn-01 MismatchError has.
func (c *tlsCheck) mismatch(r Reason, err error, detail, hint string) *MismatchError {
	return &MismatchError{
		Challenge:  solve.TLSALPN01,
		Identifier: c.ch.Identifier.Value,
		Reason:     r,
		URL:        c.target,
		Detail:     detail,
		Hint:       hint,
		Err:        err,
	}
}

// namesOnly reports whether cert's subjectAltName holds exactly id
// (RFC 8737 §3, RFC 8738 §6).
func namesOnly(cert *x509.Certificate, id ident.Identifier) bool {
	if len(cert.EmailAddresses) > 0 || len(cert.URIs) > 0 {
		return false
	}
	if id.Type == ident.TypeIP {
		want, err := netip.ParseAddr(id.Value)
		if err != nil || len(cert.DNSNames) > 0 || len(cert.IPAddresses) != 1 {
			return false
		}
		got, ok := netip.AddrFromSlice(cert.IPAddresses[0])
		return ok && got.Unmap() == want.Unmap()
	}
	return len(cert.IPAddresses) == 0 && len(cert.DNSNames) == 1 && strings.EqualFold(cert.DNSNames[0], id.Value)
}

// certNames lists the names a certificate is for: its subjectAltNames, or
// its subject when it has none.
func certNames(cert *x509.Certificate) string {
	names := append([]string(nil), cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		names = append(names, ip.String())
	}
	switch {
	case len(names) == 0 && cert.Subject.CommonName != "":
		return cert.Subject.CommonName
	case len(names) == 0:
		return "no name"
	case len(names) > 3:
		return strings.Join(names[:3], ", ") + fmt.Sprintf(" and %d more", len(names)-3)
	}
	return strings.Join(names, ", ")
}

// certIssuer names a certificate's issuer, "" when it is self-signed.
func certIssuer(cert *x509.Certificate) string {
	if bytes.Equal(cert.RawIssuer, cert.RawSubject) {
		return ""
	}
	switch {
	case cert.Issuer.CommonName != "":
		return cert.Issuer.CommonName
	case len(cert.Issuer.Organization) > 0:
		return cert.Issuer.Organization[0]
	}
	return cert.Issuer.String()
}

// issuedBy phrases an issuer for a message.
func issuedBy(issuer string) string {
	if issuer == "" {
		return "(self-signed)"
	}
	return "issued by " + issuer
}
