package selfcheck

import (
	"fmt"
	"net"
	"net/netip"
)

// genericNAT is appended to a connection failure's hint when it is not
// known whether the address is this host's own.
const genericNAT = "; if this host is behind NAT without hairpin routing it cannot reach its own public address, " +
	"and self_check = false skips this check for the certificate"

// isLocal reports whether a is an address of one of this host's
// interfaces (any address of a loopback network counts); known is false
// when the interfaces could not be listed.
func (o Options) isLocal(a netip.Addr) (local, known bool) {
	addrs, err := o.LocalAddrs()
	if err != nil {
		o.Logger.Debug("self-check: listing this host's addresses", "error", err)
		return false, false
	}
	a = a.Unmap()
	for _, na := range addrs {
		var p netip.Prefix
		switch v := na.(type) {
		case *net.IPNet:
			ip, ok := netip.AddrFromSlice(v.IP)
			if !ok {
				continue
			}
			ones, _ := v.Mask.Size()
			ip = ip.Unmap()
			if ip.Is4() && ones > 32 {
				ones -= 96
			}
			p = netip.PrefixFrom(ip, ones)
		case *net.IPAddr:
			ip, ok := netip.AddrFromSlice(v.IP)
			if !ok {
				continue
			}
			p = netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())
		default:
			pp, err := netip.ParsePrefix(na.String())
			if err != nil {
				continue
			}
			p = pp
		}
		if p.Addr().WithZone("") == a.WithZone("") || (p.Addr().IsLoopback() && p.IsValid() && p.Contains(a)) {
			return true, true
		}
	}
	return false, true
}

// unreachable says what a connection this host could not make to ap (an
// address host resolved to, or the IP identifier host itself) means. When
// ap is on no interface of this host, replace is the whole hint: this looks
// like NAT or a load balancer without hairpin routing. Otherwise suffix is
// appended to the caller's hint: ap is this host's own address (so the CA
// will most likely fail the same way), or nothing is known.
func (o Options) unreachable(host string, ap netip.AddrPort) (replace, suffix string) {
	local, known := o.isLocal(ap.Addr())
	switch {
	case !known:
		return "", genericNAT
	case local:
		return "", fmt.Sprintf("; %s is an address of this host, so this is not NAT and the CA will most likely meet "+
			"the same failure (self_check = false would only hide it)", ap.Addr())
	}
	whose := fmt.Sprintf("the %s record of %s", recordType(ap.Addr()), host)
	fix := fmt.Sprintf("Otherwise correct the %s record of %s to this host's public address", recordType(ap.Addr()), host)
	if _, err := netip.ParseAddr(host); err == nil {
		whose = "the IP identifier"
		fix = "Otherwise check that " + host + " is this host's public address"
	}
	return fmt.Sprintf("%s (%s) is not an address of this host, and this host cannot connect to it: this looks like "+
		"NAT (or a load balancer) without hairpin routing, which passes connections from outside to this host but "+
		"not this host's own. If port %d of %s reaches this host from outside (check from another network), "+
		"the CA will get through: skip this check with `self_check = false` in the certificate's section "+
		"(or --no-self-check for one run), at a risk: a path that is really broken then fails at the CA, and "+
		"failed validations count against its rate limit (Let's Encrypt: 5 failed authorizations per identifier "+
		"per account per hour). Or use a DNS path (dns-01), which needs no inbound connection. %s",
		ap.Addr(), whose, ap.Port(), ap.Addr(), fix), ""
}

// recordType is the DNS record type that holds a: "A" or "AAAA".
func recordType(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "A"
	}
	return "AAAA"
}

// familyName is a's address family: "IPv4" or "IPv6".
func familyName(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "IPv4"
	}
	return "IPv6"
}
