package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/store/etcdstore"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
	"github.com/detour-acme/detour/internal/testenv/fleetnet"
)

// site is the name the fleet's certificate is for; Pebble resolves it to
// the balancer.
const site = "www.detour.test"

// certName is the certificate's name in every node's configuration.
const certName = "www"

// lockTTL is the fleet's lock TTL in these tests ([store] lock_ttl): how
// long a dead orderer holds the renewal up.
const lockTTL = 5 * time.Second

// world is one fleet: the network, the balancer, etcd, the CA and the
// nodes, each with its nginx serving :80 (the webroot) and :443 (the
// certificate Detour deploys).
type world struct {
	net   *fleetnet.Net
	lb    *fleetnet.LB
	etcd  *etcdtest.Cluster
	ca    *sandbox.Env
	caLog *syncBuffer    // Pebble's own log (debug level)
	pool  *x509.CertPool // the CA's issuing roots: what clients trust
	nodes []*node
}

// node is one node of the world and what runs on it.
type node struct {
	*fleetnet.Node
	w                    *world
	dir, state, www, cfg string
	certFile, keyFile    string // what nginx serves on :443: Detour's outputs
	agent                *proc  // `detour run`, nil when not started
	agentLogs            []*syncBuffer
	hookFile             string // the deploy hook appends the name here
}

// worldOptions vary newWorld.
type worldOptions struct {
	// pathExtra is added to every node's [path.web] table.
	pathExtra string
	// nftables, when set, is loaded in every node's namespace before
	// nginx starts (the node's own firewall).
	nftables string
	// etcdProcesses runs each etcd member in a process of its own, so
	// that the test can SIGKILL one.
	etcdProcesses bool
	// sidePort makes the path a side-port (nginx forwards the challenge
	// requests to it on 127.0.0.1:8402) instead of a webroot.
	sidePort bool
}

func newWorld(t *testing.T) *world { return newWorldWith(t, worldOptions{}) }

func newWorldWith(t *testing.T, opts worldOptions) *world {
	t.Helper()
	fn := fleetnet.New(t, fleetnet.Options{Nodes: 3})
	w := &world{net: fn, caLog: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(w.caLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The listeners on :80 and :443 only fix the ports Pebble validates
	// on; the name resolves to the balancer.
	env, err := sandbox.Start(ctx, sandbox.EnvOptions{Logger: log,
		HTTPAddr: fn.HostAddr + ":80", TLSAddr: fn.HostAddr + ":443", DNSAddr: fn.HostAddr + ":0",
		CA: sandbox.CAOptions{Addr: fn.HostAddr + ":0", ManagementAddr: fn.HostAddr + ":0"}})
	if err != nil {
		t.Fatalf("starting the CA: %v", err)
	}
	t.Cleanup(func() { env.Close() })
	env.HTTPListener.Close()
	env.TLSListener.Close()
	w.ca = env
	w.pointAt(fn.LB.Addr)
	roots, err := env.CA.IssuerRootsPEM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.pool = x509.NewCertPool()
	w.pool.AppendCertsFromPEM(roots)

	w.etcd = etcdtest.New(t, etcdtest.Options{Host: fn.HostAddr, Processes: opts.etcdProcesses})
	shared := t.TempDir()
	key := filepath.Join(shared, "fleet.key")
	if err := etcdstore.NewKeyFile(key); err != nil {
		t.Fatal(err)
	}
	caRoots := filepath.Join(shared, "ca-roots.pem")
	if err := env.CA.WriteTLSRoots(caRoots); err != nil {
		t.Fatal(err)
	}
	var eps []string
	for _, e := range w.etcd.Endpoints() {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	for _, fnode := range fn.Nodes {
		dir := t.TempDir()
		nd := &node{Node: fnode, w: w, dir: dir, state: filepath.Join(dir, "state"), www: filepath.Join(dir, "www"),
			cfg: filepath.Join(dir, "detour.toml"), certFile: filepath.Join(dir, "tls", "fullchain.pem"),
			keyFile: filepath.Join(dir, "tls", "privkey.pem"), hookFile: filepath.Join(dir, "deployed")}
		for _, d := range []string{nd.www, filepath.Dir(nd.certFile)} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if opts.nftables != "" {
			rules := filepath.Join(dir, "rules.nft")
			if err := os.WriteFile(rules, []byte(opts.nftables), 0o644); err != nil {
				t.Fatal(err)
			}
			fnode.NS.Run(t, "nft", "-f", rules)
		}
		// Until Detour deploys, nginx serves a placeholder.
		placeholder(t, nd.certFile, nd.keyFile)
		srv := fnode.StartNginx(t, fleetnet.NginxOptions{CertFile: nd.certFile, KeyFile: nd.keyFile,
			Extra: challengeLocation(opts, nd.www)})
		doc := fmt.Sprintf(`state_dir = %q
email = "ops@detour.test"
agree_tos = true
default_ca = "sandbox"

[ca.sandbox]
directory = %q
root_bundle = %q

[store]
kind = "etcd"
endpoints = [%s]
encryption_key_file = %q
fleet = "e2e"
node = %q
lock_ttl = %q

[path.web]
%s
%s

[[certificate]]
name = %q
domains = [%q]
paths = ["web"]
profile = "shortlived"
output = [{ path = %q, format = "fullchain" }, { path = %q, format = "privkey" }]
reload = [{ server = "nginx", pid_file = %q }]
deploy_hook = "echo $DETOUR_NAME >> %s"
`, nd.state, env.CA.DirectoryURL(), caRoots, strings.Join(eps, ", "), key, fnode.Name, lockTTL.String(),
			pathTable(opts, nd.www), opts.pathExtra, certName, site, nd.certFile, nd.keyFile, filepath.Join(srv.Dir, "nginx.pid"), nd.hookFile)
		if err := os.WriteFile(nd.cfg, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		w.nodes = append(w.nodes, nd)
	}
	w.lb = fn.StartHAProxy(t, fleetnet.LBOptions{})
	return w
}

// sidePortAddr is where a side-port path listens on each node.
const sidePortAddr = "127.0.0.1:8402"

// challengeLocation is the nginx location that answers http-01 on a node.
func challengeLocation(opts worldOptions, www string) string {
	if opts.sidePort {
		// As `detour snippet http --server nginx` prints it.
		return "location ^~ /.well-known/acme-challenge/ { proxy_pass http://" + sidePortAddr + "; proxy_set_header Host $host; proxy_set_header X-Forwarded-Host $host; }"
	}
	return fmt.Sprintf("location /.well-known/acme-challenge/ { root %s; default_type text/plain; }", www)
}

// pathTable is the body of every node's [path.web].
func pathTable(opts worldOptions, www string) string {
	if opts.sidePort {
		return fmt.Sprintf("kind = \"side-port\"\nlisten = %q", sidePortAddr)
	}
	return fmt.Sprintf("kind = \"webroot\"\nroot = %q", www)
}

// pointAt makes the site resolve to addr, for the CA and for the nodes'
// self-checks (they resolve through the CA's DNS: --resolver).
func (w *world) pointAt(addr string) {
	w.ca.DNS.SetAddrs(site, netip.MustParseAddr(addr))
}

// pebbleOrders counts the orders Pebble created, from its own log.
func (w *world) pebbleOrders() int {
	return strings.Count(w.caLog.String(), "Added order")
}

// placeholder writes a self-signed certificate for site.
func placeholder(t *testing.T, certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "placeholder"}, DNSNames: []string{site},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// args are the arguments every detour command on nd starts with.
func (nd *node) args(more ...string) []string {
	return append([]string{"--config", nd.cfg, "--resolver", nd.w.ca.DNSAddr}, more...)
}

// run runs a detour command on nd and returns its output.
func (nd *node) run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := nd.Command(detourBin, nd.args(args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { <-ctx.Done(); _ = cmd.Process.Kill() }()
	err = cmd.Wait()
	return o.String(), e.String(), err
}

// start starts `detour run` on nd; it is stopped when the test ends.
func (nd *node) start(t *testing.T) {
	t.Helper()
	log := &syncBuffer{}
	cmd := nd.Command(detourBin, nd.args("run")...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	nd.agent = p
	nd.agentLogs = append(nd.agentLogs, log)
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s's agent (%s):\n%s", nd.Name, p.err, log.String())
		}
	})
}

// startCmd starts a detour command on nd and returns at once; it is
// killed when the test ends.
func (nd *node) startCmd(t *testing.T, args ...string) *proc {
	t.Helper()
	log := &syncBuffer{}
	cmd := nd.Command(detourBin, nd.args(args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("detour %s on %s (%v):\n%s", strings.Join(args, " "), nd.Name, p.err, log.String())
		}
	})
	return p
}

// kill kills nd's agent with SIGKILL and waits until it is gone.
func (nd *node) kill(t *testing.T) {
	t.Helper()
	_ = nd.agent.cmd.Process.Signal(syscall.SIGKILL)
	<-nd.agent.done
}

// log is everything nd's agents wrote.
func (nd *node) log() string {
	var b strings.Builder
	for _, l := range nd.agentLogs {
		b.WriteString(l.String())
	}
	return b.String()
}

// served returns the chain nd's nginx serves on :443 (dialled directly,
// not through the balancer).
func (nd *node) served() ([]*x509.Certificate, error) {
	return dialTLS(net.JoinHostPort(nd.Addr, "443"))
}

// dialTLS returns the chain addr serves for site.
func dialTLS(addr string) ([]*x509.Certificate, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: site, InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates, nil
}

// waitServed waits until each of nodes serves a certificate ok accepts,
// and returns how long the slowest took.
func (w *world) waitServed(t *testing.T, nodes []*node, bound time.Duration, what string, ok func([]*x509.Certificate) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(bound)
	pending := map[*node]string{}
	for _, nd := range nodes {
		pending[nd] = "nothing yet"
	}
	for len(pending) > 0 {
		for nd := range pending {
			chain, err := nd.served()
			switch {
			case err != nil:
				pending[nd] = err.Error()
			case ok(chain):
				delete(pending, nd)
			default:
				pending[nd] = fmt.Sprintf("serial %s from %q", chain[0].SerialNumber.Text(16), chain[0].Issuer.CommonName)
			}
		}
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for nd, last := range pending {
				t.Errorf("%s does not serve %s after %v (last: %s)", nd.Name, what, bound, last)
			}
			t.FailNow()
		}
		time.Sleep(50 * time.Millisecond) // polling the servers: a deploy signals nobody outside the node
	}
	return time.Since(start)
}

// issued accepts a chain the CA issued for site.
func (w *world) issued(chain []*x509.Certificate) bool {
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: w.pool, Intermediates: inter, DNSName: site})
	return err == nil
}

// serial accepts the chain whose leaf has serial s only.
func serial(s *big.Int) func([]*x509.Certificate) bool {
	return func(chain []*x509.Certificate) bool { return chain[0].SerialNumber.Cmp(s) == 0 }
}

// proc is a process a test started.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// stop ends the process: SIGTERM, then SIGKILL after 15 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// syncBuffer is a bytes.Buffer safe for a process's output and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
