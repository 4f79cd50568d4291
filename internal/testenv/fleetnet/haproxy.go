package fleetnet

import (
	"cmp"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall/nstest"
	"github.com/detour-acme/detour/internal/testenv"
)

// LB is the balancer's namespace and, once StartHAProxy ran, the HAProxy
// in it.
type LB struct {
	Addr    string          // IPv4 address on the bridge, no port
	NS      *nstest.NS      // the balancer's namespace
	HAProxy *testenv.Server // nil before StartHAProxy

	net  *Net
	sock string // HAProxy's admin socket
}

// LBOptions configure StartHAProxy.
type LBOptions struct {
	// HealthCheck, when positive, has HAProxy check each server (a TCP
	// connect) at this interval, taking it out after one failure and
	// back after one success. Zero turns checks off: a node whose nginx
	// is gone keeps its turn, and the connections sent to it fail, until
	// the test tells the balancer (Down, Only).
	HealthCheck time.Duration
}

// Ports the balancer forwards, each to the same port of every node.
var lbPorts = []int{80, 443}

// haproxyConf balances TCP connections to :80 and :443 over the nodes,
// round-robin. A connection to a server that refuses is not retried nor
// sent elsewhere: it fails, as the CA would see it fail.
const haproxyConf = `global
    maxconn 1024
    stats socket {{.Sock}} mode 600 level admin
    log stderr format raw local0 notice
defaults
    mode tcp
    log global
    balance roundrobin
    retries 0
    timeout connect 1s
    timeout client 30s
    timeout server 30s
{{range $p := .Ports}}
frontend port{{$p}}
    bind :{{$p}}
    default_backend port{{$p}}
backend port{{$p}}
{{- range $.Nodes}}
    server {{.Name}} {{.Addr}}:{{$p}}{{$.Check}}
{{- end}}
{{end}}`

// StartHAProxy starts Debian's HAProxy in the balancer's namespace: mode
// tcp, round-robin on :80 and :443 over every node's :80 and :443, with
// an admin socket through which Only, All, Down and Up steer it. It is
// stopped when the test ends.
func (n *Net) StartHAProxy(t testing.TB, opts LBOptions) *LB {
	t.Helper()
	lb := n.LB
	dir := testenv.WorldReadableDir(t) // short: the socket's path has a limit
	lb.sock = filepath.Join(dir, "admin.sock")
	check := ""
	if opts.HealthCheck > 0 {
		check = fmt.Sprintf(" check inter %dms fall 1 rise 1", max(opts.HealthCheck.Milliseconds(), 1))
	}
	data := map[string]any{"Sock": lb.sock, "Ports": lbPorts, "Nodes": n.Nodes, "Check": check}
	var wait []string
	for _, p := range lbPorts {
		wait = append(wait, hostPort(lb.Addr, p))
	}
	lb.NS.Do(t, func(t testing.TB) {
		lb.HAProxy = testenv.StartHAProxy(t, dir, haproxyConf, data, wait...)
	})
	lb.settle(t)
	return lb
}

// settle waits until HAProxy has served the connection StartHAProxy's
// readiness check made to each frontend and none is left. One still in
// flight would take a server's turn from the test's first connections,
// and a test counting turns would see one node twice in a row.
func (lb *LB) settle(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		stats := lb.stat(t)
		var busy []string
		for _, p := range lbPorts {
			fe := stats[fmt.Sprintf("port%d/FRONTEND", p)]
			if fe["stot"] == "0" || fe["scur"] != "0" {
				busy = append(busy, fmt.Sprintf("port%d: %s sessions, %s now", p, fe["stot"], fe["scur"]))
			}
		}
		if len(busy) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy did not serve its readiness checks: %s", strings.Join(busy, "; "))
		}
		time.Sleep(10 * time.Millisecond) // HAProxy has no event for this
	}
}

// stat returns HAProxy's `show stat` (CSV), a row per "proxy/server"
// (server FRONTEND, BACKEND for the proxy's totals), keyed by column.
func (lb *LB) stat(t testing.TB) map[string]map[string]string {
	t.Helper()
	out := lb.Admin(t, "show stat")
	header, body, _ := strings.Cut(out, "\n")
	cols := strings.Split(strings.TrimPrefix(header, "# "), ",")
	rows := map[string]map[string]string{}
	for line := range strings.SplitSeq(body, "\n") {
		f := strings.Split(line, ",")
		if len(f) < len(cols) {
			continue
		}
		row := map[string]string{}
		for i, c := range cols {
			row[c] = f[i]
		}
		rows[row["pxname"]+"/"+row["svname"]] = row
	}
	if len(rows) == 0 {
		t.Fatalf("haproxy's show stat has no rows:\n%s", out)
	}
	return rows
}

// Only takes every other node out of rotation (maintenance): every new
// connection goes to node. Established connections are left alone.
func (lb *LB) Only(t testing.TB, node *Node) {
	t.Helper()
	want := map[string]bool{}
	for _, nd := range lb.net.Nodes {
		want[nd.Name] = nd == node
	}
	lb.set(t, want)
}

// All puts every node back in rotation: round-robin over all of them.
func (lb *LB) All(t testing.TB) {
	t.Helper()
	want := map[string]bool{}
	for _, nd := range lb.net.Nodes {
		want[nd.Name] = true
	}
	lb.set(t, want)
}

// Down takes node out of rotation (maintenance), the others unchanged.
func (lb *LB) Down(t testing.TB, node *Node) {
	t.Helper()
	lb.set(t, map[string]bool{node.Name: false})
}

// Up puts node back in rotation, the others unchanged. With health
// checks on, HAProxy uses it again once a check passed.
func (lb *LB) Up(t testing.TB, node *Node) {
	t.Helper()
	lb.set(t, map[string]bool{node.Name: true})
}

// set puts each named server of every backend in rotation (true) or in
// maintenance (false) and returns once `show servers state` says so.
func (lb *LB) set(t testing.TB, want map[string]bool) {
	t.Helper()
	if lb.HAProxy == nil {
		t.Fatal("fleetnet: the balancer is not running: call StartHAProxy first")
	}
	var cmds []string
	for _, p := range lbPorts {
		for name, in := range want {
			state := "maint"
			if in {
				state = "ready"
			}
			cmds = append(cmds, fmt.Sprintf("set server port%d/%s state %s", p, name, state))
		}
	}
	if out := strings.TrimSpace(lb.Admin(t, strings.Join(cmds, ";"))); out != "" {
		t.Fatalf("haproxy refused %q: %s", cmds, out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		states := lb.ServerStates(t)
		var wrong []string
		for _, p := range lbPorts {
			for name, in := range want {
				key := fmt.Sprintf("port%d/%s", p, name)
				st, ok := states[key]
				if !ok {
					t.Fatalf("haproxy has no server %s:\n%s", key, lb.Admin(t, "show servers state"))
				}
				if st.Maint() == in {
					wrong = append(wrong, fmt.Sprintf("%s admin state %#x", key, st.Admin))
				}
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy did not apply %q: %s", cmds, strings.Join(wrong, ", "))
		}
		time.Sleep(20 * time.Millisecond) // the CLI applies at once; this is a safety net
	}
}

// srvAdminForcedMaint is SRV_ADMF_FMAINT, the bit of srv_admin_state a
// server has in forced maintenance (set server ... state maint).
const srvAdminForcedMaint = 0x01

// ServerState is a server's state as HAProxy's `show servers state` gives
// it.
type ServerState struct {
	// Op is srv_op_state: 0 stopped (a health check failed), 1
	// starting, 2 running, 3 stopping.
	Op int
	// Admin is srv_admin_state, a set of bits: 0x01 forced maintenance
	// (Down, Only), others for maintenance inherited or from DNS, and
	// draining.
	Admin int
}

// Maint reports whether the server is in forced maintenance: out of
// rotation by the test's word.
func (s ServerState) Maint() bool { return s.Admin&srvAdminForcedMaint != 0 }

// ServerStates returns the state of every server, keyed "backend/server"
// (the backends are port80 and port443, the servers the nodes' names).
func (lb *LB) ServerStates(t testing.TB) map[string]ServerState {
	t.Helper()
	out := lb.Admin(t, "show servers state")
	var cols []string
	states := map[string]ServerState{}
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case f[0] == "#":
			cols = f[1:]
		case cols != nil && len(f) >= len(cols):
			row := map[string]string{}
			for i, c := range cols {
				row[c] = f[i]
			}
			op, err1 := strconv.Atoi(row["srv_op_state"])
			admin, err2 := strconv.Atoi(row["srv_admin_state"])
			if err1 != nil || err2 != nil {
				t.Fatalf("reading haproxy's server states: %v\n%s", cmp.Or(err1, err2), out)
			}
			states[row["be_name"]+"/"+row["srv_name"]] = ServerState{Op: op, Admin: admin}
		}
	}
	if cols == nil {
		t.Fatalf("haproxy's show servers state has no header:\n%s", out)
	}
	return states
}

// Admin sends one command (or several separated by ";") to HAProxy's
// admin socket and returns its answer.
func (lb *LB) Admin(t testing.TB, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", lb.sock, 5*time.Second)
	if err != nil {
		t.Fatalf("connecting to haproxy's admin socket: %v\n%s", err, lb.HAProxy.Output())
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		t.Fatalf("sending %q to haproxy: %v", cmd, err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading haproxy's answer to %q: %v", cmd, err)
	}
	return string(b)
}
