package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall/nstest"
	"github.com/detour-acme/detour/internal/testenv"
)

// dmiDir is where doctor reads the machine's vendor (cloud detection).
const dmiDir = "/sys/class/dmi/id"

// host is the machine of one scenario: a namespace behind the router, its
// servers and firewall, and Detour's state and configuration.
type host struct {
	t            *testing.T
	w            *world
	ns           *nstest.NS
	addr4, addr6 string // its public addresses ("" none)
	dir          string // configuration, state and document roots
	base         string // the base configuration file
	env          []string
}

// newHost creates the host of subnet n: 11.213.n.2 and 2a0f:5707:d7:n::2,
// routed through the router.
func (w *world) newHost(t *testing.T, n int) *host {
	t.Helper()
	w.reserve(t, n)
	h := &host{t: t, w: w, ns: nstest.New(t),
		addr4: fmt.Sprintf("11.213.%d.2", n), addr6: fmt.Sprintf("2a0f:5707:d7:%x::2", n)}
	rdev := fmt.Sprintf("r%d", n)
	h.ns.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", rdev, "netns", w.router.Name)
	h.ns.Run(t, "ip", "addr", "add", h.addr4+"/24", "dev", "eth0")
	h.ns.Run(t, "ip", "-6", "addr", "add", h.addr6+"/64", "dev", "eth0", "nodad")
	h.ns.Run(t, "ip", "link", "set", "eth0", "up")
	w.router.Run(t, "ip", "addr", "add", fmt.Sprintf("11.213.%d.254/24", n), "dev", rdev)
	w.router.Run(t, "ip", "-6", "addr", "add", fmt.Sprintf("2a0f:5707:d7:%x::fe/64", n), "dev", rdev, "nodad")
	w.router.Run(t, "ip", "link", "set", rdev, "up")
	h.ns.Run(t, "ip", "route", "add", "default", "via", fmt.Sprintf("11.213.%d.254", n))
	h.ns.Run(t, "ip", "-6", "route", "add", "default", "via", fmt.Sprintf("2a0f:5707:d7:%x::fe", n))
	h.setup()
	return h
}

// newNATHost creates a host with only the private address natHost, behind
// the router, which DNATs TCP 80 and 443 of natPublic to it (from the
// outside only: no hairpin) and SNATs its outbound traffic to natPublic.
func (w *world) newNATHost(t *testing.T) *host {
	t.Helper()
	w.reserve(t, 200)
	h := &host{t: t, w: w, ns: nstest.New(t), addr4: natPublic}
	h.ns.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "rnat", "netns", w.router.Name)
	h.ns.Run(t, "ip", "addr", "add", natHost+"/24", "dev", "eth0")
	h.ns.Run(t, "ip", "link", "set", "eth0", "up")
	h.ns.Run(t, "ip", "route", "add", "default", "via", natRouter)
	w.router.Run(t, "ip", "addr", "add", natRouter+"/24", "dev", "rnat")
	w.router.Run(t, "ip", "link", "set", "rnat", "up")
	w.router.Run(t, "ip", "addr", "add", natPublic+"/32", "dev", "rca")
	rules := fmt.Sprintf(`table ip natdoctor {
	chain pre {
		type nat hook prerouting priority dstnat;
		iifname "rca" ip daddr %[1]s tcp dport { 80, 443 } dnat to %[2]s
	}
	chain post {
		type nat hook postrouting priority srcnat;
		oifname "rca" ip saddr %[2]s snat to %[1]s
	}
}
`, natPublic, natHost)
	f := filepath.Join(t.TempDir(), "nat.nft")
	writeFile(t, f, rules, 0o644)
	w.router.Run(t, "nft", "-f", f)
	t.Cleanup(func() {
		_ = w.router.Command("nft", "delete", "table", "ip", "natdoctor").Run()
		_ = w.router.Command("ip", "addr", "del", natPublic+"/32", "dev", "rca").Run()
	})
	h.setup()
	return h
}

// with returns the host for the subtest t, with a configuration
// directory of its own (the state is shared).
func (h *host) with(t *testing.T) *host {
	c := *h
	c.t = t
	c.dir = testenv.WorldReadableDir(t)
	if err := os.Symlink(filepath.Join(h.dir, "state"), filepath.Join(c.dir, "state")); err != nil {
		t.Fatal(err)
	}
	return &c
}

// setup gives the host the test's resolver as its system resolver
// (`ip netns exec` mounts /etc/netns/NAME/resolv.conf over
// /etc/resolv.conf), and makes its directory and its base configuration:
// the account and the CA, nothing else.
func (h *host) setup() {
	etc := filepath.Join("/etc/netns", h.ns.Name)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { os.RemoveAll(etc) })
	writeFile(h.t, filepath.Join(etc, "resolv.conf"), "nameserver "+caResolver+"\n", 0o644)
	h.dir = testenv.WorldReadableDir(h.t)
	h.base = filepath.Join(h.dir, "base.toml")
	writeFile(h.t, h.base, fmt.Sprintf(`state_dir = %q
email = "doctor@doctor.test"
agree_tos = true
default_ca = "sandbox"

[ca.sandbox]
directory = %q
root_bundle = %q
`, filepath.Join(h.dir, "state"), h.w.info.Directory, h.w.info.Roots), 0o644)
	// The acme-dns API's certificate is self-signed.
	h.env = []string{"SSL_CERT_FILE=" + h.w.acmeDNSCA}
}

// command returns detour with args, run on the host with the config file
// cfg and the resolver. Where the test machine has DMI data (a cloud VM
// would make doctor name its cloud firewall), the host gets an empty DMI
// directory: the scenarios' hosts are no cloud machines.
func (h *host) command(cfg string, args ...string) *exec.Cmd {
	full := append([]string{"--config", cfg, "--resolver", caResolver + ":53"}, args...)
	var cmd *exec.Cmd
	if _, err := os.Stat(dmiDir); err == nil {
		cmd = h.ns.Command("sh", append([]string{"-c", `mount -t tmpfs -o ro,size=4k none ` + dmiDir + ` && exec "$@"`, "sh", detourBin}, full...)...)
	} else {
		cmd = h.ns.Command(detourBin, full...)
	}
	cmd.Env = append(os.Environ(), h.env...)
	return cmd
}

// result is how a detour run ended.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// detour runs detour with cfg on the host and returns how it ended.
func (h *host) detour(cfg string, args ...string) result {
	h.t.Helper()
	var out, errb bytes.Buffer
	cmd := h.command(cfg, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	begin := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		h.t.Fatalf("running detour %s: %v", strings.Join(args, " "), err)
	}
	h.t.Logf("detour %s: exit %d after %v", strings.Join(args, " "), r.code, time.Since(begin).Round(time.Millisecond))
	return r
}

// mustDetour runs detour and fails the test unless it exits 0.
func (h *host) mustDetour(cfg string, args ...string) result {
	h.t.Helper()
	r := h.detour(cfg, args...)
	if r.code != 0 {
		h.t.Fatalf("detour %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// issueWith appends toml, unchanged, to the base configuration, checks the
// result with `detour config check`, issues the certificate cert with
// `detour issue` and checks that it covers names.
func (h *host) issueWith(toml, cert string, names ...string) {
	h.t.Helper()
	base, err := os.ReadFile(h.base)
	if err != nil {
		h.t.Fatal(err)
	}
	cfg := filepath.Join(h.dir, "detour.toml")
	writeFile(h.t, cfg, string(base)+"\n"+toml, 0o644)
	h.mustDetour(cfg, "config", "check")
	if r := h.detour(cfg, "issue", cert); r.code != 0 {
		h.t.Fatalf("issuing %s with the recommended configuration failed: %s\nconfiguration:\n%s", cert, r, string(base)+"\n"+toml)
	}
	got := h.leafNames(cert)
	for _, n := range names {
		if !slices.Contains(got, n) {
			h.t.Errorf("the certificate %s covers %v, not %s", cert, got, n)
		}
	}
}

// leafNames returns the DNS names of the live certificate cert.
func (h *host) leafNames(cert string) []string {
	h.t.Helper()
	full, err := os.ReadFile(filepath.Join(h.dir, "state", "live", cert, "fullchain.pem"))
	if err != nil {
		h.t.Fatalf("no certificate was stored: %v", err)
	}
	blk, _ := pem.Decode(full)
	if blk == nil {
		h.t.Fatalf("live/%s/fullchain.pem holds no PEM block", cert)
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		h.t.Fatal(err)
	}
	return leaf.DNSNames
}

// nginx starts nginx on the host with the http block body and the
// top-level text top (a stream block), waiting for wait.
func (h *host) nginx(top, body string, wait ...string) *testenv.Server {
	h.t.Helper()
	conf := "user root;\nworker_processes 1;\n" + top + `
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path {{.Dir}}/body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;
` + body + "\n}\n"
	var s *testenv.Server
	dir := testenv.WorldReadableDir(h.t)
	h.ns.Do(h.t, func(t testing.TB) { s = testenv.StartNginx(t, dir, conf, map[string]any{}, wait...) })
	return s
}

// haproxy starts HAProxy on the host with conf (a text/template given
// .Dir), waiting for wait.
func (h *host) haproxy(conf string, wait ...string) *testenv.Server {
	h.t.Helper()
	var s *testenv.Server
	dir := testenv.WorldReadableDir(h.t)
	h.ns.Do(h.t, func(t testing.TB) { s = testenv.StartHAProxy(t, dir, conf, map[string]any{}, wait...) })
	return s
}

// reload reloads s gracefully the way its own reload does.
func (h *host) reload(s *testenv.Server) {
	h.t.Helper()
	if out, err := exec.Command("sh", "-c", s.ReloadCommand()).CombinedOutput(); err != nil {
		h.t.Fatalf("reloading %s: %v\n%s", s.Kind, err, out)
	}
}

// client returns an HTTP client whose connections are made on the host.
func (h *host) client() *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		var err error
		h.ns.In(h.t, func() { c, err = (&net.Dialer{}).DialContext(ctx, network, addr) })
		return c, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get fetches path from addr (ip:port) with the Host header name, from
// the host itself.
func (h *host) get(addr, name, path string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = name
	resp, err := h.client().Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b), nil
}

// waitFor polls get until ok accepts what it returns (a reloaded server
// answers with its new configuration).
func (h *host) waitFor(what, addr, name, path string, ok func(status int, body string) bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, body, err := h.get(addr, name, path)
		if err == nil && ok(st, body) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: GET %s%s (Host %s) still answers %d %q (%v)", what, addr, path, name, st, body, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a reload: no notification exists
	}
}

// firewall loads an nftables ruleset on the host.
func (h *host) firewall(rs string) {
	h.t.Helper()
	h.ns.LoadRuleset(h.t, rs)
}

// ruleset is the host's whole nftables ruleset, without counters.
func (h *host) ruleset() string {
	h.t.Helper()
	return h.ns.Run(h.t, "nft", "-s", "list", "ruleset")
}

// listeners lists the host's listening TCP sockets (ss -Htln).
func (h *host) listeners() string {
	h.t.Helper()
	out := h.ns.Run(h.t, "ss", "-Htln")
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) >= 4 {
			lines = append(lines, f[3])
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, " ")
}

// tree returns every file and directory under root with its mode and, for
// files, the SHA-256 of its content.
func tree(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		v := fi.Mode().String()
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			v += " " + hex.EncodeToString(sum[:])
		}
		out[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameTree fails the test when two trees differ, naming the differences.
func sameTree(t testing.TB, when string, before, after map[string]string) {
	t.Helper()
	var diff []string
	for p, v := range before {
		if a, ok := after[p]; !ok {
			diff = append(diff, "removed "+p)
		} else if a != v {
			diff = append(diff, fmt.Sprintf("changed %s: %s -> %s", p, v, a))
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			diff = append(diff, "added "+p)
		}
	}
	if len(diff) > 0 {
		slices.Sort(diff)
		t.Errorf("%s the document root changed:\n  %s", when, strings.Join(diff, "\n  "))
	}
}

// site writes a small website under dir: an index, a stylesheet, an image.
func site(t testing.TB, dir, name string) string {
	t.Helper()
	for p, body := range map[string]string{
		"index.html":               "<!doctype html><title>" + name + "</title><link rel=stylesheet href=/css/site.css><h1>" + name + "</h1>",
		"css/site.css":             "h1 { color: teal }",
		"img/logo.svg":             `<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>`,
		"robots.txt":               "User-agent: *\nDisallow:\n",
		".well-known/security.txt": "Contact: mailto:security@" + name + "\n",
	} {
		f := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, f, body, 0o644)
	}
	return dir
}
