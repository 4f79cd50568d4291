// Package firewall opens a firewall window: the port the ACME CA validates
// on (80 for http-01, RFC 8555 §8.3; 443 for tls-alpn-01, RFC 8737 §3) is
// accepted only while the CA validates, and closes by itself after a
// timeout even when Detour dies without cleaning up.
//
// A Window names one TCP port, the address families it is opened for and
// how long it may stay open. A Backend opens and closes windows on one
// kind of firewall:
//
//   - nftables, through netlink (no nft command): Detour's own table
//     "inet detour" holds the set "open" of (nfproto . port) elements, each
//     with a kernel timeout, and a base chain accepting them. An accept in
//     one base chain does not stop another base chain on the same hook from
//     dropping the packet, so when a table of the user's ruleset can drop
//     input (policy drop, or a drop/reject rule) Detour also adds, for the
//     duration of the window only, the set "detour_open" to that table and
//     one rule at the top of its input chain accepting the set's elements
//     (rules cannot look up sets of another table). Both sets carry the same
//     elements with the same timeouts, so the kernel closes the port when
//     the timeout runs out whatever happened to Detour; the then empty set
//     and inert rule are removed by the next Detour run (Sweep) or by
//     `detour firewall close`. Rulesets Detour cannot change safely (tables
//     managed by iptables-nft or firewalld, tables owned by another process,
//     ingress or prerouting chains with a drop policy) are refused, with the
//     reason and what to set instead, before anything changes.
//   - iptables and ip6tables (the system's default, or the -legacy and -nft
//     variants), through their commands: one rule at the top of INPUT with
//     an xt_time --datestop match (UTC), so the kernel stops accepting at
//     the deadline, and a "detour-window" comment.
//   - ufw, through its commands: a prepended allow rule with a
//     "detour-window" comment. ufw has no timeout: a rule left by a killed
//     Detour stays until the next run sweeps it.
//   - firewalld, through firewall-cmd: a runtime rich rule with firewalld's
//     own --timeout.
//   - exec: the user's own open and close commands, given the window in
//     DETOUR_FIREWALL_* environment variables.
//   - digitalocean, aws-sg, hetzner: a cloud provider's firewall, in front
//     of the host, through its API (package cloud and one package per
//     provider). The window is one inbound rule per address family from
//     0.0.0.0/0 or ::/0 (the CA's addresses are not published), added
//     once the provider reports it applied, and removed exactly; a rule
//     of the user's that already accepts the port is left alone. Cloud
//     rules never expire, so a journal in the state store records each
//     rule before it is added (cloudbackend.go) and Sweep removes those
//     past their deadline: the agent and `detour renew` at start, and
//     `detour firewall close --stale` from a systemd timer. A path may
//     list one cloud and one host firewall; the cloud rule opens first
//     and closes last.
//
// Every command-driven backend tags its rules, and Sweep removes the
// tagged rules whose deadline has passed (the stale rules of a killed run)
// when a run starts and no live lease holds a window on that backend.
//
// Several Detour processes may hold the same port at once (two
// certificates renewed at the same moment). A Keeper counts them: each open
// window is a lease stored in the state directory (firewall/leases/) under
// a store lock, with the holder's process ID and deadline, and a window is
// closed only for the address families no other live lease holds. A lease
// whose process is gone or whose deadline has passed does not count.
// Processes that use different state directories do not see each other's
// leases.
//
// Inbound reads the rulesets, changing nothing, and says what they do to
// an inbound TCP connection to a port from a remote address, per address
// family: accept, drop, reject or unknown, which firewall and which rule or
// policy decided, and whether a Detour window is what accepts it. A
// self-check cannot tell: a request the host makes to itself never crosses
// its own inbound filter.
//
// Solver wraps any http-01 or tls-alpn-01 solver: the window opens just
// before the inner Present and closes right after the inner CleanUp, which
// the renewal runs after the CA's validation.
package firewall
