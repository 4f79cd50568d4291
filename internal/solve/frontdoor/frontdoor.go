// Package frontdoor implements the "front door" validation path for
// tls-alpn-01 (RFC 8737): a long-running `detour router` owns port 443,
// answers connections whose ALPN offers "acme-tls/1" and passes everything
// else to the user's HTTPS server (see package router).
//
// The issuing process and the router are different processes; they meet in
// the shared state directory (store.Storage). The Solver writes one record
// per identifier under
//
//	challenges/tls-alpn-01/<identifier>
//
// (an IPv6 address has its ':' replaced by '_'), holding JSON
//
//	{"identifier": "www.example.com", "type": "dns",
//	 "key_authorization": "<token>.<thumbprint>", "expires": "<RFC 3339>"}
//
// where "type" is the identifier type (RFC 8555 §9.7.7, RFC 8738). The
// Responder, used by the router, reads the record named by a ClientHello's
// SNI (a reverse-DNS name for an IP address, RFC 8738 §6) and answers with
// the challenge certificate of RFC 8737 §3. A record carries an expiry, so a
// crashed issuer never leaves an answer served for ever.
//
// Solver.Check proves, before the CA is asked, that a Detour router answers
// on the router address and reads the same state directory: it stores a probe
// record and expects the router to answer a handshake for the probe name
// with that record's certificate.
package frontdoor

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/ident"
)

// KeyPrefix is the storage prefix of tls-alpn-01 challenge records.
const KeyPrefix = "challenges/tls-alpn-01/"

// ProbeName is the SNI of the probe handshake. A Detour router answers it
// with a self-signed certificate for this name; for a name under it
// ("<nonce>.probe.detour.invalid") it answers the challenge record stored
// for that name, if any. ".invalid" names never resolve (RFC 6761 §6.4).
const ProbeName = "probe.detour.invalid"

// Record is a presented tls-alpn-01 challenge, as stored.
type Record struct {
	Identifier       string    `json:"identifier"`        // identifier value
	Type             string    `json:"type"`              // identifier type: "dns" or "ip"
	KeyAuthorization string    `json:"key_authorization"` // RFC 8555 §8.1
	Expires          time.Time `json:"expires"`           // not served after this
}

// Key returns the storage key of id's challenge record.
func Key(id ident.Identifier) string {
	return KeyPrefix + strings.ReplaceAll(id.Value, ":", "_")
}

// newNonce returns 16 random hex digits.
func newNonce() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
