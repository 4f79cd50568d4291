package renew

import (
	"errors"
	"fmt"
	"strings"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/solve"
)

// explainValidation adds to err, the CA's failed validation of a challenge
// answered by path, what a failure to connect means. By then the answer
// was self-checked from this host and the host's own firewall was read
// (or a window opened), so what stops the CA lies outside this host, and
// the CA's terse "timeout" or "connection refused" is turned into the
// likely causes and the fixes.
func explainValidation(err error, path solve.Path) error {
	err = fmt.Errorf("%w (path %s)", err, path.Name)
	var verr *acme.ValidationError
	if !errors.As(err, &verr) || verr.Problem == nil {
		return err
	}
	typ := path.Solver.Type()
	port := 80
	switch typ {
	case solve.TLSALPN01:
		port = 443
	case solve.HTTP01:
	default:
		return err
	}
	detail := strings.ToLower(verr.Problem.Detail)
	connection := strings.HasSuffix(verr.Problem.Type, ":connection")
	switch {
	case strings.Contains(detail, "refused"):
		return fmt.Errorf("%w\n    The CA reached the address %s resolves to, and the connection to port %d/tcp was refused there: "+
			"nothing listens on that port at that address, or a firewall rejects it. Likely causes: the name's A or AAAA record points at "+
			"another machine than this one; a router doing NAT forwards port %d to another host or port, or not at all; a load balancer "+
			"in front does not pass port %d on. Check what the name resolves to from outside, and the port forwarding; or use a DNS path "+
			"(dns-01 needs no inbound port)", err, verr.Identifier, port, port, port)
	case connection && (strings.Contains(detail, "timeout") || strings.Contains(detail, "deadline exceeded") || strings.Contains(detail, "timed out")),
		typ == solve.TLSALPN01 && strings.Contains(detail, "failed to connect"):
		return fmt.Errorf("%w\n    The CA could not connect to %s on port %d/tcp: its connection got no answer in time. "+
			"Detour had checked the answer from this host and read this host's firewall rules before asking, so the connection is most "+
			"likely lost before it reaches this host. Likely causes: a cloud or provider firewall (a security group) that does not allow "+
			"inbound TCP %d from anywhere; a router doing NAT without a port forward of %d to this host; the name's A or AAAA record "+
			"pointing at an address that is not this host's; on this host, a filter Detour cannot read. Allow inbound TCP %d from anywhere "+
			"(the CA's addresses are not published); for a DigitalOcean, AWS or Hetzner firewall, let Detour open it only while the CA "+
			"validates (firewall = \"digitalocean\", \"aws-sg\" or \"hetzner\" in the path, see `detour paths standalone`); "+
			"or use a DNS path (dns-01 needs no inbound port)", err, verr.Identifier, port, port, port, port)
	}
	return err
}
