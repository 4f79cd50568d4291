// Package statuspage renders what the agent knows as pages a person reads
// in a browser, and as JSON for scripts: every certificate with its state,
// days left against its lifetime, the CA's renewal window (ACME Renewal
// Information, RFC 9773) and the planned renewal on one timeline, the last
// attempt and its error with the fix; per certificate its attempts, the
// versions in the archive and its deploy targets; open firewall windows;
// the nodes of a fleet.
//
// It renders plain data (Page, Detail) that the agent's side fills through
// a Source, with html/template; the style sheet and the small optional
// script are embedded, so that nothing is fetched from the network and
// the essentials read the same without JavaScript. The pages are
// read-only and never carry keys, tokens or credentials: the data has
// none. Access control is the caller's: RequireBasicAuth (a bcrypt hash,
// RFC 7617) or TLSConfig with a client certificate required.
//
// The JSON documents are described in docs/status-json.md; Schema is
// their version.
package statuspage
