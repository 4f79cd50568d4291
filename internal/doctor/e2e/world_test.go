package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall/nstest"
)

// Addresses of the "ca" namespace, the router, and the zone.
const (
	caBIND     = "11.213.0.1" // the primary of doctor.test (ns1.doctor.test)
	caResolver = "11.213.0.2" // a recursive resolver, what doctor and Pebble ask
	caAcmeDNS  = "11.213.0.3" // detour dns-server: auth.doctor.test and its API
	caACME     = "11.213.0.4" // Pebble's API
	caVADNS    = "11.213.0.5" // the CA's own resolver, what Pebble's VA asks
	caAddr6    = "2a0f:5707:d7::1"
	routerCA4  = "11.213.0.254"
	routerCA6  = "2a0f:5707:d7::fe"

	// natPublic is the router's public address DNATed to natHost.
	natPublic = "11.213.200.6"
	natHost   = "10.66.0.2"
	natRouter = "10.66.0.254"

	zone        = "doctor.test"
	acmeDNSZone = "auth." + zone
	// keyName is the TSIG key the primary accepts updates signed with.
	keyName = "doctor-e2e-key"
)

// world is the shared part of the network: the CA, DNS and the router
// every host hangs off.
type world struct {
	ca, router *nstest.NS
	info       caInfo
	bind       *named // the primary
	resolver   *named // the hosts' resolver
	vaDNS      *named // the CA's resolver
	keySecret  string // keyName's secret, base64
	keyFile    string // a BIND key file holding keyName
	acmeDNS    string // the acme-dns API URL
	acmeDNSCA  string // the PEM file of the API's self-signed certificate

	mu     sync.Mutex
	subnet map[int]bool
}

// newWorld builds the namespaces and starts the CA, BIND (primary and
// resolver, records holding the scenarios' static records) and the acme-dns
// server.
func newWorld(t *testing.T, records []string) *world {
	t.Helper()
	nstest.RequireCommand(t, "nft", "nftables")
	w := &world{subnet: map[int]bool{}}
	w.ca, w.router = nstest.New(t), nstest.New(t)
	w.ca.Run(t, "ip", "link", "add", "ca0", "type", "veth", "peer", "name", "rca", "netns", w.router.Name)
	for _, a := range []string{caBIND, caResolver, caAcmeDNS, caACME, caVADNS} {
		w.ca.Run(t, "ip", "addr", "add", a+"/24", "dev", "ca0")
	}
	w.ca.Run(t, "ip", "-6", "addr", "add", caAddr6+"/64", "dev", "ca0", "nodad")
	w.ca.Run(t, "ip", "link", "set", "ca0", "up")
	w.ca.Run(t, "ip", "route", "add", "default", "via", routerCA4)
	w.ca.Run(t, "ip", "-6", "route", "add", "default", "via", routerCA6)
	w.router.Run(t, "ip", "addr", "add", routerCA4+"/24", "dev", "rca")
	w.router.Run(t, "ip", "-6", "addr", "add", routerCA6+"/64", "dev", "rca", "nodad")
	w.router.Run(t, "ip", "link", "set", "rca", "up")
	w.router.Run(t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

	w.info = startCA(t, w.ca)
	w.startDNS(t, records)
	w.startAcmeDNS(t)
	return w
}

// startDNS starts the primary of doctor.test and the resolver.
func (w *world) startDNS(t *testing.T, records []string) {
	t.Helper()
	w.keySecret = randomSecret(t)
	keyStmt := fmt.Sprintf("key %q { algorithm hmac-sha256; secret %q; };\n", keyName, w.keySecret)
	w.keyFile = filepath.Join(t.TempDir(), keyName+".key")
	writeFile(t, w.keyFile, "# tsig-keygen "+keyName+"\n"+keyStmt, 0o600)

	pdir := t.TempDir()
	writeFile(t, filepath.Join(pdir, zone+".zone"), zoneFile(records), 0o644)
	writeFile(t, filepath.Join(pdir, "named.conf"), keyStmt+fmt.Sprintf(`options {
	directory %q;
	pid-file none;
	session-keyfile none;
	listen-on port 53 { %s; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
};
controls { };
zone %q { type primary; file %q; allow-update { key %q; }; };
`, pdir, caBIND, zone, filepath.Join(pdir, zone+".zone"), keyName), 0o644)

	// The resolvers are authoritative for a fake root that delegates
	// doctor.test to the primary, so they resolve the way resolvers on
	// the Internet do (CNAMEs into other zones, DS at the parent) without
	// leaving the namespace. The hosts and the CA have one each, as on
	// the Internet: a negative answer one of them caches (BIND keeps an
	// NXDOMAIN about a second even with a TTL of 0) is not the other's.
	resolverDir := func(addr string) string {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "root.zone"), fmt.Sprintf(`$TTL 60
. IN SOA a.root-servers.test. hostmaster.%[1]s. 1 3600 600 86400 0
. IN NS a.root-servers.test.
a.root-servers.test. IN A %[2]s
%[1]s. IN NS ns1.%[1]s.
ns1.%[1]s. IN A %[3]s
`, zone, addr, caBIND), 0o644)
		writeFile(t, filepath.Join(dir, "named.conf"), fmt.Sprintf(`options {
	directory %q;
	pid-file none;
	session-keyfile none;
	listen-on port 53 { %s; };
	listen-on-v6 { none; };
	recursion yes;
	allow-recursion { any; };
	allow-query { any; };
	dnssec-validation no;
	qname-minimization off;
	max-cache-ttl 1;
	max-ncache-ttl 0;
};
controls { };
zone "." { type primary; file %q; };
`, dir, addr, filepath.Join(dir, "root.zone")), 0o644)
		return dir
	}
	rdir, vdir := resolverDir(caResolver), resolverDir(caVADNS)

	var wg sync.WaitGroup
	wg.Go(func() { w.bind = startNamed(t, w.ca, pdir) })
	wg.Go(func() { w.resolver = startNamed(t, w.ca, rdir) })
	wg.Go(func() { w.vaDNS = startNamed(t, w.ca, vdir) })
	wg.Wait()
	if w.bind == nil || w.resolver == nil || w.vaDNS == nil {
		t.FailNow()
	}
}

// zoneFile is doctor.test: its name server, the delegation of the acme-dns
// zone, and the scenarios' records.
func zoneFile(records []string) string {
	var b strings.Builder
	// A negative TTL of 0: a name a scenario adds later is not hidden by
	// an earlier NXDOMAIN.
	fmt.Fprintf(&b, "$TTL 1\n@ IN SOA ns1.%[1]s. hostmaster.%[1]s. 1 3600 600 86400 0\n@ IN NS ns1.%[1]s.\nns1 IN A %[2]s\n", zone, caBIND)
	fmt.Fprintf(&b, "auth IN NS ns.auth\nns.auth IN A %s\n", caAcmeDNS)
	for _, r := range records {
		b.WriteString(r + "\n")
	}
	return b.String()
}

// named is a running named.
type named struct {
	mu    sync.Mutex
	lines []string
}

func (n *named) log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.lines, "\n")
}

// since returns what named logged once it was running (its startup
// banner left out).
func (n *named) since() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, l := range n.lines {
		if strings.HasSuffix(l, " running") {
			return strings.Join(n.lines[i:], "\n")
		}
	}
	return strings.Join(n.lines, "\n")
}

// startNamed runs named with dir/named.conf in ns, in the foreground, and
// returns once it says it is running; it is stopped when the test ends.
func startNamed(t *testing.T, ns *nstest.NS, dir string) *named {
	t.Helper()
	nstest.RequireCommand(t, "named", "bind9")
	n := &named{}
	cmd := ns.Command("named", "-g", "-4", "-n", "1", "-c", filepath.Join(dir, "named.conf"))
	cmd.Dir = dir
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Error(err)
		return nil
	}
	if err := cmd.Start(); err != nil {
		t.Errorf("starting named: %v", err)
		return nil
	}
	running := make(chan bool, 1)
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pipe)
		seen := false
		for sc.Scan() {
			n.mu.Lock()
			n.lines = append(n.lines, sc.Text())
			n.mu.Unlock()
			if !seen && strings.HasSuffix(sc.Text(), " running") {
				seen = true
				running <- true
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("named (%s):\n%s", dir, n.since())
		}
	})
	select {
	case <-running:
		return n
	case <-exited:
	case <-time.After(15 * time.Second):
	}
	t.Errorf("named did not start:\n%s", n.log())
	return nil
}

// startAcmeDNS runs `detour dns-server` for auth.doctor.test in the ca
// namespace, its API over TLS with a self-signed certificate that the
// hosts' detour trusts (SSL_CERT_FILE).
func (w *world) startAcmeDNS(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir, acmeDNSZone)
	w.acmeDNSCA = certFile
	cfg := filepath.Join(dir, "empty.toml")
	writeFile(t, cfg, "", 0o644)
	cmd := w.ca.Command(detourBin, "--config", cfg, "--state-dir", filepath.Join(dir, "state"), "dns-server",
		"--zone", acmeDNSZone, "--ns-addr", caAcmeDNS, "--dns-listen", caAcmeDNS+":53", "--api-listen", caAcmeDNS+":443",
		"--tls-cert", certFile, "--tls-key", keyFile)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out strings.Builder
	api := make(chan string, 1)
	exited := make(chan struct{})
	re := regexp.MustCompile(`^acme-dns API (https://\S+) listening on`)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				api <- m[1]
			}
		}
	}()
	go func() { _ = cmd.Wait(); pw.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("detour dns-server:\n%s", out.String())
			mu.Unlock()
		}
	})
	select {
	case w.acmeDNS = <-api:
	case <-exited:
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("detour dns-server exited:\n%s", out.String())
	case <-time.After(20 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("detour dns-server did not start its API:\n%s", out.String())
	}
}

// reserve reserves subnet number i for one host.
func (w *world) reserve(t *testing.T, i int) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.subnet[i] {
		t.Fatalf("subnet %d is used by two scenarios", i)
	}
	w.subnet[i] = true
}

func writeFile(t testing.TB, path, text string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
}
