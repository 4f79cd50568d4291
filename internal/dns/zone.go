package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	mdns "github.com/miekg/dns"
)

// ErrZoneNotFound is returned (wrapped) when no zone holding a name can be
// found: no SOA record for the name or any of its parents.
var ErrZoneNotFound = errors.New("zone not found")

// CNAMEError reports a CNAME chain that loops or is too long to follow.
type CNAMEError struct {
	// Chain lists the names followed, starting with the name asked; for a
	// loop the last name is the one seen before.
	Chain []string
	// Loop is true for a loop, false for a chain longer than MaxCNAMEs.
	Loop bool
}

func (e *CNAMEError) Error() string {
	chain := strings.Join(e.Chain, " -> ")
	if e.Loop {
		return fmt.Sprintf("CNAME loop: %s; fix the CNAME records so that the chain ends at a name that can hold the TXT record", chain)
	}
	return fmt.Sprintf("CNAME chain longer than %d names: %s; point the first name closer to the record", MaxCNAMEs, chain)
}

// Zone locates a record: the zone it belongs to and its primary server.
type Zone struct {
	// Name is the zone apex, fully qualified ("example.com.").
	Name string
	// Primary is the SOA MNAME of the zone ("ns1.example.com."), the server
	// RFC 2136 updates go to.
	Primary string
	// Target is the owner name the record lives at: the name asked, or the
	// end of its CNAME chain.
	Target string
	// Chain lists the names followed from the name asked to Target; a single
	// element when the name is no CNAME.
	Chain []string
}

// FindZone follows the CNAME chain of name and finds the zone of its end.
func (c *Client) FindZone(ctx context.Context, name string) (Zone, error) {
	target, chain, err := c.FollowCNAMEs(ctx, name)
	if err != nil {
		return Zone{}, err
	}
	apex, primary, err := c.ZoneOf(ctx, target)
	if err != nil {
		if len(chain) > 1 {
			return Zone{}, fmt.Errorf("following %s: %w", strings.Join(chain, " -> "), err)
		}
		return Zone{}, err
	}
	return Zone{Name: apex, Primary: primary, Target: target, Chain: chain}, nil
}

// FollowCNAMEs returns the name at the end of name's CNAME chain and the
// chain itself (name first). A loop, or a chain longer than MaxCNAMEs, is a
// *CNAMEError. A resolver that does not answer NOERROR or NXDOMAIN ends the
// chain: the zone search that follows reports the problem.
func (c *Client) FollowCNAMEs(ctx context.Context, name string) (string, []string, error) {
	cur := mdns.CanonicalName(name)
	chain := []string{cur}
	seen := map[string]bool{cur: true}
	for {
		r, err := c.query(ctx, c.resolver, cur, mdns.TypeCNAME, true)
		if err != nil {
			return "", nil, fmt.Errorf("following CNAMEs of %s: %w", name, err)
		}
		if r.Rcode != mdns.RcodeSuccess && r.Rcode != mdns.RcodeNameError {
			c.log.DebugContext(ctx, "CNAME lookup not answered", "name", cur, "rcode", rcodeName(r.Rcode))
			return cur, chain, nil
		}
		next := ""
		for _, rr := range r.Answer {
			if cn, ok := rr.(*mdns.CNAME); ok && strings.EqualFold(cn.Hdr.Name, cur) {
				next = mdns.CanonicalName(cn.Target)
				break
			}
		}
		if next == "" {
			return cur, chain, nil
		}
		chain = append(chain, next)
		if seen[next] {
			return "", nil, &CNAMEError{Chain: chain, Loop: true}
		}
		if len(chain) > MaxCNAMEs {
			return "", nil, &CNAMEError{Chain: chain}
		}
		seen[next] = true
		cur = next
	}
}

// ZoneOf returns the apex and primary server (SOA MNAME) of the zone that
// holds name, walking up its labels. A negative answer carrying the SOA of
// the enclosing zone ends the walk early.
func (c *Client) ZoneOf(ctx context.Context, name string) (apex, primary string, err error) {
	name = mdns.CanonicalName(name)
	last := "no answer"
	for off, end := 0, false; !end; off, end = mdns.NextLabel(name, off) {
		n := name[off:]
		if n == "." {
			break
		}
		r, err := c.query(ctx, c.resolver, n, mdns.TypeSOA, true)
		if err != nil {
			return "", "", fmt.Errorf("finding the zone of %s: %w", name, err)
		}
		if r.Rcode != mdns.RcodeSuccess && r.Rcode != mdns.RcodeNameError {
			last = fmt.Sprintf("%s for %s", rcodeName(r.Rcode), n)
			continue
		}
		for _, rr := range r.Answer {
			if soa, ok := rr.(*mdns.SOA); ok && strings.EqualFold(soa.Hdr.Name, n) {
				return mdns.CanonicalName(soa.Hdr.Name), mdns.CanonicalName(soa.Ns), nil
			}
		}
		for _, rr := range r.Ns {
			soa, ok := rr.(*mdns.SOA)
			if ok && soa.Hdr.Name != "." && mdns.IsSubDomain(soa.Hdr.Name, n) {
				return mdns.CanonicalName(soa.Hdr.Name), mdns.CanonicalName(soa.Ns), nil
			}
		}
		last = fmt.Sprintf("%s without SOA for %s", rcodeName(r.Rcode), n)
	}
	return "", "", fmt.Errorf("%w: no SOA record for %s or any parent at resolver %s (last answer: %s)",
		ErrZoneNotFound, name, c.resolver, last)
}

// PrimaryAddr returns host:port of zone z's primary server on port (e.g.
// "53"), looking the SOA MNAME's address up through the resolver.
func (c *Client) PrimaryAddr(ctx context.Context, z Zone, port string) (string, error) {
	addrs, err := c.hostAddrs(ctx, z.Primary)
	if err != nil {
		return "", fmt.Errorf("finding the primary of zone %s (SOA MNAME %s): %w; set the update server explicitly", z.Name, z.Primary, err)
	}
	return net.JoinHostPort(addrs[0].String(), port), nil
}
