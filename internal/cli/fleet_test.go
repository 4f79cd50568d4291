package cli_test

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/plan"
	"github.com/detour-acme/detour/internal/store/etcdstore"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// TestFleetTwoNodes: two nodes of a fleet on one host, sharing etcd. The
// CA validates http-01 only against node2's document root (as if the load
// balancer sent it there). node2's agent issues the certificate; then a
// renewal run by hand on node1 is validated through node2, which presented
// node1's answer; both nodes serve the new certificate, each ran its own
// hook, and fleet status says so.
func TestFleetTwoNodes(t *testing.T) {
	t.Parallel()
	const name = "fleet.detour.test"
	env := newEnv(t, name)
	cluster := etcdtest.New(t, etcdtest.Options{})
	bin := buildDetour(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "fleet.key")
	if err := etcdstore.NewKeyFile(key); err != nil {
		t.Fatal(err)
	}
	var eps []string
	for _, e := range cluster.Endpoints() {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	type node struct{ name, state, root, cfg, marker string }
	nodes := map[string]*node{}
	for _, n := range []string{"node1", "node2"} {
		nd := &node{name: n, state: filepath.Join(dir, n, "state"), root: filepath.Join(dir, n, "www"), cfg: filepath.Join(dir, n, "detour.toml"),
			marker: filepath.Join(dir, n, "deployed")}
		if err := os.MkdirAll(nd.root, 0o755); err != nil {
			t.Fatal(err)
		}
		doc := fmt.Sprintf(`state_dir = %q
email = "t@detour.test"
agree_tos = true
default_ca = "sandbox"

[ca.sandbox]
directory = %q
root_bundle = %q

[store]
kind = "etcd"
endpoints = [%s]
encryption_key_file = %q
fleet = "web"
node = %q

[path.web]
kind = "webroot"
root = %q

[[certificate]]
name = "fleet"
domains = [%q]
paths = ["web"]
profile = "shortlived"
deploy_hook = "echo $DETOUR_NAME >> %s"
`, nd.state, env.CA.DirectoryURL(), env.RootsFile, strings.Join(eps, ", "), key, n, nd.root, name, nd.marker)
		if err := os.WriteFile(nd.cfg, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		nodes[n] = nd
	}
	// The CA (and the self-check) reach node2's document root only.
	ln, err := net.Listen("tcp", env.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(nodes["node2"].root))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	agent := startAgent(t, bin, "--config", nodes["node2"].cfg, "run")
	first := waitLive(t, nodes["node2"].state, "fleet", 60*time.Second, agent, nil)

	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node2's agent:\n%s", agent.stderr)
		}
	})
	r := mustRun(t, "--config", nodes["node1"].cfg, "renew", "--force", "fleet")
	wantIn(t, "renew on node1", r.stdout, "fleet: version 2")
	renewed := checkLive(t, nodes["node1"].state, "fleet")
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("node1 serves the first certificate after its renewal")
	}
	waitLive(t, nodes["node2"].state, "fleet", 30*time.Second, agent, func(serial string) bool { return serial == renewed.SerialNumber.Text(16) })
	// live/ switches before the hook runs and the report is written: wait
	// for node2's report of version 2.
	for deadline := time.Now().Add(30 * time.Second); ; {
		var st plan.FleetStatus
		r := mustRun(t, "--config", nodes["node1"].cfg, "fleet", "status", "--json")
		if err := json.Unmarshal([]byte(r.stdout), &st); err == nil && len(st.Certificates) == 1 && st.Certificates[0].Nodes["node2"].Version == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node2 never reported version 2:\n%s", r.stdout)
		}
		time.Sleep(100 * time.Millisecond) // polling another process's report
	}
	for n, want := range map[string]int{"node1": 1, "node2": 2} {
		b, _ := os.ReadFile(nodes[n].marker)
		if got := strings.Count(string(b), "fleet\n"); got != want {
			t.Errorf("%s ran its deploy hook %d times, want %d", n, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(nodes["node1"].root, ".well-known")); err == nil {
		if entries, _ := os.ReadDir(filepath.Join(nodes["node1"].root, ".well-known", "acme-challenge")); len(entries) > 0 {
			t.Errorf("node1's answers were left behind: %v", entries)
		}
	}

	var st plan.FleetStatus
	r = mustRun(t, "--config", nodes["node1"].cfg, "fleet", "status", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("fleet status --json: %v\n%s", err, r.stdout)
	}
	if len(st.Members) != 2 || !st.Members[1].Alive || st.Members[1].Name != "node2" || len(st.Certificates) != 1 {
		t.Fatalf("fleet status = %+v", st)
	}
	c := st.Certificates[0]
	if c.Version != 2 || c.Nodes["node1"].Version != 2 || c.Nodes["node2"].Version != 2 {
		t.Errorf("fleet status: certificate %+v, want version 2 served by both nodes", c)
	}
	r = mustRun(t, "--config", nodes["node1"].cfg, "fleet", "status")
	wantIn(t, "fleet status", r.stdout, "node2  alive", "fleet")
	stopProcess(t, agent)
}

// waitLive polls state's live certificate of name until it loads and ok
// (its serial in hex; nil: any) holds.
func waitLive(t *testing.T, state, name string, timeout time.Duration, p *agentProc, ok func(serial string) bool) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		leaf, err := loadLive(state, name)
		if err == nil && (ok == nil || ok(leaf.SerialNumber.Text(16))) {
			return leaf
		}
		select {
		case err := <-p.done:
			t.Fatalf("detour run exited (%v)\n--- stderr:\n%s", err, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, live/%s in %s: %v\n--- stderr:\n%s", timeout, name, state, err, p.stderr)
		}
		time.Sleep(50 * time.Millisecond) // polling another process's files
	}
}

// TestFleetRunWaitsForEtcd: `detour run` started while the fleet's etcd is
// down says so, naming the endpoints, and keeps trying; once etcd is back
// it joins the fleet and starts. A command run by hand fails at once with
// the same explanation.
func TestFleetRunWaitsForEtcd(t *testing.T) {
	t.Parallel()
	cluster := etcdtest.New(t, etcdtest.Options{Members: 1})
	bin := buildDetour(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "fleet.key")
	if err := etcdstore.NewKeyFile(key); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "detour.toml")
	doc := fmt.Sprintf(`state_dir = %q

[store]
kind = "etcd"
endpoints = [%q]
encryption_key_file = %q
fleet = "web"
node = "node1"
`, filepath.Join(dir, "state"), cluster.Endpoints()[0], key)
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cluster.StopAll()
	agent := startAgent(t, bin, "--config", cfg, "run", "--metrics-listen", "127.0.0.1:0")
	agent.waitLog(t, "cannot reach the fleet's etcd; trying again", 30*time.Second)
	wantIn(t, "run with etcd down", agent.stderr.String(), cluster.Endpoints()[0], "check the endpoints' addresses and ports")
	r := run(t, "--config", cfg, "fleet", "status")
	if r.code == 0 || !strings.Contains(r.stderr, "etcd did not answer at "+cluster.Endpoints()[0]) {
		t.Errorf("fleet status with etcd down: exit %d\n%s", r.code, r.stderr)
	}
	cluster.RestartAll()
	agent.waitLog(t, "joined the fleet", 60*time.Second)
	agent.waitLog(t, "agent started", 10*time.Second)

	// The balancer's health check: ready while a member, not while etcd
	// is away (the node presents no answers then).
	m := regexp.MustCompile(`msg="serving metrics" listen=(\S+)`).FindStringSubmatch(agent.stderr.String())
	if m == nil {
		t.Fatalf("no metrics address logged:\n%s", agent.stderr)
	}
	ready := func() int {
		resp, err := http.Get("http://" + m[1] + "/fleet/ready")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := ready(); got != http.StatusOK {
		t.Errorf("/fleet/ready of a member: %d", got)
	}
	cluster.StopAll()
	deadline := time.Now().Add(30 * time.Second)
	for ready() != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("/fleet/ready still 200 30s after etcd stopped")
		}
		time.Sleep(100 * time.Millisecond) // the membership lease ends on its own time
	}
	stopProcess(t, agent)
}
