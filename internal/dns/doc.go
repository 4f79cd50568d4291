// Package dns holds Detour's DNS client side for dns-01 (RFC 8555 §8.4):
// finding the zone a challenge record belongs to, changing TXT records with
// RFC 2136 dynamic updates signed with TSIG (RFC 8945), and waiting until
// every authoritative server of the zone answers a value.
//
// Zone finding follows the CNAME chain of the record's name first
// (_acme-challenge.example.com CNAME x.auth.example.net moves the record to
// x.auth.example.net, as the CA follows it too), then walks up the labels
// of the target asking for its SOA record (RFC 1035 §3.3.13): the owner of
// the SOA is the zone apex and its MNAME the primary server, where RFC 2136
// §4 sends updates. A signed update counts as applied only when the answer
// is signed with the same key and verifies (RFC 8945 §5.4); an unsigned or
// badly signed NOERROR is an error, since anyone on the path could forge it.
//
// Propagation does not trust a recursive resolver or a fixed sleep: Wait
// asks each authoritative server of the zone (the NS RRset, RFC 1034 §4.2)
// directly, with recursion off, until all of them answer the value.
package dns
