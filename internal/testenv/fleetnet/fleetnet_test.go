package fleetnet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall/nstest"
	"golang.org/x/sys/unix"
)

// siteName is the name the nodes' certificate is for; requests use it as
// Host and SNI, and Load dials the balancer whatever the host.
const siteName = "fleet.test"

// TestFleet builds one three-node network and proves each capability
// against real nginx and HAProxy, one after the other.
func TestFleet(t *testing.T) {
	fn := New(t, Options{})
	if len(fn.Nodes) != 3 {
		t.Fatalf("%d nodes, want 3 by default", len(fn.Nodes))
	}
	node1, node2, node3 := fn.Nodes[0], fn.Nodes[1], fn.Nodes[2]
	certFile, keyFile, pool := selfSigned(t, siteName)
	for _, nd := range fn.Nodes {
		nd.StartNginx(t, NginxOptions{
			CertFile: certFile, KeyFile: keyFile,
			Extra: `location /extra/ { default_type text/plain; return 200 "extra\n"; }`,
		})
	}
	lb := fn.StartHAProxy(t, LBOptions{})
	httpURL, httpsURL := "http://"+siteName+"/", "https://"+siteName+"/"

	t.Run("RoundRobin", func(t *testing.T) {
		// Sequential connections take turns: each node exactly as often.
		for _, url := range []string{httpURL, httpsURL} {
			if got, want := countNodes(t, fn, pool, url, 9), map[string]int{"node1": 3, "node2": 3, "node3": 3}; !equal(got, want) {
				t.Errorf("%s: nodes answered %v, want %v", url, got, want)
			}
		}
	})

	t.Run("Steering", func(t *testing.T) {
		lb.Only(t, node2)
		for _, url := range []string{httpURL, httpsURL} {
			if got, want := countNodes(t, fn, pool, url, 6), map[string]int{"node2": 6}; !equal(got, want) {
				t.Errorf("Only(node2), %s: nodes answered %v, want %v", url, got, want)
			}
		}
		if node, body := get(t, fn, pool, httpURL+"extra/"); node != "node2" || body != "extra\n" {
			t.Errorf("the extra location answered %q from %q, want \"extra\\n\" from node2", body, node)
		}
		lb.All(t)
		if got, want := countNodes(t, fn, pool, httpURL, 6), map[string]int{"node1": 2, "node2": 2, "node3": 2}; !equal(got, want) {
			t.Errorf("All(): nodes answered %v, want %v", got, want)
		}
		lb.Down(t, node1)
		if got, want := countNodes(t, fn, pool, httpURL, 6), map[string]int{"node2": 3, "node3": 3}; !equal(got, want) {
			t.Errorf("Down(node1): nodes answered %v, want %v", got, want)
		}
		lb.Up(t, node1)
		if got, want := countNodes(t, fn, pool, httpURL, 6), map[string]int{"node1": 2, "node2": 2, "node3": 2}; !equal(got, want) {
			t.Errorf("Up(node1): nodes answered %v, want %v", got, want)
		}
	})

	t.Run("HostAddr", func(t *testing.T) {
		// A service of the test's own namespace, on HostAddr.
		ln, err := net.Listen("tcp", net.JoinHostPort(fn.HostAddr, "0"))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "host saw %s\n", r.RemoteAddr)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		if got := node2.NS.Probe(t, ln.Addr().String(), 2*time.Second); got != nstest.Open {
			t.Errorf("dialling %s from node2's namespace: %s, want %s", ln.Addr(), got, nstest.Open)
		}
		// A process Command starts runs in the node's namespace too: the
		// service sees the node's address.
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		script := fmt.Sprintf(`exec 3<>/dev/tcp/%s/%s && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3`, fn.HostAddr, port)
		out, err := node2.Command("bash", "-c", script).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "host saw "+node2.Addr+":") {
			t.Errorf("a request from node2's Command: %v\n%s\nwant the host to see %s", err, out, node2.Addr)
		}
	})

	t.Run("Partition", func(t *testing.T) {
		addr := net.JoinHostPort(node3.Addr, "80")
		if got := dialRoot(addr, 2*time.Second); got != nstest.Open {
			t.Fatalf("before Partition, %s from the test's namespace: %s, want %s", addr, got, nstest.Open)
		}
		fn.Partition(t, node3)
		if got := dialRoot(addr, 500*time.Millisecond); got != nstest.Dropped {
			t.Errorf("partitioned, %s from the test's namespace: %s, want %s", addr, got, nstest.Dropped)
		}
		if got := node3.NS.Probe(t, net.JoinHostPort(node1.Addr, "80"), 500*time.Millisecond); got == nstest.Open {
			t.Errorf("partitioned, node3 reaches node1: %s", got)
		}
		fn.Heal(t, node3)
		if got := dialRoot(addr, 2*time.Second); got != nstest.Open {
			t.Errorf("healed, %s from the test's namespace: %s, want %s", addr, got, nstest.Open)
		}
	})

	t.Run("LoadAndReload", func(t *testing.T) {
		pid := node1.Nginx.MasterPID()
		loads := []*Load{
			fn.Load(t.Context(), httpURL, LoadOptions{}),
			fn.Load(t.Context(), httpsURL, LoadOptions{RootCAs: pool}),
		}
		time.Sleep(300 * time.Millisecond)
		node1.ReloadNginx(t)
		time.Sleep(300 * time.Millisecond)
		for i, l := range loads {
			s := l.Stop()
			t.Logf("%s: %v", []string{"http", "https"}[i], s)
			if s.Failures != 0 || s.Requests < 30 {
				t.Errorf("all nodes up: %v, want no failures and at least 30 requests", s)
			}
			for _, nd := range fn.Nodes {
				if s.ByNode[nd.Name] == 0 {
					t.Errorf("%s never answered: %v", nd.Name, s)
				}
			}
		}
		if got := node1.Nginx.MasterPID(); got != pid || !node1.Nginx.Alive() {
			t.Errorf("node1's nginx master is %d (alive %v) after ReloadNginx, want %d still running", got, node1.Nginx.Alive(), pid)
		}
	})

	t.Run("StoppedNode", func(t *testing.T) {
		node3.StopNginx(t)
		l := fn.Load(t.Context(), httpURL, LoadOptions{})
		time.Sleep(500 * time.Millisecond)
		s := l.Stop()
		t.Logf("node3 stopped, the balancer not told: %v", s)
		if s.Failures == 0 || len(s.Errors) == 0 || s.ByNode["node3"] != 0 || s.ByNode["node1"] == 0 {
			t.Errorf("node3 stopped: %v, want failures (with errors) and answers from node1 and node2 only", s)
		}
		lb.Down(t, node3)
		l = fn.Load(t.Context(), httpURL, LoadOptions{})
		time.Sleep(300 * time.Millisecond)
		if s := l.Stop(); s.Failures != 0 || s.Requests == 0 {
			t.Errorf("node3 down at the balancer: %v, want no failures", s)
		}
	})
}

// TestParallelNets runs two Nets side by side: each gets its own subnet
// and link, neither reaches the other's, and nothing is left after.
func TestParallelNets(t *testing.T) {
	const n = 2
	type made struct{ subnet, link string }
	var (
		mu     sync.Mutex
		nets   []made
		nsAll  []string
		lbs    [n]string
		ready  sync.WaitGroup // every Net is up
		probed sync.WaitGroup // every Net probed the others
	)
	ready.Add(n)
	probed.Add(n)
	// With -parallel below n the subtests run one after the other: they
	// cannot meet, so the cross probes are left out.
	together := flag.Lookup("test.parallel").Value.(flag.Getter).Get().(int) >= n
	t.Run("group", func(t *testing.T) {
		for i := range n {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				arrive, leave := sync.OnceFunc(ready.Done), sync.OnceFunc(probed.Done)
				defer arrive() // also when the test fails early:
				defer leave()  // the other must not wait forever
				fn := New(t, Options{Nodes: 2})
				mu.Lock()
				nets = append(nets, made{fn.Subnet, fn.HostLink})
				nsAll = append(nsAll, fn.LAN.Name, fn.LB.NS.Name, fn.Nodes[0].NS.Name, fn.Nodes[1].NS.Name)
				mu.Unlock()
				for _, nd := range fn.Nodes {
					nd.StartNginx(t, NginxOptions{})
				}
				fn.StartHAProxy(t, LBOptions{})
				if got, want := countNodes(t, fn, nil, "http://"+fn.LB.Addr+"/", 4), map[string]int{"node1": 2, "node2": 2}; !equal(got, want) {
					t.Errorf("nodes answered %v, want %v", got, want)
				}
				if !together {
					return
				}
				lbs[i] = fn.LB.Addr
				arrive()
				ready.Wait()
				for j, a := range lbs {
					if j == i || a == "" {
						continue
					}
					if got := fn.Nodes[0].NS.Probe(t, net.JoinHostPort(a, "80"), 300*time.Millisecond); got == nstest.Open {
						t.Errorf("node1 of %s reaches the other Net's balancer %s", fn.Subnet, a)
					}
				}
				leave()
				probed.Wait() // keep this Net up while the other probes it
			})
		}
	})
	if len(nets) != n {
		t.Fatalf("%d Nets made, want %d", len(nets), n)
	}
	seen := map[string]bool{}
	for _, m := range nets {
		if seen[m.subnet] || seen[m.link] {
			t.Errorf("two Nets share %s or %s: %v", m.subnet, m.link, nets)
		}
		seen[m.subnet], seen[m.link] = true, true
		if out, err := exec.Command("ip", "link", "show", m.link).CombinedOutput(); err == nil {
			t.Errorf("%s is left after its test:\n%s", m.link, out)
		}
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	for _, ns := range nsAll {
		if strings.Contains(string(out), ns) {
			t.Errorf("namespace %s is left after its test:\n%s", ns, out)
		}
	}
}

// TestHealthCheck checks LBOptions.HealthCheck: HAProxy takes a node
// whose nginx stopped out of rotation by itself, and back once it runs.
func TestHealthCheck(t *testing.T) {
	fn := New(t, Options{Nodes: 2})
	node1, node2 := fn.Nodes[0], fn.Nodes[1]
	for _, nd := range fn.Nodes {
		nd.StartNginx(t, NginxOptions{})
	}
	lb := fn.StartHAProxy(t, LBOptions{HealthCheck: 50 * time.Millisecond})
	url := "http://" + fn.LB.Addr + "/"
	node2.StopNginx(t)
	waitOp(t, lb, "port80/node2", 0)
	l := fn.Load(t.Context(), url, LoadOptions{})
	time.Sleep(300 * time.Millisecond)
	if s := l.Stop(); s.Failures != 0 || s.ByNode[node1.Name] == 0 || s.ByNode[node2.Name] != 0 {
		t.Errorf("node2 stopped, checked down: %v, want no failures and node1 alone", s)
	}
	node2.StartNginx(t, NginxOptions{})
	waitOp(t, lb, "port80/node2", 2)
	if got, want := countNodes(t, fn, nil, url, 4), map[string]int{"node1": 2, "node2": 2}; !equal(got, want) {
		t.Errorf("node2 back: nodes answered %v, want %v", got, want)
	}
}

// waitOp waits until HAProxy's server has the operational state op.
func waitOp(t *testing.T, lb *LB, server string, op int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := lb.ServerStates(t)[server]
		if st.Op == op {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is in state %+v, want op state %d", server, st, op)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNginxRefusals checks that a configuration nginx refuses fails
// StartNginx and ReloadNginx with nginx's word, and that a refused reload
// leaves nginx serving the old configuration.
func TestNginxRefusals(t *testing.T) {
	fn := New(t, Options{Nodes: 1})
	nd := fn.Nodes[0]
	rec := &fatalTB{TB: t}
	var wg sync.WaitGroup
	wg.Go(func() { nd.StartNginx(rec, NginxOptions{Extra: "no_such_directive on;"}) })
	wg.Wait()
	if !strings.Contains(rec.msg, "no_such_directive") {
		t.Errorf("StartNginx with a bad Extra: %q, want nginx's complaint", rec.msg)
	}

	nd.StartNginx(t, NginxOptions{})
	good, err := os.ReadFile(nd.Nginx.Conf)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(good), "server_name _;", "server_name _; no_such_directive on;", 1)
	if err := os.WriteFile(nd.Nginx.Conf, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	rec = &fatalTB{TB: t}
	wg.Go(func() { nd.ReloadNginx(rec) })
	wg.Wait()
	if !strings.Contains(rec.msg, "refused its configuration") || !strings.Contains(rec.msg, "no_such_directive") {
		t.Errorf("ReloadNginx with a bad configuration: %q, want nginx's refusal", rec.msg)
	}
	if got := dialRoot(net.JoinHostPort(nd.Addr, "80"), 2*time.Second); got != nstest.Open || !nd.Nginx.Alive() {
		t.Errorf("after a refused reload nginx is alive %v, :80 %s; want it serving", nd.Nginx.Alive(), got)
	}
	if err := os.WriteFile(nd.Nginx.Conf, good, 0o644); err != nil {
		t.Fatal(err)
	}
	nd.ReloadNginx(t)
}

// TestNewRejectsTooManyNodes checks New's bound.
func TestNewRejectsTooManyNodes(t *testing.T) {
	ft := &fatalTB{TB: t}
	var wg sync.WaitGroup
	wg.Go(func() { New(ft, Options{Nodes: MaxNodes + 1}) })
	wg.Wait()
	if !strings.Contains(ft.msg, "Nodes = 201") {
		t.Errorf("New with %d nodes: %q, want a refusal", MaxNodes+1, ft.msg)
	}
}

// fatalTB records the first failure instead of failing the test, and
// ends its goroutine on Fatal.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	f.FailNow()
}

func (f *fatalTB) Fatal(args ...any) {
	f.Errorf("%s", fmt.Sprint(args...))
	f.FailNow()
}

func (f *fatalTB) Errorf(format string, args ...any) {
	if f.msg == "" {
		f.msg = fmt.Sprintf(format, args...)
	}
}

func (f *fatalTB) Fail()    {}
func (f *fatalTB) FailNow() { runtime.Goexit() }

// countNodes makes n requests one after the other, each on a new
// connection through the balancer, and counts which node answered.
func countNodes(t *testing.T, fn *Net, pool *x509.CertPool, url string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		node, _ := get(t, fn, pool, url)
		got[node]++
	}
	return got
}

// get makes one request through the balancer and returns the node that
// answered (NodeHeader) and the body.
func get(t *testing.T, fn *Net, pool *x509.CertPool, url string) (node, body string) {
	t.Helper()
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{RootCAs: pool},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, port, _ := net.SplitHostPort(addr)
				return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(fn.LB.Addr, port))
			},
		},
	}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v\n%s", url, resp.Status, err, b)
	}
	return resp.Header.Get(NodeHeader), string(b)
}

// dialRoot dials addr from the test's own namespace: nstest.Probe's
// answers.
func dialRoot(addr string, wait time.Duration) string {
	c, err := net.DialTimeout("tcp", addr, wait)
	switch {
	case err == nil:
		c.Close()
		return nstest.Open
	case errors.Is(err, unix.ECONNREFUSED):
		return nstest.Refused
	}
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return nstest.Dropped
	}
	return fmt.Sprintf("error: %v", err)
}

func equal(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// selfSigned writes a self-signed certificate for name and its key to
// files and returns them with a pool trusting the certificate.
func selfSigned(t *testing.T, name string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for f, b := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile, pool
}
