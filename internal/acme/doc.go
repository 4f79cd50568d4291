// Package acme is Detour's ACME client layer (RFC 8555) over the wire
// protocol of github.com/mholt/acmez/v3/acme: accounts with External Account
// Binding (§7.3.4), key rollover (§7.3.5), orders (§7.4) for DNS names and IP
// addresses (RFC 8738), profiles (draft-ietf-acme-profiles), renewal
// information (RFC 9773) and revocation (§7.6).
//
// It owns no orchestration: which path answers which challenge, and when to
// renew, belong to packages solve and renew.
package acme
