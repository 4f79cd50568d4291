package standalone

// IdentifierForSNI maps the SNI of a tls-alpn-01 ClientHello to the value of
// the identifier being validated: a reverse-DNS name (RFC 8738 §6) becomes
// its IP address, a DNS name is lower-cased without a trailing dot. It
// returns "" when there is no SNI or the SNI is a literal IP address (not
// allowed by RFC 6066 §3). Other tls-alpn-01 responders (the front door) use
// it so that every path maps names the same way.
func IdentifierForSNI(sni string) string { return sniName(sni) }
