package standalone

// NormalizeHost reduces an HTTP Host header (or X-Forwarded-Host value), an
// SNI value or an identifier value to the form Detour compares identifiers
// in: no port, no IPv6 brackets, lower case, no trailing dot, canonical IP
// text. It returns "" for values that cannot name an identifier (an IP
// address with a zone). Other http-01 paths (the side port) use it so that
// every path matches hosts the same way.
func NormalizeHost(h string) string { return normalizeHost(h) }
