// Package fleetnet builds the network the fleet's end-to-end tests run in:
// N Detour nodes, each with its own nginx, behind one HAProxy load
// balancer, so that the CA's validation request (RFC 8555 §8.3, §8.4)
// lands on whichever node the balancer picks.
//
// New creates, in network namespaces the test owns, a "lan" namespace
// holding a Linux bridge, one namespace per node and one for the
// balancer, each joined to the bridge by a veth pair with an IPv4 address
// in a /24 of 10.214.0.0/16 picked so that parallel tests (and test
// processes) do not collide. One more veth joins the test's own network
// namespace to the bridge (Net.HostAddr): services the test runs
// in-process (etcd, Pebble) listen there and are reachable from every
// node, and the test reaches the balancer and the nodes directly. Nothing
// else changes in the test's namespace: no routes beyond the subnet's, no
// sysctls. Everything is removed when the test ends, failed or not.
//
// Like nstest, everything here needs root; tests fail, never skip,
// without it.
package fleetnet

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall/nstest"
	"github.com/detour-acme/detour/internal/testenv"
)

// MaxNodes is the most nodes a Net has: node i (from 1) is .10+i of the
// subnet.
const MaxNodes = 200

// Options configure New.
type Options struct {
	// Nodes is the number of nodes; 3 when zero.
	Nodes int
}

// Net is a fleet's network: the nodes and the balancer on one bridge,
// reachable from the test's namespace.
type Net struct {
	Subnet   string     // "10.214.X.0/24"
	HostAddr string     // the test's own address on the bridge (".1"), in its root namespace
	HostLink string     // the veth in the test's namespace that holds HostAddr
	LAN      *nstest.NS // the namespace holding the bridge
	Nodes    []*Node    // node1, node2, ...
	LB       *LB        // the balancer's namespace; StartHAProxy runs HAProxy there
}

// Node is one node of the fleet: a namespace with an address on the
// bridge, where the test runs `detour run` (Command) and nginx
// (StartNginx).
type Node struct {
	Name  string          // "node1", "node2", ...
	Addr  string          // IPv4 address on the bridge, no port
	NS    *nstest.NS      // the node's namespace
	Nginx *testenv.Server // the nginx StartNginx started last; nil before

	port string // its veth's end in LAN, a port of the bridge
}

// String returns the node's name.
func (n *Node) String() string { return n.Name }

// The bridge and the LAN's ends of the veth pairs.
const (
	bridge  = "br0"
	lanHost = "host" // the LAN's end of HostLink
	lanLB   = "lb"
	memDev  = "eth0" // the member's end, in every node and in the balancer
)

// New creates the network for t; it is torn down when the test ends.
func New(t testing.TB, opts Options) *Net {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Nodes < 0 || opts.Nodes > MaxNodes {
		t.Fatalf("fleetnet: Nodes = %d: want 1 to %d", opts.Nodes, MaxNodes)
	}
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "ip", "iproute2")
	n := &Net{LAN: nstest.New(t)}
	n.LAN.Run(t, "ip", "link", "add", bridge, "type", "bridge", "forward_delay", "0")
	n.LAN.Run(t, "ip", "link", "set", bridge, "up")
	x := n.claimSubnet(t)
	prefix := fmt.Sprintf("10.214.%d.", x)
	n.Subnet = prefix + "0/24"
	n.HostAddr = prefix + "1"
	run(t, "ip", "addr", "add", n.HostAddr+"/24", "dev", n.HostLink)
	run(t, "ip", "link", "set", n.HostLink, "up")
	n.LAN.Run(t, "ip", "link", "set", lanHost, "master", bridge, "up")

	n.LB = &LB{Addr: prefix + "2", NS: nstest.New(t), net: n}
	n.join(t, n.LB.NS, lanLB, n.LB.Addr)
	for i := 1; i <= opts.Nodes; i++ {
		nd := &Node{Name: "node" + strconv.Itoa(i), Addr: prefix + strconv.Itoa(10+i), NS: nstest.New(t), port: "node" + strconv.Itoa(i)}
		n.join(t, nd.NS, nd.port, nd.Addr)
		n.Nodes = append(n.Nodes, nd)
	}
	return n
}

// join connects ns to the bridge: port is the veth's end in LAN, eth0
// its end in ns, with addr.
func (n *Net) join(t testing.TB, ns *nstest.NS, port, addr string) {
	t.Helper()
	n.LAN.Run(t, "ip", "link", "add", port, "type", "veth", "peer", "name", memDev, "netns", ns.Name)
	n.LAN.Run(t, "ip", "link", "set", port, "master", bridge, "up")
	ns.Run(t, "ip", "addr", "add", addr+"/24", "dev", memDev)
	ns.Run(t, "ip", "link", "set", memDev, "up")
}

// Candidate third octets are subnetStart+1, +2, ... (mod 254): a random
// start, so that test processes running side by side start apart, and a
// counter, so that the tests of one process do.
var (
	subnetStart = rand.Uint32N(254)
	subnetSeq   atomic.Uint32
)

// claimSubnet picks X for 10.214.X.0/24 and creates HostLink, the veth
// from the test's namespace into LAN. The link's name, fleetnetX, is the
// claim: creating it fails when another test (of this process or another)
// holds X. A subnet the test's namespace already routes (some other
// network of the host) is passed over.
func (n *Net) claimSubnet(t testing.TB) int {
	t.Helper()
	for range 254 {
		x := int((subnetStart+subnetSeq.Add(1))%254) + 1
		link := "fleetnet" + strconv.Itoa(x)
		out, err := exec.Command("ip", "link", "add", link, "type", "veth", "peer", "name", lanHost, "netns", n.LAN.Name).CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "File exists") {
				continue // another Net holds X
			}
			t.Fatalf("ip link add %s: %v\n%s", link, err, out)
		}
		if used := routed(t, fmt.Sprintf("10.214.%d.0/24", x)); used != "" {
			run(t, "ip", "link", "del", link)
			t.Logf("fleetnet: 10.214.%d.0/24 is in use in the test's namespace (%s): trying another", x, used)
			continue
		}
		n.HostLink = link
		t.Cleanup(func() {
			// Deleting LAN would take the link away too, but only
			// some time later: delete it now, so the name is free and
			// nothing is left when the test binary exits.
			if out, err := exec.Command("ip", "link", "del", link).CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find device") {
				t.Errorf("ip link del %s: %v\n%s", link, err, out)
			}
		})
		return x
	}
	t.Fatal("fleetnet: every subnet 10.214.X.0/24 is taken")
	return 0
}

// routed returns a route of the test's namespace, in any table, that
// overlaps subnet (other than a default route), or "".
func routed(t testing.TB, subnet string) string {
	t.Helper()
	for _, sel := range []string{"root", "match"} {
		for l := range strings.SplitSeq(run(t, "ip", "-4", "-o", "route", "show", "table", "all", sel, subnet), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.Contains(l, "default") {
				return l
			}
		}
	}
	return ""
}

// run runs a command in the test's own namespace, failing the test when
// it fails.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Command returns a command that runs name inside the node's namespace
// (through `ip netns exec`); the caller starts and stops it.
func (n *Node) Command(name string, args ...string) *exec.Cmd {
	return n.NS.Command(name, args...)
}

// Partition cuts the node off the network: its port on the bridge goes
// down, as if its cable were pulled at the switch. Packets to and from
// the node are lost (they time out, nothing is refused); the node's own
// configuration is untouched and it still reaches itself. It returns once
// the port is down.
func (n *Net) Partition(t testing.TB, node *Node) {
	t.Helper()
	n.LAN.Run(t, "ip", "link", "set", node.port, "down")
	n.waitPort(t, node, "DOWN", "disabled")
}

// Heal reconnects a node Partition cut off and returns once its port
// forwards again.
func (n *Net) Heal(t testing.TB, node *Node) {
	t.Helper()
	n.LAN.Run(t, "ip", "link", "set", node.port, "up")
	n.waitPort(t, node, "UP", "forwarding")
}

// waitPort waits until the node's port on the bridge has the operational
// state oper and the bridge port state state.
func (n *Net) waitPort(t testing.TB, node *Node, oper, state string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := n.LAN.Run(t, "ip", "-j", "-d", "link", "show", "dev", node.port)
		var links []struct {
			OperState string `json:"operstate"`
			LinkInfo  struct {
				SlaveData struct {
					State string `json:"state"`
				} `json:"info_slave_data"`
			} `json:"linkinfo"`
		}
		if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
			t.Fatalf("reading the state of %s's port: %v\n%s", node.Name, err, out)
		}
		l := links[0]
		if l.OperState == oper && l.LinkInfo.SlaveData.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's port on the bridge is %s/%s, want %s/%s", node.Name, l.OperState, l.LinkInfo.SlaveData.State, oper, state)
		}
		time.Sleep(20 * time.Millisecond) // no event to wait for short of netlink monitoring
	}
}

// Node returns the node named name ("node2"), failing the test when
// there is none.
func (n *Net) Node(t testing.TB, name string) *Node {
	t.Helper()
	for _, nd := range n.Nodes {
		if nd.Name == name {
			return nd
		}
	}
	t.Fatalf("fleetnet: no node %q", name)
	return nil
}

// hostPort joins an address of the Net and a port.
func hostPort(addr string, port int) string { return net.JoinHostPort(addr, strconv.Itoa(port)) }
