package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall/nstest"
	"github.com/detour-acme/detour/internal/plan"
	"github.com/detour-acme/detour/internal/testenv/fleetnet"
)

// convergeBound is how long every node may take to serve a certificate
// once it is stored in etcd.
const convergeBound = 20 * time.Second

// TestFleetRenewsAsOne: three agents start together and the fleet issues
// its certificate with one order; every node serves it. Then, under load
// through the balancer on :80 and :443, a renewal run by hand on node1 is
// validated while the balancer sends everything (the CA's request and the
// self-check included) to node3, which did not order: it passes, every
// node serves the new certificate within convergeBound, each ran its
// reload and hook once per version, no request failed, no answer is left
// behind, and `detour fleet status` says so.
func TestFleetRenewsAsOne(t *testing.T) {
	for _, kind := range []string{"webroot", "side-port"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			testRenewsAsOne(t, worldOptions{sidePort: kind == "side-port"})
		})
	}
}

func testRenewsAsOne(t *testing.T, opts worldOptions) {
	w := newWorldWith(t, opts)
	node1, node2, node3 := w.nodes[0], w.nodes[1], w.nodes[2]
	for _, nd := range w.nodes {
		nd.start(t)
	}
	w.waitServed(t, w.nodes, 90*time.Second, "a certificate from the CA", w.issued)
	first := liveLeaf(t, node1)
	w.waitServed(t, w.nodes, convergeBound, "the fleet's first certificate", serial(first.SerialNumber))
	if n := w.pebbleOrders(); n != 1 {
		t.Errorf("three agents starting together made %d orders at the CA, want 1", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	httpsLoad := w.net.Load(ctx, "https://"+site+"/", fleetnet.LoadOptions{RootCAs: w.pool, ServerName: site})
	httpLoad := w.net.Load(ctx, "http://"+site+"/", fleetnet.LoadOptions{})

	w.lb.Only(t, node3.Node)
	out, errOut, err := node1.run(t, "renew", "--force", certName)
	if err != nil || !strings.Contains(out, "version 2") {
		t.Fatalf("renew on node1 with the CA sent to node3: %v\n%s\n%s", err, out, errOut)
	}
	w.lb.All(t)
	renewed := liveLeaf(t, node1)
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("node1 serves the first certificate after its renewal")
	}
	conv := w.waitServed(t, w.nodes, convergeBound, "the renewed certificate", serial(renewed.SerialNumber))
	t.Logf("every node served the renewed certificate %v after node1's renew returned", conv.Round(time.Millisecond))
	// The balancer sent everything to node3 during the renewal: let the
	// load reach every node again before it stops.
	for _, l := range []*fleetnet.Load{httpsLoad, httpLoad} {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			st := l.Stats()
			if st.ByNode[node1.Name] > 0 && st.ByNode[node2.Name] > 0 && st.ByNode[node3.Name] > 0 {
				break
			}
		}
	}
	for _, l := range []*fleetnet.Load{httpsLoad, httpLoad} {
		st := l.Stop()
		if st.Failures != 0 {
			t.Errorf("load through the balancer: %v", st)
		}
		for _, nd := range w.nodes {
			if st.ByNode[nd.Name] == 0 {
				t.Errorf("load through the balancer never reached %s: %v", nd.Name, st)
			}
		}
		t.Logf("load: %v", st)
	}
	if n := w.pebbleOrders(); n != 2 {
		t.Errorf("the CA has %d orders, want 2 (one per issuance)", n)
	}
	for _, nd := range w.nodes {
		b, _ := os.ReadFile(nd.hookFile)
		if got := strings.Count(string(b), certName+"\n"); got != 2 {
			t.Errorf("%s ran its deploy hook %d times, want 2 (once per version)", nd.Name, got)
		}
		if left, _ := os.ReadDir(filepath.Join(nd.www, ".well-known", "acme-challenge")); len(left) > 0 {
			t.Errorf("%s kept answers in its webroot: %v", nd.Name, left)
		}
	}
	var st plan.FleetStatus
	out, errOut, err = node2.run(t, "fleet", "status", "--json")
	if err != nil {
		t.Fatalf("fleet status: %v\n%s", err, errOut)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("fleet status --json: %v\n%s", err, out)
	}
	if len(st.Members) != 3 || len(st.Certificates) != 1 {
		t.Fatalf("fleet status = %s", out)
	}
	c := st.Certificates[0]
	for _, nd := range w.nodes {
		if d := c.Nodes[nd.Name]; d.Version != 2 || d.Error != "" {
			t.Errorf("fleet status: %s serves %+v, want version 2", nd.Name, d)
		}
	}
	for _, m := range st.Members {
		if !m.Alive {
			t.Errorf("fleet status: %s is not alive", m.Name)
		}
	}
}

// TestFleetOrdererKilled: the node that orders the fleet's certificate is
// killed (SIGKILL) mid-renewal, its order created and its answer
// published; another node takes the renewal over once the lock's lease
// ends and completes it, with one extra order at most. The answers the
// dead node published vanish with its lease; when it starts again it
// catches up.
func TestFleetOrdererKilled(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	held, release := holdSelfCheck(t, w)
	for _, nd := range w.nodes {
		nd.start(t)
	}
	select {
	case <-held:
	case <-time.After(60 * time.Second):
		t.Fatal("no node's self-check of the CA's challenge arrived within 60s")
	}
	orderer := waitLog(t, w.nodes, time.Second, "order created")
	before := w.pebbleOrders()
	orderer.kill(t)
	killed := time.Now()
	t.Logf("killed %s, the orderer, after %d order(s) at the CA", orderer.Name, before)
	if before != 1 {
		t.Errorf("the CA had %d orders when the orderer was killed, want 1", before)
	}
	release()
	// The dead node's nginx still runs (only Detour died): its webroot
	// would not hold the new orderer's answers, so it leaves the
	// balancer's rotation, as a health check on the node's agent takes it
	// out (README: Fleet). Until its membership lease ends the new
	// orderer waits for its acknowledgement.
	w.lb.Down(t, orderer.Node)
	var alive []*node
	for _, nd := range w.nodes {
		if nd != orderer {
			alive = append(alive, nd)
		}
	}
	took := w.waitServed(t, alive, 90*time.Second, "a certificate from the CA", w.issued)
	t.Logf("the other nodes served a certificate %v after the kill (lock TTL %v)", took.Round(time.Millisecond), lockTTL)
	if took := time.Since(killed); took < lockTTL-time.Second {
		t.Errorf("a node ordered %v after the kill, before the dead orderer's lock (TTL %v) ended", took, lockTTL)
	}
	if n := w.pebbleOrders(); n != 2 {
		t.Errorf("the CA has %d orders after the takeover, want 2 (one extra at most, and one was needed)", n)
	}
	finisher := waitLog(t, alive, 5*time.Second, "certificate stored")
	t.Logf("%s completed the renewal", finisher.Name)

	// The dead orderer's answer goes from etcd, and from every live
	// follower, when its lease ends (fleetTTL after the kill): only its
	// own webroot may keep the file its own path wrote.
	for _, nd := range alive {
		dir := filepath.Join(nd.www, ".well-known", "acme-challenge")
		for left, _ := os.ReadDir(dir); len(left) > 0; left, _ = os.ReadDir(dir) {
			if time.Since(killed) > fleetTTL+10*time.Second {
				t.Errorf("%s kept answers in its webroot %v after the orderer died: %v", nd.Name, time.Since(killed).Round(time.Second), left)
				break
			}
			time.Sleep(100 * time.Millisecond) // the lease ends on etcd's clock
		}
	}
	// The dead node starts again and serves the fleet's certificate.
	orderer.start(t)
	w.lb.Up(t, orderer.Node)
	leaf := liveLeaf(t, alive[0])
	w.waitServed(t, w.nodes, convergeBound, "the fleet's certificate", serial(leaf.SerialNumber))
	if n := w.pebbleOrders(); n != 2 {
		t.Errorf("the CA has %d orders after the orderer came back, want 2", n)
	}
}

// TestFleetPartitionAndEtcdLeader: node3 is cut off the network (and
// taken out of the balancer); the etcd leader is killed (SIGKILL) while
// node1 renews; the renewal completes and node2 serves it while node3
// keeps serving the old certificate; when node3's link returns it catches
// up.
func TestFleetPartitionAndEtcdLeader(t *testing.T) {
	t.Parallel()
	w := newWorldWith(t, worldOptions{etcdProcesses: true})
	node1, node2, node3 := w.nodes[0], w.nodes[1], w.nodes[2]
	for _, nd := range w.nodes {
		nd.start(t)
	}
	w.waitServed(t, w.nodes, 90*time.Second, "a certificate from the CA", w.issued)
	first := liveLeaf(t, node1)
	w.waitServed(t, w.nodes, convergeBound, "the fleet's first certificate", serial(first.SerialNumber))

	w.lb.Down(t, node3.Node)
	w.net.Partition(t, node3.Node)
	// The renewal waits for the acknowledgement of every live member:
	// node3 is one until its membership lease ends, which holds the
	// renewal (its lock taken, its answer published) for some seconds.
	leader := w.etcd.Leader()
	done := make(chan error, 1)
	var out, errOut string
	go func() {
		var err error
		out, errOut, err = node1.run(t, "renew", "--force", certName)
		done <- err
	}()
	// Killed once the renewal holds its lock: mid-renewal.
	waitRenewing(t, w, node2, 30*time.Second)
	w.etcd.Kill(leader)
	t.Logf("killed etcd member %d, the leader, during node1's renewal", leader)
	if err := <-done; err != nil || !strings.Contains(out, "version 2") {
		t.Fatalf("renew on node1 with the etcd leader killed: %v\n%s\n%s", err, out, errOut)
	}
	renewed := liveLeaf(t, node1)
	w.waitServed(t, []*node{node1, node2}, convergeBound, "the renewed certificate", serial(renewed.SerialNumber))
	// node3 keeps serving what it has.
	var chain []*x509.Certificate
	var err error
	node3.NS.Do(t, func(testing.TB) { chain, err = dialTLS("127.0.0.1:443") })
	if err != nil || chain[0].SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Errorf("partitioned node3 serves %v (%v) inside its namespace, want the first certificate still", chain, err)
	}
	w.etcd.Restart(leader)
	w.net.Heal(t, node3.Node)
	took := w.waitServed(t, []*node{node3}, 60*time.Second, "the renewed certificate", serial(renewed.SerialNumber))
	t.Logf("node3 caught up %v after its link returned", took.Round(time.Millisecond))
	w.lb.Up(t, node3.Node)
}

// liveLeaf reads the certificate nd's live/ holds.
func liveLeaf(t *testing.T, nd *node) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(nd.state, "live", certName, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: live/%s/cert.pem holds no PEM", nd.Name, certName)
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// waitLog waits until one of nodes' agents logged msg and returns it.
func waitLog(t *testing.T, nodes []*node, bound time.Duration, msg string) *node {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		for _, nd := range nodes {
			if strings.Contains(nd.log(), msg) {
				return nd
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no agent logged %q within %v", msg, bound)
		}
		time.Sleep(20 * time.Millisecond) // polling the agents' logs
	}
}

// etcdOutage is how long TestFleetEtcdDown keeps etcd down.
const etcdOutage = time.Minute

// TestFleetEtcdDown: etcd is entirely down for a minute. Every node keeps
// serving its certificate and every agent keeps running; once etcd is
// back, a renewal on node2 converges on every node and nothing was lost.
func TestFleetEtcdDown(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	node2 := w.nodes[1]
	for _, nd := range w.nodes {
		nd.start(t)
	}
	w.waitServed(t, w.nodes, 90*time.Second, "a certificate from the CA", w.issued)
	first := liveLeaf(t, node2)
	w.waitServed(t, w.nodes, convergeBound, "the fleet's first certificate", serial(first.SerialNumber))

	w.etcd.StopAll()
	down := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load := w.net.Load(ctx, "https://"+site+"/", fleetnet.LoadOptions{RootCAs: w.pool, ServerName: site, Pause: 50 * time.Millisecond})
	// A renewal by hand fails while etcd is down, naming it, and changes
	// nothing.
	out, errOut, err := node2.run(t, "renew", "--force", certName)
	if err == nil || !strings.Contains(errOut+out, "etcd") {
		t.Errorf("renew with etcd down: err %v, want a failure naming etcd\n%s\n%s", err, out, errOut)
	}
	for time.Since(down) < etcdOutage {
		for _, nd := range w.nodes {
			select {
			case <-nd.agent.done:
				t.Fatalf("%s's agent exited with etcd down: %v", nd.Name, nd.agent.err)
			default:
			}
		}
		time.Sleep(time.Second) // the outage's length is the point
	}
	if st := load.Stop(); st.Failures != 0 || st.Requests == 0 {
		t.Errorf("load with etcd down: %v", st)
	}
	w.etcd.RestartAll()
	back := time.Now()
	t.Logf("etcd back after %v", back.Sub(down).Round(time.Second))
	// Every agent is a member again soon: a node that is not presents no
	// answer, and the balancer may send the CA to it.
	for _, nd := range w.nodes {
		waitLog(t, []*node{nd}, 20*time.Second, "joined the fleet again")
	}
	t.Logf("every node joined the fleet again within %v of etcd's return", time.Since(back).Round(time.Millisecond))
	w.waitServed(t, w.nodes, time.Second, "the fleet's first certificate", serial(first.SerialNumber))
	out, errOut, err = node2.run(t, "renew", "--force", certName)
	if err != nil || !strings.Contains(out, "version 2") {
		t.Fatalf("renew on node2 after the outage: %v\n%s\n%s", err, out, errOut)
	}
	renewed := liveLeaf(t, node2)
	took := w.waitServed(t, w.nodes, 30*time.Second, "the renewed certificate", serial(renewed.SerialNumber))
	t.Logf("every node served the renewal %v after it was stored", took.Round(time.Millisecond))
}

// nodeFirewall is each node's own firewall in TestFleetFirewallWindows:
// inbound :80 dropped (the CA's port), :443 open for the site's visitors.
const nodeFirewall = `table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iif "lo" accept
		meta l4proto { icmp, ipv6-icmp } accept
		tcp dport 443 accept
	}
}
`

// windowTimeout is the firewall_timeout of TestFleetFirewallWindows: the
// kernel closes a window by itself after it.
const windowTimeout = 20 * time.Second

// TestFleetFirewallWindows: every node drops inbound :80 and opens it
// only while an answer needs it, each node its own window (nftables, with
// the kernel's timeout). The fleet issues through the windows and closes
// them all. Then a renewal run by hand on node1 is killed (SIGKILL) while
// its answer is published and every node's window is open: node2 and node3
// close theirs when the answer's lease ends, node1's closes by the
// kernel's timeout. No node stays open.
func TestFleetFirewallWindows(t *testing.T) {
	t.Parallel()
	w := newWorldWith(t, worldOptions{nftables: nodeFirewall,
		pathExtra: fmt.Sprintf("firewall = \"nftables\"\nfirewall_timeout = %q\n", windowTimeout.String())})
	node1 := w.nodes[0]
	for _, nd := range w.nodes {
		if got := probe80(nd); got != nstest.Dropped {
			t.Fatalf("%s's :80 before any renewal: %s, want dropped", nd.Name, got)
		}
		nd.start(t)
	}
	w.waitServed(t, w.nodes, 90*time.Second, "a certificate from the CA", w.issued)
	for _, nd := range w.nodes {
		if got := probe80(nd); got != nstest.Dropped {
			t.Errorf("%s's :80 after the fleet's issuance: %s, want dropped", nd.Name, got)
		}
	}

	held, _ := holdSelfCheck(t, w)
	var renew *proc
	// Pebble hands out the earlier, valid authorization about 1% of the
	// time (even with PEBBLE_AUTHZREUSE=0): the renewal then finishes
	// without a validation to hold, and is run again.
	for attempt := 1; ; attempt++ {
		renew = node1.startCmd(t, "renew", "--force", certName)
		select {
		case <-held:
		case <-renew.done:
			if attempt < 3 && renew.err == nil {
				t.Logf("renewal %d finished without a validation (Pebble reused the authorization); again", attempt)
				continue
			}
			t.Fatalf("node1's renewal ended (%v) before the CA's validation arrived", renew.err)
		case <-time.After(60 * time.Second):
			t.Fatal("node1's self-check of the CA's challenge never arrived")
		}
		break
	}
	for _, nd := range w.nodes {
		if got := probe80(nd); got != nstest.Open {
			t.Errorf("%s's :80 while node1's answer is published: %s, want open (its own window)", nd.Name, got)
		}
	}
	// fleet status shows who renews, and every node's window.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, raw := fleetStatus(t, w.nodes[1])
		open := 0
		for _, m := range st.Members {
			for _, win := range m.Windows {
				if win.Port == 80 && win.Backend == "nftables" && win.Until.After(time.Now()) {
					open++
				}
			}
		}
		locked := len(st.Certificates) == 1 && st.Certificates[0].LockedBy != nil && st.Certificates[0].LockedBy.Holder == node1.Name
		if open == len(w.nodes) && locked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fleet status never showed node1 renewing and a window on every node:\n%s", raw)
		}
		time.Sleep(200 * time.Millisecond) // nodes report their windows every 2s
	}
	_ = renew.cmd.Process.Kill()
	<-renew.done
	killed := time.Now()
	closed := map[string]time.Duration{}
	for len(closed) < len(w.nodes) {
		for _, nd := range w.nodes {
			if _, ok := closed[nd.Name]; !ok && probe80(nd) == nstest.Dropped {
				closed[nd.Name] = time.Since(killed)
			}
		}
		if time.Since(killed) > windowTimeout+10*time.Second {
			t.Fatalf("windows still open %v after the renewal died (closed: %v)", time.Since(killed).Round(time.Second), closed)
		}
		time.Sleep(200 * time.Millisecond) // polling the nodes' ports
	}
	t.Logf("windows closed after node1's renewal died: %v", closed)
	for _, nd := range w.nodes[1:] {
		if closed[nd.Name] > fleetTTL+5*time.Second {
			t.Errorf("%s closed its window %v after the renewal died, want when the answer's lease (%v) ends", nd.Name, closed[nd.Name], fleetTTL)
		}
	}
	if closed[node1.Name] < windowTimeout-5*time.Second {
		t.Errorf("node1's window closed %v after the renewal died, before its kernel timeout (%v): who closed it?", closed[node1.Name], windowTimeout)
	}
}

// fleetTTL is the lease of a node's membership and answers (fleet.DefaultTTL).
const fleetTTL = 10 * time.Second

// probe80 says whether node's :80 accepts, refuses or drops a connection
// from the test's namespace (from the bridge, as the balancer reaches it).
func probe80(nd *node) string {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(nd.Addr, "80"), 500*time.Millisecond)
	switch {
	case err == nil:
		c.Close()
		return nstest.Open
	case strings.Contains(err.Error(), "refused"):
		return nstest.Refused
	default:
		return nstest.Dropped
	}
}

// holdSelfCheck holds the first issuance mid-way: the site resolves to a
// proxy that passes Detour's probe (its tokens are 32 characters) on to
// the balancer but holds the self-check of the CA's own challenge (43),
// and reports its token on held: the orderer has then created its order
// and every node acknowledged its answer. release points the site at the
// balancer again.
func holdSelfCheck(t *testing.T, w *world) (held <-chan string, release func()) {
	t.Helper()
	tokens := make(chan string, 16)
	lb := &url.URL{Scheme: "http", Host: w.net.LB.Addr}
	proxy := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		token := path.Base(r.URL.Path)
		if len(token) != 43 {
			httputil.NewSingleHostReverseProxy(lb).ServeHTTP(rw, r)
			return
		}
		select {
		case tokens <- token:
		default:
		}
		<-r.Context().Done()
	})}
	ln, err := net.Listen("tcp", w.net.HostAddr+":80")
	if err != nil {
		t.Fatal(err)
	}
	go proxy.Serve(ln)
	t.Cleanup(func() { proxy.Close() })
	w.pointAt(w.net.HostAddr)
	return tokens, func() {
		proxy.Close()
		w.pointAt(w.net.LB.Addr)
	}
}

// fleetStatus runs `detour fleet status --json` on nd.
func fleetStatus(t *testing.T, nd *node) (plan.FleetStatus, string) {
	t.Helper()
	out, errOut, err := nd.run(t, "fleet", "status", "--json")
	if err != nil {
		t.Fatalf("fleet status on %s: %v\n%s", nd.Name, err, errOut)
	}
	var st plan.FleetStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("fleet status --json: %v\n%s", err, out)
	}
	return st, out
}

// waitRenewing waits until nd's fleet status shows the certificate's lock
// held.
func waitRenewing(t *testing.T, w *world, nd *node, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		st, raw := fleetStatus(t, nd)
		if len(st.Certificates) == 1 && st.Certificates[0].LockedBy != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the certificate's lock was never held within %v:\n%s", bound, raw)
		}
		time.Sleep(20 * time.Millisecond) // polling fleet status
	}
}
