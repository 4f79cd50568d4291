package acmedns

import (
	"github.com/miekg/dns"
)

// fqdn returns name lower case with a trailing dot.
func fqdn(name string) string { return dns.CanonicalName(name) }

// challengeName is the dns-01 owner name of domain (RFC 8555 §8.4).
func challengeName(domain string) string { return "_acme-challenge." + fqdn(domain) }
