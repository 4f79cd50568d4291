package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"
)

// scenario is one host of issue 14's list: its DNS records (zone file
// lines, loaded with doctor.test) and what the test does on it.
type scenario struct {
	name    string
	records []string
	run     func(t *testing.T, w *world)
}

// The scenarios' names, one set each: the CA never sees a name twice.
const (
	nWebroot  = "webroot." + zone
	nApp      = "app." + zone
	nStream   = "stream." + zone
	nDrop     = "drop." + zone
	nTrap     = "trap." + zone
	nNAT      = "nat." + zone
	nCAAOther = "caa-other." + zone
	nCAAAcct  = "caa-account." + zone
	nCAAOwn   = "caa-own." + zone
	nRFC2136  = "update." + zone
	nInternal = "internal-update." + zone
	nAcmeDNS  = "internal." + zone
)

// a returns an A record of name (absolute) to addr.
func a(name, addr string) string { return name + ". IN A " + addr }

var scenarios = []scenario{
	{"1-webroot", []string{a(nWebroot, "11.213.1.2")}, webrootScenario},
	{"2-haproxy-app", []string{a(nApp, "11.213.2.2")}, haproxyScenario},
	{"3-nginx-stream", []string{a(nStream, "11.213.3.2")}, streamScenario},
	{"4-policy-drop", []string{a(nDrop, "11.213.4.2")}, dropScenario},
	{"5-aaaa-trap", []string{a(nTrap, "11.213.5.2"), nTrap + ". IN AAAA 2a0f:5707:d7:5::2"}, trapScenario},
	{"6-nat", []string{a(nNAT, natPublic)}, natScenario},
	{"7-caa", []string{a(nCAAOther, "11.213.7.2"), nCAAOther + `. IN CAA 0 issue "other.example"`,
		a(nCAAAcct, "11.213.7.2"), a(nCAAOwn, "11.213.7.2")}, caaScenario},
	{"8-rfc2136", []string{a(nRFC2136, "11.213.8.2")}, rfc2136Scenario},
	{"9-acme-dns", nil, acmeDNSScenario},
}

// TestDoctor runs every scenario of issue 14 against the real command:
// the recommendation doctor prints is the path that then works, and its
// report names the evidence.
func TestDoctor(t *testing.T) {
	var records []string
	for _, s := range scenarios {
		records = append(records, s.records...)
	}
	w := newWorld(t, records)
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			s.run(t, w)
		})
	}
}

// A host firewall dropping inbound connections but for ssh (and, with
// open, those ports).
func inputDrop(open ...int) string {
	ports := "22"
	for _, p := range open {
		ports += fmt.Sprintf(", %d", p)
	}
	return `table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iif "lo" accept
		meta l4proto { icmp, ipv6-icmp } accept
		tcp dport { ` + ports + ` } accept
	}
}
`
}

// edgeDrop drops every new inbound connection in a prerouting chain, which
// Detour does not open windows in: no inbound port at all.
const edgeDrop = `table inet edge {
	chain pre {
		type filter hook prerouting priority filter; policy drop;
		ct state established,related accept
		iif "lo" accept
		meta l4proto { icmp, ipv6-icmp } accept
	}
}
`

// 1. A busy nginx (several sites) serves the name from a document root on
// :80: webroot with that root, and doctor leaves no trace.
func webrootScenario(t *testing.T, w *world) {
	h := w.newHost(t, 1)
	root := site(t, filepath.Join(h.dir, "www", "webroot"), nWebroot)
	shop := site(t, filepath.Join(h.dir, "www", "shop"), "shop")
	cert, key := selfSigned(t, h.dir, nWebroot)
	h.nginx("", fmt.Sprintf(`
    server {
        listen 80 default_server;
        listen [::]:80 default_server;
        server_name _;
        return 404;
    }
    server {
        listen 80;
        listen [::]:80;
        server_name %[1]s www.%[1]s;
        root %[2]s;
        index index.html;
        location / { try_files $uri $uri/ =404; }
        location /api/ { proxy_pass http://127.0.0.1:9000; }
    }
    server {
        listen 443 ssl;
        listen [::]:443 ssl;
        server_name %[1]s www.%[1]s;
        ssl_certificate %[5]s;
        ssl_certificate_key %[6]s;
        root %[2]s;
    }
    server {
        listen 80;
        listen [::]:80;
        server_name shop.%[3]s;
        root %[4]s;
    }`, nWebroot, root, zone, shop, cert, key), h.addr4+":80", h.addr4+":443")
	beforeTree, beforeRules, beforeListen := tree(t, root), h.ruleset(), h.listeners()

	d := h.doctor(nWebroot)
	d.wantExit(0)
	p := d.wantBest("webroot", "http-01", "", "works")
	if p.Settings["root"] != root {
		d.fail("the webroot path's root is %q, want the block's root %s", p.Settings["root"], root)
	}
	d.wantIn("the webroot path's reason", p.Why, root)
	d.wantIn("the nginx check", d.check("web.nginx", "").text(), root)
	probe := d.check("http.webroot", nWebroot)
	d.wantStatus(probe, "ok")

	sameTree(t, "after doctor,", beforeTree, tree(t, root))
	if got := h.ruleset(); got != beforeRules {
		t.Errorf("doctor changed the ruleset:\n%s\nbefore:\n%s", got, beforeRules)
	}
	if got := h.listeners(); got != beforeListen {
		t.Errorf("after doctor the host listens on %s, before on %s", got, beforeListen)
	}
	h.issueWith(d.rep.Recommendation.TOML, nWebroot, nWebroot)
}

// haproxyConf is a HAProxy on :80 and :443 (TLS) in front of an
// application; %s is its certificate and key, in one PEM file.
const haproxyConf = `global
    log stderr format raw local0 err
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend www
    bind :80
    default_backend app
frontend www-tls
    bind :443 ssl crt %s
    default_backend app
backend app
    server app1 127.0.0.1:8080
`

// 2. HAProxy on :80 in front of an application that serves no files:
// side-port, after adding the forward doctor prints for HAProxy.
func haproxyScenario(t *testing.T, w *world) {
	h := w.newHost(t, 2)
	h.app("127.0.0.1:8080")
	cert, key := selfSigned(t, h.dir, nApp)
	pemFile := filepath.Join(h.dir, "haproxy.pem")
	writeFile(t, pemFile, readFile(t, cert)+readFile(t, key), 0o600)
	hp := h.haproxy(fmt.Sprintf(haproxyConf, pemFile), h.addr4+":80", h.addr4+":443")
	beforeListen, beforeConf := h.listeners(), readFile(t, hp.Conf)

	d := h.doctor(nApp)
	d.wantExit(1)
	p := d.wantBest("side-port", "http-01", "", "after-change")
	d.wantIn("the side-port path's reason", p.Why, "haproxy")
	d.wantIn("the side-port path's snippet", p.Snippet, "acl", "/.well-known/acme-challenge/", "use_backend", "backend", "127.0.0.1:8402")
	d.wantIn("the recommendation's snippets", strings.Join(d.rep.Recommendation.Snippets, "\n"), "use_backend")
	d.wantIn("the recommendation's changes", strings.Join(d.rep.Recommendation.Changes, "\n"), "haproxy")
	if wr := d.path(nApp, "webroot", "http-01"); wr.Verdict != "impossible" {
		d.fail("webroot is %s behind a proxy to an application: %s", wr.Verdict, wr.Why)
	}
	if got := h.listeners(); got != beforeListen {
		t.Errorf("after doctor the host listens on %s, before on %s", got, beforeListen)
	}
	if readFile(t, hp.Conf) != beforeConf {
		t.Error("doctor changed HAProxy's configuration")
	}

	// The one change: doctor's snippet in HAProxy's configuration.
	writeFile(t, hp.Conf, withHAProxySnippet(t, beforeConf, p.Snippet), 0o644)
	h.reload(hp)
	h.waitFor("HAProxy with the forward", h.addr4+":80", nApp, "/.well-known/acme-challenge/x",
		func(st int, body string) bool { return body != "app" })

	d2 := h.doctor(nApp)
	d2.wantExit(0)
	d2.wantBest("side-port", "http-01", "", "works")
	h.issueWith(d.rep.Recommendation.TOML, nApp, nApp)
}

// withHAProxySnippet puts snippet into conf as its comments say: the
// indented lines into the frontend binding :80, right after its bind
// line; the backend section at the end.
func withHAProxySnippet(t *testing.T, conf, snippet string) string {
	t.Helper()
	var front, back []string
	inBackend := false
	for _, l := range strings.Split(snippet, "\n") {
		switch {
		case strings.HasPrefix(strings.TrimSpace(l), "#") || strings.TrimSpace(l) == "":
		case strings.HasPrefix(l, "backend "):
			inBackend = true
			back = append(back, l)
		case inBackend:
			back = append(back, l)
		default:
			front = append(front, l)
		}
	}
	if len(front) == 0 || len(back) == 0 {
		t.Fatalf("the HAProxy snippet has no frontend lines or no backend:\n%s", snippet)
	}
	bind := "    bind :80\n"
	if !strings.Contains(conf, bind) {
		t.Fatalf("no %q in HAProxy's configuration", bind)
	}
	conf = strings.Replace(conf, bind, bind+strings.Join(front, "\n")+"\n", 1)
	return conf + strings.Join(back, "\n") + "\n"
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// app serves an application on addr of the host: 200 "app" for every
// request, no files.
func (h *host) app(addr string) {
	h.t.Helper()
	var ln net.Listener
	var err error
	h.ns.In(h.t, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		h.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("app"))
	})}
	go func() { _ = srv.Serve(ln) }()
	h.t.Cleanup(func() { srv.Close() })
}

// nginxStreamModule is Debian's nginx stream module.
const nginxStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// 3. An nginx stream with ssl_preread owns :443 and already sends
// acme-tls/1 to 127.0.0.1:8403; the firewall drops :80: alpn-forward,
// which needs no window, before a standalone path through a window.
func streamScenario(t *testing.T, w *world) {
	h := w.newHost(t, 3)
	if _, err := os.Stat(nginxStreamModule); err != nil {
		t.Fatalf("%s is missing: install the Debian package \"libnginx-mod-stream\"", nginxStreamModule)
	}
	h.firewall(inputDrop(443))
	cert, key := selfSigned(t, h.dir, nStream)
	root := site(t, filepath.Join(h.dir, "www"), nStream)
	h.nginx(`load_module `+nginxStreamModule+`;
stream {
    map $ssl_preread_alpn_protocols $upstream {
        ~\bacme-tls/1\b  127.0.0.1:8403;
        default          127.0.0.1:8443;
    }
    server {
        listen 443;
        listen [::]:443;
        ssl_preread on;
        proxy_pass $upstream;
    }
}`, fmt.Sprintf(`
    server {
        listen 127.0.0.1:8443 ssl;
        server_name %s;
        ssl_certificate %s;
        ssl_certificate_key %s;
        root %s;
    }`, nStream, cert, key, root), h.addr4+":443")
	beforeRules := h.ruleset()

	d := h.doctor(nStream)
	d.wantExit(0)
	p := d.wantBest("alpn-forward", "tls-alpn-01", "", "works")
	d.wantIn("the alpn-forward path's reason", p.Why, "acme-tls/1", "127.0.0.1:8403")
	if p.Settings["listen"] != "127.0.0.1:8403" {
		d.fail("the alpn-forward path listens on %q, not where the stream sends acme-tls/1 (127.0.0.1:8403)", p.Settings["listen"])
	}
	fw := d.check("firewall.inbound", "")
	d.wantIn("the firewall check", fw.text(), "80", "drop")
	if sa := d.path(nStream, "standalone", "http-01"); sa.Firewall != "nftables" {
		d.fail("standalone http-01 behind the drop of :80 is %s with firewall %q, want a window in nftables: %s", sa.Verdict, sa.Firewall, sa.Why)
	}
	if got := h.ruleset(); got != beforeRules {
		t.Errorf("doctor changed the ruleset:\n%s\nbefore:\n%s", got, beforeRules)
	}
	h.issueWith(d.rep.Recommendation.TOML, nStream, nStream)
}

// 4. A policy-drop input chain and nothing on 80/443: standalone through
// a window in nftables; doctor opens nothing itself.
func dropScenario(t *testing.T, w *world) {
	h := w.newHost(t, 4)
	h.firewall(inputDrop())
	beforeRules, beforeListen := h.ruleset(), h.listeners()

	d := h.doctor(nDrop)
	d.wantExit(0)
	p := d.wantBest("standalone", "http-01", "nftables", "works")
	d.wantIn("the standalone path's reason", p.Why, "nftables")
	if p.Settings["firewall"] != "nftables" {
		d.fail("the standalone path's firewall setting is %q, want nftables", p.Settings["firewall"])
	}
	d.wantIn("the firewall check", d.check("firewall.inbound", "").text(), "policy drop")

	if got := h.ruleset(); got != beforeRules {
		t.Errorf("doctor changed the ruleset:\n%s\nbefore:\n%s", got, beforeRules)
	}
	if got := h.listeners(); got != beforeListen {
		t.Errorf("after doctor the host listens on %s, before on %s", got, beforeListen)
	}
	h.issueWith(d.rep.Recommendation.TOML, nDrop, nDrop)
}

// 5. The AAAA trap: the name's block listens on IPv4 only, and the IPv6
// listener is another block answering 404: named, with the fix; after the
// fix, webroot works.
func trapScenario(t *testing.T, w *world) {
	h := w.newHost(t, 5)
	root := site(t, filepath.Join(h.dir, "www"), nTrap)
	cert, key := selfSigned(t, h.dir, nTrap)
	const v4only = "listen 80; # the name's block"
	srv := h.nginx("", fmt.Sprintf(`
    server {
        %[1]s
        listen 443 ssl;
        listen [::]:443 ssl;
        ssl_certificate %[4]s;
        ssl_certificate_key %[5]s;
        server_name %[2]s;
        root %[3]s;
    }
    server {
        listen [::]:80 default_server;
        server_name _;
        return 404;
    }`, v4only, nTrap, root, cert, key), h.addr4+":80", "["+h.addr6+"]:80")
	beforeTree, beforeRules := tree(t, root), h.ruleset()

	d := h.doctor(nTrap)
	d.wantExit(1)
	p := d.wantBest("webroot", "http-01", "", "after-change")
	d.wantIn("the webroot path's reason", p.Why, "IPv6")
	d.wantIn("the webroot path's change", p.Change, "listen [::]:80")
	probe := d.check("http.webroot", nTrap)
	d.wantStatus(probe, "problem")
	d.wantIn("the webroot probe", probe.text(), "AAAA", "IPv6", "404", h.addr6)
	sameTree(t, "after doctor,", beforeTree, tree(t, root))
	if got := h.ruleset(); got != beforeRules {
		t.Errorf("doctor changed the ruleset:\n%s\nbefore:\n%s", got, beforeRules)
	}

	// The fix doctor names: the name's block listens on IPv6 too.
	conf, err := os.ReadFile(srv.Conf)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, srv.Conf, strings.Replace(string(conf), v4only, "listen 80; listen [::]:80;", 1), 0o644)
	h.reload(srv)
	h.waitFor("nginx listening on IPv6 for the name", "["+h.addr6+"]:80", nTrap, "/robots.txt",
		func(st int, _ string) bool { return st == http.StatusOK })

	d2 := h.doctor(nTrap)
	d2.wantExit(0)
	d2.wantBest("webroot", "http-01", "", "works")
	h.issueWith(d.rep.Recommendation.TOML, nTrap, nTrap)
}

// 6. NAT without hairpin: the name's A is the router's public address,
// DNATed to this host, which cannot reach it itself. Doctor names the NAT;
// nothing holds 80/443, so standalone is recommended (rank.go has no rule
// for NAT), and the CA, from outside, reaches it.
func natScenario(t *testing.T, w *world) {
	h := w.newNATHost(t)

	d := h.doctor(nNAT)
	addrs := d.check("dns.addresses", nNAT)
	d.wantStatus(addrs, "warning")
	d.wantIn("the address check", addrs.text(), natPublic, "NAT")
	d.wantExit(0)
	d.wantBest("standalone", "http-01", "", "works")
	h.issueWith(d.rep.Recommendation.TOML, nNAT, nNAT)
}

// 7. CAA forbidding the CA, and CAA naming another account: named, no
// path, exit 1. CAA naming this host's own account blocks nothing.
func caaScenario(t *testing.T, w *world) {
	h := w.newHost(t, 7)

	d := h.doctor(nCAAOther)
	d.wantExit(1)
	if n := len(d.rep.Recommendation.Paths); n != 0 || d.rep.Recommendation.TOML != "" {
		d.fail("with CAA forbidding the CA doctor still recommends %d paths", n)
	}
	d.wantIn("the recommendation's block", d.rep.Recommendation.Blocked, "CAA", "other.example")
	caa := d.check("dns.caa", nCAAOther)
	d.wantStatus(caa, "problem")
	d.wantIn("the CAA check", caa.text(), "other.example")

	acct := regexp.MustCompile(`https://\S+/my-account/\S+`).FindString(h.mustDetour(h.base, "account", "show").stdout)
	if acct == "" {
		t.Fatal("`detour account show` printed no account URL")
	}
	foreign := acct[:strings.LastIndex(acct, "/")+1] + "424242"
	w.update(t, fmt.Sprintf(`%s. CAA 0 issue "%s; accounturi=%s"`, nCAAAcct, "pebble.letsencrypt.org", foreign),
		fmt.Sprintf(`%s. CAA 0 issue "%s; accounturi=%s"`, nCAAOwn, "pebble.letsencrypt.org", acct))
	w.waitResolves(t, nCAAAcct, mdns.TypeCAA, foreign)
	w.waitResolves(t, nCAAOwn, mdns.TypeCAA, acct)

	d = h.doctor(nCAAAcct)
	d.wantExit(1)
	if n := len(d.rep.Recommendation.Paths); n != 0 {
		d.fail("with CAA naming another account doctor still recommends %d paths", n)
	}
	d.wantIn("the recommendation's block", d.rep.Recommendation.Blocked, foreign, acct)

	d = h.doctor(nCAAOwn)
	d.wantExit(0)
	d.wantBest("standalone", "http-01", "", "works")
	h.issueWith(d.rep.Recommendation.TOML, nCAAOwn, nCAAOwn)
}

// 8. No inbound port at all (a prerouting drop, which Detour does not
// open windows in) and a primary that accepts updates signed with the key
// in --tsig-key-file: rfc2136 with that key. The same for a name with no
// address record at all (an internal host), where no web path can work
// whatever the firewall.
func rfc2136Scenario(t *testing.T, w *world) {
	h := w.newHost(t, 8)
	h.firewall(edgeDrop)
	for _, name := range []string{nRFC2136, nInternal} {
		t.Run(strings.TrimSuffix(name, "."+zone), func(t *testing.T) {
			h := h.with(t)
			d := h.doctor(name, "--tsig-key-file", w.keyFile)
			d.wantIn("the RFC 2136 check", d.check("dns.rfc2136", name).text(), keyName)
			if name == nRFC2136 {
				d.wantIn("the firewall check", d.check("firewall.inbound", "").text(), "chain pre policy drop in table inet edge")
				if sa := d.path(name, "standalone", "http-01"); sa.Verdict != "impossible" {
					d.fail("standalone behind a prerouting drop is %s (firewall %q), but Detour opens no window there: %s", sa.Verdict, sa.Firewall, sa.Why)
				}
			}
			d.wantExit(0)
			p := d.wantBest("rfc2136", "dns-01", "", "works")
			d.wantIn("the rfc2136 path's reason", p.Why, keyName)
			if p.Settings["tsig_key"] != keyName {
				d.fail("the rfc2136 path's tsig_key is %q, want %s", p.Settings["tsig_key"], keyName)
			}
			h.issueWith(d.rep.Recommendation.TOML, name, name)
		})
	}
}

// 9. An internal name (no address record) whose _acme-challenge is a
// CNAME to a live acme-dns server where Detour holds the registration:
// acme-dns.
func acmeDNSScenario(t *testing.T, w *world) {
	h := w.newHost(t, 9)
	out := h.mustDetour(h.base, "acme-dns", "register", nAcmeDNS, "--server", w.acmeDNS).stdout
	m := regexp.MustCompile(`_acme-challenge\.` + regexp.QuoteMeta(nAcmeDNS) + `\.\s+CNAME\s+(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("`detour acme-dns register` printed no CNAME:\n%s", out)
	}
	target := m[1]
	w.update(t, "_acme-challenge."+nAcmeDNS+". CNAME "+target)
	w.waitResolves(t, "_acme-challenge."+nAcmeDNS, mdns.TypeCNAME, target)

	d := h.doctor(nAcmeDNS)
	d.wantExit(0)
	p := d.wantBest("acme-dns", "dns-01", "", "works")
	d.wantIn("the acme-dns path's reason", p.Why, strings.TrimSuffix(target, "."))
	if p.Settings["server"] != w.acmeDNS {
		d.fail("the acme-dns path's server is %q, want %s", p.Settings["server"], w.acmeDNS)
	}
	d.wantIn("the acme-dns check", d.check("dns.acme-dns", nAcmeDNS).text(), strings.TrimSuffix(target, "."))
	h.issueWith(d.rep.Recommendation.TOML, nAcmeDNS, nAcmeDNS)
}
