package hostcheck

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// loadApacheTestdata copies testdata/apache (a Debian-like configuration
// with several virtual hosts) to a temporary directory and parses it with
// testdata/apache-S.txt, which is what `apache2 -f .../apache2.conf -t -D
// DUMP_VHOSTS -D DUMP_RUN_CFG -D DUMP_MODULES` (Apache 2.4 of Debian 12)
// printed for it; @ROOT@ stands for the directory in both.
func loadApacheTestdata(t *testing.T) *apacheModel {
	t.Helper()
	dir := t.TempDir()
	err := filepath.WalkDir("testdata/apache", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("testdata/apache", p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), []byte(strings.ReplaceAll(string(b), "@ROOT@", dir)), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile("testdata/apache-S.txt")
	if err != nil {
		t.Fatal(err)
	}
	dump, err := parseApacheDump(strings.ReplaceAll(string(out), "@ROOT@", dir))
	if err != nil {
		t.Fatal(err)
	}
	l := &apacheLoader{serverRoot: dump.ServerRoot, defines: maps(dump.Defines), modules: dump.Modules, readFile: os.ReadFile}
	tree, err := l.load(filepath.Join(dir, "apache2.conf"))
	if err != nil {
		t.Fatal(err)
	}
	return newApacheModel(dump, l.active(tree))
}

func TestApacheDump(t *testing.T) {
	out, err := os.ReadFile("testdata/apache-S.txt")
	if err != nil {
		t.Fatal(err)
	}
	d, err := parseApacheDump(string(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []apacheVhost{
		{Addr: "*:443", Port: 443, Name: "example.com", Default: true, File: "@ROOT@/sites-enabled/example.conf", Line: 11},
		{Addr: "*:80", Port: 80, Name: "localhost", Default: true, File: "@ROOT@/sites-enabled/000-default.conf", Line: 1},
		{Addr: "*:80", Port: 80, Name: "app.example.com", File: "@ROOT@/sites-enabled/app.conf", Line: 1},
		{Addr: "*:80", Port: 80, Name: "example.com", Aliases: []string{"www.example.com"}, File: "@ROOT@/sites-enabled/example.conf", Line: 1},
		{Addr: "*:80", Port: 80, Name: "static.example.net", Aliases: []string{"*.static.example.net"}, File: "@ROOT@/sites-enabled/more.conf", Line: 1},
		{Addr: "*:80", Port: 80, Name: "old.example.org", File: "@ROOT@/sites-enabled/more.conf", Line: 9},
		{Addr: "*:80", Port: 80, Name: "loc.example.net", File: "@ROOT@/sites-enabled/more.conf", Line: 14},
		{Addr: "*:80", Port: 80, Name: "stateless.example.com", File: "@ROOT@/sites-enabled/more.conf", Line: 22},
	}
	if len(d.Vhosts) != len(want) {
		t.Fatalf("%d vhosts: %+v", len(d.Vhosts), d.Vhosts)
	}
	for i := range want {
		g, w := d.Vhosts[i], want[i]
		if g.Addr != w.Addr || g.Port != w.Port || g.Name != w.Name || !slices.Equal(g.Aliases, w.Aliases) || g.Default != w.Default || g.File != w.File || g.Line != w.Line {
			t.Errorf("vhost %d: %+v\nwant %+v", i, g, w)
		}
	}
	if d.ServerRoot != "@ROOT@" || d.MainDocRoot != "/var/www/html" || d.Defines["WEBROOT"] != "/var/www" || !d.Modules["proxy_http_module"] || d.Modules["headers_module"] {
		t.Errorf("dump %+v", d)
	}
	if _, err := parseApacheDump("AH00526: Syntax error on line 3\n"); err == nil {
		t.Error("a dump without virtual hosts parsed")
	}
	// One address, one host, IPv6.
	d, err = parseApacheDump("VirtualHost configuration:\n[::]:8080             v6.example (/etc/apache2/sites-enabled/v6.conf:3)\nServerRoot: \"/etc/apache2\"\n")
	if err != nil || len(d.Vhosts) != 1 || d.Vhosts[0].Port != 8080 || d.Vhosts[0].Line != 3 || !d.Vhosts[0].Default {
		t.Errorf("%+v %v", d, err)
	}
}

func TestApacheSites(t *testing.T) {
	m := loadApacheTestdata(t)
	tests := []struct {
		name string
		port int
		want Site
	}{
		{"app.example.com", 80, Site{Match: "exact", ACMEForward: "http://127.0.0.1:8402", Proxies: true, Backend: "http://127.0.0.1:3000"}},
		{"example.com", 80, Site{Match: "exact", ACMERedirect: "https://%{SERVER_NAME}%{REQUEST_URI}"}},
		{"www.example.com", 80, Site{Match: "exact", ACMERedirect: "https://%{SERVER_NAME}%{REQUEST_URI}"}},
		{"example.com", 443, Site{Match: "exact", TLS: true, DocRoot: "/var/www/example"}},
		{"static.example.net", 80, Site{Match: "exact", DocRoot: "/var/lib/letsencrypt", ACMEStatic: "/var/lib/letsencrypt",
			ACMEDir: "/var/lib/letsencrypt/.well-known/acme-challenge", Proxies: true, Backend: "http://127.0.0.1:3001"}},
		{"a.static.example.net", 80, Site{Match: "wildcard", DocRoot: "/var/lib/letsencrypt", ACMEStatic: "/var/lib/letsencrypt",
			ACMEDir: "/var/lib/letsencrypt/.well-known/acme-challenge", Proxies: true, Backend: "http://127.0.0.1:3001"}},
		{"old.example.org", 80, Site{Match: "exact", ACMERedirect: "https://new.example.org/"}},
		{"loc.example.net", 80, Site{Match: "exact", ACMEForward: "unix:/run/detour.sock"}},
		{"stateless.example.com", 80, Site{Match: "exact", ACMEReturn: `200 "%{env:DETOUR_ACME_TOKEN}.kD8Ay0wq5R1Hf2ZJdJmDfBJHnHPIGXbXMNlrZJF3A8o"`}},
		{"other.example", 80, Site{Match: "default", DocRoot: "/var/www/html"}},
		{"", 80, Site{Match: "default", DocRoot: "/var/www/html"}},
		{"other.example", 443, Site{Match: "default", TLS: true, DocRoot: "/var/www/example"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s:%d", tc.name, tc.port), func(t *testing.T) {
			sites := m.sites([]string{tc.name}, []int{tc.port})
			if len(sites) != 1 {
				t.Fatalf("%d sites: %+v", len(sites), sites)
			}
			got, w := sites[0], tc.want
			if got.Server != ServerApache || got.Port != tc.port || got.Match != w.Match || got.TLS != w.TLS || got.DocRoot != w.DocRoot ||
				got.ACMEForward != w.ACMEForward || got.ACMEStatic != w.ACMEStatic || got.ACMEDir != w.ACMEDir ||
				got.ACMERedirect != w.ACMERedirect || got.ACMEReturn != w.ACMEReturn || got.Proxies != w.Proxies || got.Backend != w.Backend {
				t.Errorf("got  %+v\nwant %+v", got, w)
			}
		})
	}
}

func TestApacheRewriteConds(t *testing.T) {
	cond := func(args ...string) *apNode { return &apNode{Name: "RewriteCond", Args: args} }
	tests := []struct {
		conds []*apNode
		name  string
		tls   bool
		want  tri
	}{
		{nil, "a.example", false, triYes},
		{[]*apNode{cond("%{HTTPS}", "off")}, "a.example", false, triYes},
		{[]*apNode{cond("%{HTTPS}", "!=on")}, "a.example", true, triNo},
		{[]*apNode{cond("%{HTTP_HOST}", "^www\\.", "[NC]")}, "WWW.a.example", false, triYes},
		{[]*apNode{cond("%{SERVER_NAME}", "=b.example", "[OR]"), cond("%{SERVER_NAME}", "=a.example")}, "a.example", false, triYes},
		{[]*apNode{cond("%{SERVER_NAME}", "=b.example", "[OR]"), cond("%{SERVER_NAME}", "=c.example")}, "a.example", false, triNo},
		{[]*apNode{cond("%{SERVER_NAME}", "=a.example")}, "", false, triUnknown},
		{[]*apNode{cond("%{REQUEST_FILENAME}", "!-f")}, "a.example", false, triUnknown},
		{[]*apNode{cond("%{REQUEST_URI}", "^/\\.well-known/"), cond("%{HTTPS}", "on")}, "a.example", false, triNo},
	}
	for i, tc := range tests {
		if got := condsMatch(tc.conds, tc.name, 80, tc.tls, acmeProbePath); got != tc.want {
			t.Errorf("%d: %v, want %v", i, got, tc.want)
		}
	}
}

func TestApacheArgs(t *testing.T) {
	if got := splitApacheArgs(`ProxyPass "/a b/" 'http://x/' retry=0 "q\"x"`); !slices.Equal(got, []string{"ProxyPass", "/a b/", "http://x/", "retry=0", `q"x`}) {
		t.Errorf("%q", got)
	}
	if got := parseApacheCmdline("/usr/sbin/apache2 -d /etc/apache2 -f conf/x.conf -k start -DFOREGROUND -D SSL"); !slices.Equal(got,
		[]string{"-d", "/etc/apache2", "-f", "conf/x.conf", "-D", "FOREGROUND", "-D", "SSL"}) {
		t.Errorf("%q", got)
	}
	root, conf := parseApacheV("Server version: Apache/2.4.71 (Debian)\n -D HTTPD_ROOT=\"/etc/apache2\"\n -D SERVER_CONFIG_FILE=\"apache2.conf\"\n")
	if root != "/etc/apache2" || conf != "apache2.conf" {
		t.Errorf("%q %q", root, conf)
	}
	for _, tc := range []struct {
		loc, path string
		want      bool
	}{{"/x", "/x", true}, {"/x", "/x/y", true}, {"/x", "/xy", false}, {"/x/", "/x/y", true}, {"/", "/a", true}} {
		if got := locationMatch(tc.loc, tc.path); got != tc.want {
			t.Errorf("locationMatch(%q, %q) = %v", tc.loc, tc.path, got)
		}
	}
	l := &apacheLoader{defines: map[string]string{}, readFile: os.ReadFile}
	if _, err := l.parse("x.conf", "<VirtualHost *:80>\n</VirtualHost>\n</VirtualHost>\n"); err == nil {
		t.Error("an unbalanced section parsed")
	}
	ns, err := l.parse("x.conf", "Define A /srv\nDocumentRoot \"${A}/b\" \\\n  extra\n")
	if err != nil || len(ns) != 2 || !slices.Equal(ns[1].Args, []string{"/srv/b", "extra"}) || ns[1].Line != 2 {
		t.Errorf("%+v %v", ns, err)
	}
}
