// Package e2e tests `detour doctor` end to end, in a small Internet of
// network namespaces the tests build, against real servers: for each
// scenario of issue 14 it sets up a host, runs `detour doctor --json`,
// checks that the recommended path is the one that works and that the
// report names the evidence, makes the one change doctor names (if any),
// appends the recommended configuration unchanged to a base configuration
// (state directory, account, CA) and issues a certificate through it from
// Pebble, which validates from outside the host.
//
//	"ca" namespace, 11.213.0.0/24       "router"            one host per scenario
//	 .1  BIND, primary of doctor.test    routes; DNATs       11.213.N.2 and
//	     (TSIG-signed updates)           11.213.200.6 to     2a0f:5707:d7:N::2,
//	 .2  BIND resolver of the hosts      the NATed host      or 10.66.0.2 behind
//	 .3  detour dns-server (acme-dns,    (no hairpin)        NAT: nginx, HAProxy,
//	     auth.doctor.test)                                   nftables, detour
//	 .4  Pebble (in a helper process)
//	 .5  BIND resolver of the CA
//
// The resolvers hold a fake root delegating doctor.test to the primary,
// so names resolve as on the Internet (CNAMEs into the acme-dns zone, DS
// at the parent). The hosts and the CA each have their own, as on the
// Internet: a negative answer one caches is not the other's.
//
// One CA helper process (this test binary again, started with `ip netns
// exec`), one primary, two resolvers and one acme-dns server serve every
// scenario; each scenario has its own host namespace and names, and the
// scenarios run in parallel. The addresses are public ones (not RFC 1918,
// not documentation ranges) because doctor rightly refuses private
// addresses in public DNS; they exist only inside the namespaces.
package e2e
