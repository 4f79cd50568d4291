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
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/cli"
	"github.com/detour-acme/detour/internal/snippet"
	"github.com/detour-acme/detour/internal/testenv"
)

// Path kinds, as the config's [path.NAME] tables write them.
const (
	webroot     = "webroot"
	sidePort    = "side-port"
	stateless   = "stateless"
	alpnForward = "alpn-forward"
	frontDoor   = "front-door"
)

// certName is the name of the one certificate each test issues.
const certName = "site"

// page is what every server answers at / over HTTP and HTTPS.
const page = "detour-e2e-page"

// site is one test's world: a sandbox CA and DNS, a real web server with
// its configuration and certificate files, and Detour's configuration and
// state directory.
type site struct {
	t      *testing.T
	env    *testenv.Env
	kind   string // the path kind under test
	server string // snippet.Nginx, snippet.Apache or snippet.HAProxy
	name   string // the DNS name the certificate is for

	dir     string // world-readable: server configuration, certificate files
	root    string // the web server's document root
	webroot string // root of the webroot path (normally root)
	state   string // Detour's state directory
	cfg     string // Detour's configuration file

	// httpsAddr is where the HTTPS server listens: the TLS validation
	// port for http-01 paths, a local port behind the port-443 front for
	// tls-alpn-01 paths.
	httpsAddr string
	// sideAddr is Detour's side port (side-port) or tls-alpn-01 responder
	// (alpn-forward).
	sideAddr string

	srv    *testenv.Server
	unlock sync.Once // of portsMu
}

// portsMu is held by one test at a time from the moment its sandbox frees
// the validation ports (testenv.Options.KeepPorts) until its web server
// has bound them, so that no other test of this package takes one of them
// for a listener on port 0 in between.
var portsMu sync.Mutex

// newSite starts the sandbox for kind served by server and prepares the
// directories; nothing listens yet. It holds portsMu until portsBound.
func newSite(t *testing.T, kind, server string) *site {
	t.Helper()
	s := &site{t: t, kind: kind, server: server}
	portsMu.Lock()
	t.Cleanup(s.portsBound) // when setup fails half-way
	s.env = testenv.New(t, testenv.Options{KeepPorts: true})
	s.name = strings.ReplaceAll(kind+"."+server, "-", "") + ".e2e.detour.test"
	s.env.AddName(s.name)
	s.dir = testenv.WorldReadableDir(t)
	s.root = filepath.Join(s.dir, "www")
	s.webroot = s.root
	s.state = filepath.Join(t.TempDir(), "state")
	s.cfg = filepath.Join(t.TempDir(), "detour.toml")
	if err := os.Mkdir(s.root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.root, "index.html"), []byte(page+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.httpsAddr = s.env.TLSAddr
	if kind == alpnForward || kind == frontDoor {
		s.httpsAddr = localAddr(t)
	}
	if kind == sidePort || kind == alpnForward {
		s.sideAddr = localAddr(t)
	}
	s.writeBootstrapCert()
	return s
}

// portsBound releases portsMu once the site's servers listen on the
// validation ports. Later calls do nothing.
func (s *site) portsBound() {
	s.unlock.Do(portsMu.Unlock)
}

// localAddr returns 127.0.0.1 and a port, free a moment ago, that no
// listener on port 0 is given while it waits to be bound.
func localAddr(t *testing.T) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.StaticPort(t)))
}

// port returns the port of a host:port address.
func port(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		panic(err)
	}
	return p
}

// writeBootstrapCert writes the self-signed certificate the HTTPS server
// starts with: cert.pem and key.pem, and site.pem (both, for HAProxy).
func (s *site) writeBootstrapCert() {
	t := s.t
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: s.name},
		DNSNames:     []string{s.name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	for name, data := range map[string][]byte{"cert.pem": certPEM, "key.pem": keyPEM, "site.pem": append(certPEM, keyPEM...)} {
		if err := os.WriteFile(filepath.Join(s.dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// deployHook is the certificate's deploy hook: copy the new certificate
// and key over the files the server reads, then reload it gracefully.
func (s *site) deployHook() string {
	if s.server == snippet.HAProxy {
		return fmt.Sprintf(`cat "$DETOUR_FULLCHAIN" "$DETOUR_KEY" > '%s/site.pem' && %s`, s.dir, s.srv.ReloadCommand())
	}
	return fmt.Sprintf(`cp "$DETOUR_FULLCHAIN" '%[1]s/cert.pem' && cp "$DETOUR_KEY" '%[1]s/key.pem' && %[2]s`, s.dir, s.srv.ReloadCommand())
}

// writeConfig writes Detour's configuration: the sandbox CA, the path
// under test and one certificate through it, with hook as its deploy hook
// (empty before the server runs: the hook names the master's PID).
func (s *site) writeConfig(hook string) {
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir = %s\nagree_tos = true\nemail = \"e2e@detour.test\"\ndefault_ca = \"sandbox\"\n\n", quote(s.state))
	fmt.Fprintf(&b, "[ca.sandbox]\ndirectory = %s\nroot_bundle = %s\n\n", quote(s.env.CA.DirectoryURL()), quote(s.env.RootsFile))
	fmt.Fprintf(&b, "[path.e2e]\nkind = %s\n", quote(s.kind))
	switch s.kind {
	case webroot:
		fmt.Fprintf(&b, "root = %s\n", quote(s.webroot))
	case sidePort, alpnForward:
		fmt.Fprintf(&b, "listen = %s\n", quote(s.sideAddr))
	case frontDoor:
		fmt.Fprintf(&b, "router = %s\n\n[router]\nlisten = %s\nbackend = %s\n", quote(s.env.TLSAddr), quote(s.env.TLSAddr), quote(s.httpsAddr))
	}
	fmt.Fprintf(&b, "\n[[certificate]]\nname = %s\ndomains = [%s]\nprofile = \"shortlived\"\npaths = [\"e2e\"]\nself_check = true\n",
		quote(certName), quote(s.name))
	if hook != "" {
		fmt.Fprintf(&b, "deploy_hook = %s\n", quote(hook))
	}
	if err := os.WriteFile(s.cfg, []byte(b.String()), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// quote writes s as a TOML basic string. strconv.Quote's escapes are
// TOML's for printable ASCII, which is all these tests write.
func quote(s string) string {
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			panic(fmt.Sprintf("quote: %q is not printable ASCII", s))
		}
	}
	return strconv.Quote(s)
}

// result is what one detour invocation produced.
type result struct {
	args           []string
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("detour %s: exit %d\n--- stdout:\n%s--- stderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// detour runs the detour command line in-process with the site's
// configuration, the self-check pointed at the sandbox's DNS server and
// validation ports as the CA's are.
func (s *site) detour(args ...string) result {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.t.Context(), time.Minute)
	defer cancel()
	full := append([]string{"--config", s.cfg}, args...)
	full = append(full, "--resolver", s.env.DNSAddr,
		"--check-http-port", port(s.env.HTTPAddr), "--check-tls-port", port(s.env.TLSAddr))
	var stdout, stderr bytes.Buffer
	code := cli.Run(ctx, full, &stdout, &stderr)
	return result{args: args, code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// mustDetour is detour failing the test unless it exits 0.
func (s *site) mustDetour(args ...string) result {
	s.t.Helper()
	r := s.detour(args...)
	if r.code != 0 {
		s.t.Fatal(r)
	}
	return r
}

// startRouter runs `detour router` in-process until the test ends, and
// waits until it accepts connections on the TLS validation port.
func (s *site) startRouter() {
	t := s.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &lockedBuffer{}
	done := make(chan int, 1)
	go func() { done <- cli.Run(ctx, []string{"--config", s.cfg, "router"}, out, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("detour router exited %d:\n%s", code, out)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("detour router did not stop within 10s of its context's end:\n%s", out)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.env.TLSAddr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case code := <-done:
			done <- code // for the cleanup
			t.Fatalf("detour router exited %d at start:\n%s", code, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("detour router does not accept on %s after 10s: %v\n%s", s.env.TLSAddr, err, out)
		}
		time.Sleep(10 * time.Millisecond) // polling a listener: no signal to wait for
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// liveLeaf parses live/<certName>/cert.pem.
func (s *site) liveLeaf() *x509.Certificate {
	s.t.Helper()
	return readLeaf(s.t, filepath.Join(s.state, "live", certName, "cert.pem"))
}

// readLeaf parses the first certificate of a PEM file.
func readLeaf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s holds no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	return c
}

// presented returns the leaf certificate a new TLS connection to the HTTPS
// front (port 443's stand-in) is served, offering http/1.1 as browsers do.
func (s *site) presented() (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", s.env.TLSAddr, &tls.Config{
		ServerName:         s.name,
		NextProtos:         []string{"http/1.1"},
		InsecureSkipVerify: true, // the server starts with a self-signed certificate; the serial is what is compared
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// waitPresented waits until new TLS connections are served want, which
// the deploy hook's reload puts in place; bounded at 10 seconds.
func (s *site) waitPresented(want *x509.Certificate, what string) {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got *x509.Certificate
	var err error
	for time.Now().Before(deadline) {
		got, err = s.presented()
		if err == nil && got.SerialNumber.Cmp(want.SerialNumber) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling another process: no signal to wait for
	}
	desc := fmt.Sprintf("error %v", err)
	if err == nil {
		desc = fmt.Sprintf("serial %x issued by %q", got.SerialNumber, got.Issuer.CommonName)
	}
	s.t.Fatalf("after 10s %s still does not present the %s certificate (serial %x): last handshake: %s",
		s.server, what, want.SerialNumber, desc)
}

// loadClients returns the clients of the two load loops: plain HTTP with
// keep-alive, as a browser, and HTTPS with a new connection (and
// handshake) per request, so that a gap in the TLS listener during a
// reload fails a request.
func (s *site) loadClients() (httpClient, httpsClient *http.Client) {
	httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	httpsClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{ServerName: s.name, InsecureSkipVerify: true}, // self-signed, then the sandbox's
	}}
	return httpClient, httpsClient
}

// archived lists archive/<certName>/cert<N>.pem.
func (s *site) archived() []string {
	s.t.Helper()
	m, err := filepath.Glob(filepath.Join(s.state, "archive", certName, "cert[0-9]*.pem"))
	if err != nil {
		s.t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}
