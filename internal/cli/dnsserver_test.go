package cli_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/cli"
	"github.com/detour-acme/detour/internal/dnsserver"
	"github.com/detour-acme/detour/internal/sandbox"
)

// daemon is a detour command running in the background, its stdout read
// line by line.
type daemon struct {
	lines  chan string
	cancel context.CancelFunc
	done   chan int
}

// startDetour runs detour args until the test ends (or stop is called).
func startDetour(t *testing.T, args ...string) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	d := &daemon{lines: make(chan string, 100), cancel: cancel, done: make(chan int, 1)}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			d.lines <- sc.Text()
		}
		close(d.lines)
	}()
	go func() {
		code := cli.Run(ctx, args, pw, io.Discard)
		pw.Close()
		d.done <- code
	}()
	t.Cleanup(func() {
		if code := d.stop(); code != 0 {
			t.Errorf("detour %s exited %d after cancel, want 0", strings.Join(args, " "), code)
		}
	})
	return d
}

// stop cancels the command and returns its exit code (once).
func (d *daemon) stop() int {
	d.cancel()
	code, ok := <-d.done
	if !ok {
		return 0
	}
	close(d.done)
	return code
}

// await returns the first submatch of re in the next matching stdout line.
func (d *daemon) await(t *testing.T, re string) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	timeout := time.After(time.Minute)
	for {
		select {
		case l, ok := <-d.lines:
			if !ok {
				t.Fatalf("detour stopped before printing a line matching %q", re)
			}
			if m := rx.FindStringSubmatch(l); m != nil {
				return m[1]
			}
		case <-timeout:
			t.Fatalf("no line matching %q within a minute", re)
		}
	}
}

// forwarder relays DNS queries to an address set later: the CA must be
// told its resolver before the server it resolves through has started.
type forwarder struct{ target atomic.Value }

func (f *forwarder) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	if addr, ok := f.target.Load().(string); ok {
		if r, _, err := c.Exchange(q, addr); err == nil {
			_ = w.WriteMsg(r)
			return
		}
	}
	_ = w.WriteMsg(new(dns.Msg).SetRcode(q, dns.RcodeServerFailure))
}

func startForwarder(t *testing.T) (*forwarder, string) {
	t.Helper()
	pc, ln, err := dnsserver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: f}, {Listener: ln, Handler: f}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return f, ln.Addr().String()
}

// TestDNSServerACME runs `detour dns-server --acme` against an in-process
// CA: the API's certificate is obtained through dns-01 answered by the
// server's own zone, then the API works over that TLS certificate and
// updates are served over DNS.
func TestDNSServerACME(t *testing.T) {
	fwd, fwdAddr := startForwarder(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ca, err := sandbox.StartCA(ctx, sandbox.CAOptions{DNSAddr: fwdAddr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close() })
	roots := filepath.Join(t.TempDir(), "roots.pem")
	if err := ca.WriteTLSRoots(roots); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	d := startDetour(t, "--config", emptyConfig(t), "--state-dir", state, "dns-server",
		"--zone", "auth.detour.test", "--ns-addr", "127.0.0.1", "--dns-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0",
		"--acme", "--ca", ca.DirectoryURL(), "--ca-roots", roots, "--email", "t@detour.test", "--agree-tos", "--profile", ca.DefaultProfile())
	dnsAddr := d.await(t, `^DNS server for auth\.detour\.test listening on (\S+)$`)
	fwd.target.Store(dnsAddr)
	apiAddr := d.await(t, `^acme-dns API https://auth\.detour\.test:\d+ listening on (\S+)$`)

	issuers, err := ca.IssuerRootsPEM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(issuers)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "auth.detour.test"},
	}}
	base := "https://" + apiAddr
	resp, err := client.Get(base + "/health")
	if err != nil {
		t.Fatalf("GET /health over the certificate from the CA: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/health: %d", resp.StatusCode)
	}
	resp, err = client.Post(base+"/register", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var reg struct{ Username, Password, Fulldomain, Subdomain string }
	err = json.NewDecoder(resp.Body).Decode(&reg)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("register: %d %v", resp.StatusCode, err)
	}
	value := strings.Repeat("k", 43)
	req, _ := http.NewRequest(http.MethodPost, base+"/update", strings.NewReader(`{"subdomain":"`+reg.Subdomain+`","txt":"`+value+`"}`))
	req.Header.Set("X-Api-User", reg.Username)
	req.Header.Set("X-Api-Key", reg.Password)
	if resp, err = client.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("update: %v %v", resp, err)
	}
	resp.Body.Close()
	c := &dns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(new(dns.Msg).SetQuestion(dns.Fqdn(reg.Fulldomain), dns.TypeTXT), dnsAddr)
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.TXT).Txt[0] != value {
		t.Errorf("TXT %s at %s: %v %v, want %q", reg.Fulldomain, dnsAddr, r, err, value)
	}
	for _, name := range []string{"ns.auth.detour.test.", "auth.detour.test."} {
		r, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, dns.TypeA), dnsAddr)
		if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
			t.Errorf("A %s: %v %v, want 127.0.0.1 from --ns-addr", name, r, err)
		}
	}
	if code := d.stop(); code != 0 {
		t.Errorf("dns-server exited %d on cancel, want 0", code)
	}
	// The API's certificate is kept apart from the certificates `detour
	// renew` manages.
	if _, err := os.Stat(filepath.Join(state, "dns-server", "live", "auth.detour.test", "fullchain.pem")); err != nil {
		t.Errorf("API certificate not stored under dns-server/: %v", err)
	}
	if _, err := os.Stat(filepath.Join(state, "renewal", "auth.detour.test.json")); err == nil {
		t.Error("the API certificate's record is in renewal/, where `detour renew` would renew it through a second DNS listener")
	}
}

// selfSigned writes a self-signed certificate for host and its key, and
// returns the file names and a pool trusting it.
func selfSigned(t *testing.T, host string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	leaf, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(leaf)
	return certFile, keyFile, pool
}

func TestDNSServerTLSFiles(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, "auth.detour.test")
	d := startDetour(t, "--config", emptyConfig(t), "--state-dir", t.TempDir(), "dns-server",
		"--zone", "auth.detour.test", "--ns-addr", "127.0.0.1", "--dns-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0",
		"--tls-cert", certFile, "--tls-key", keyFile)
	apiAddr := d.await(t, `^acme-dns API https://auth\.detour\.test:\d+ listening on (\S+)$`)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "auth.detour.test"},
	}}
	resp, err := client.Get("https://" + apiAddr + "/health")
	if err != nil {
		t.Fatalf("GET /health over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/health: %d", resp.StatusCode)
	}
}

func TestACMEDNSRegisterCommand(t *testing.T) {
	d := startDetour(t, "--config", emptyConfig(t), "--state-dir", t.TempDir(), "dns-server",
		"--zone", "auth.detour.test", "--ns-addr", "127.0.0.1", "--dns-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0")
	dnsAddr := d.await(t, `^DNS server for auth\.detour\.test listening on (\S+)$`)
	apiAddr := d.await(t, `^acme-dns API http://auth\.detour\.test:\d+ listening on (\S+)$`)
	server := "http://" + apiAddr

	state := t.TempDir()
	cname := regexp.MustCompile(`_acme-challenge\.example\.test\. CNAME [0-9a-f-]{36}\.auth\.detour\.test\.`)
	first := mustRun(t, "--config", emptyConfig(t), "--state-dir", state, "--resolver", dnsAddr,
		"acme-dns", "register", "example.test", "--server", server)
	wantIn(t, "first register", first.stdout, "new account registered", "does not resolve yet")
	record := cname.FindString(first.stdout)
	if record == "" {
		t.Fatalf("no CNAME record printed:\n%s", first.stdout)
	}
	cfg := writeFile(t, "detour.toml", "[path.adns]\nkind = \"acme-dns\"\nserver = \""+server+"\"\n")
	again := mustRun(t, "--config", cfg, "--state-dir", state, "--resolver", dnsAddr,
		"acme-dns", "register", "*.example.test", "--path", "adns")
	wantIn(t, "second register of the wildcard", again.stdout, "existing account", record)

	bad := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no server", []string{"acme-dns", "register", "example.test"}, 2, "--server is required"},
		{"plain http remote", []string{"acme-dns", "register", "example.test", "--server", "http://auth.example.net"}, 1, "use https://"},
		{"IP address", []string{"acme-dns", "register", "192.0.2.1", "--server", server}, 1, "DNS names only"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, append([]string{"--config", emptyConfig(t), "--state-dir", t.TempDir()}, tc.args...)...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("want exit %d mentioning %q; got %v", tc.code, tc.want, r)
			}
		})
	}
}

func TestDNSServerBadFlags(t *testing.T) {
	certFile, keyFile, _ := selfSigned(t, "auth.detour.test")
	base := []string{"dns-server", "--dns-listen", "127.0.0.1:0"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no zone", []string{"--api-listen", "127.0.0.1:0"}, "--zone is required"},
		{"ns inside the zone without address", []string{"--zone", "auth.example.net", "--api-listen", "127.0.0.1:0"}, "--ns-addr is required"},
		{"ns address not an IP", []string{"--zone", "auth.example.net", "--ns-addr", "host", "--api-listen", "127.0.0.1:0"}, "is not an IP address"},
		{"plain http on a public address", []string{"--zone", "auth.example.net", "--ns-addr", "127.0.0.1", "--api-listen", ":8053"}, "the API needs TLS"},
		{"cert without key", []string{"--zone", "auth.example.net", "--ns-addr", "127.0.0.1", "--tls-cert", certFile}, "go together"},
		{"files and acme", []string{"--zone", "auth.example.net", "--ns-addr", "127.0.0.1", "--tls-cert", certFile, "--tls-key", keyFile, "--acme"}, "not both"},
		{"acme host outside the zone", []string{"--zone", "auth.example.net", "--ns-addr", "127.0.0.1", "--acme", "--api-hostname", "api.example.org"}, "inside the zone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, append(append([]string{"--config", emptyConfig(t), "--state-dir", t.TempDir()}, base...), tc.args...)...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("want a usage error (exit 2) mentioning %q; got %v", tc.want, r)
			}
		})
	}
	t.Run("DNS address taken", func(t *testing.T) {
		ln, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		r := run(t, "--config", emptyConfig(t), "--state-dir", t.TempDir(), "dns-server", "--zone", "auth.example.net",
			"--ns-addr", "127.0.0.1", "--api-listen", "127.0.0.1:0", "--dns-listen", ln.LocalAddr().String())
		if r.code != 1 || !strings.Contains(r.stderr, "another program listens there") {
			t.Errorf("want exit 1 explaining the taken port; got %v", r)
		}
	})
}
