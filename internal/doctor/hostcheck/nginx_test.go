package hostcheck

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// testdata/nginx-T.txt is `nginx -T` (nginx 1.22.1, Debian 12) of
// Debian's stock /etc/nginx with its default site and the sites
// example.com (HTTP redirects to HTTPS), app (two blocks proxying, one
// forwarding the challenge path to a side port, one serving it from its
// own root, one with an alias, a leading wildcard, a regex name and a
// stateless answer), and a stream block owning :443 with ssl_preread and
// an acme-tls/1 map. It was captured from a copy under /tmp, the paths
// then rewritten to /etc/nginx.
func loadNginxTestdata(t *testing.T) *nginxModel {
	t.Helper()
	b, err := os.ReadFile("testdata/nginx-T.txt")
	if err != nil {
		t.Fatal(err)
	}
	d, err := splitNginxDump(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if d.Files[0] != "/etc/nginx/nginx.conf" || len(d.Files) != 7 {
		t.Fatalf("files %v", d.Files)
	}
	tree, err := parseNginxDump(d)
	if err != nil {
		t.Fatal(err)
	}
	return newNginxModel(tree, "/usr/share/nginx")
}

func TestNginxSites(t *testing.T) {
	m := loadNginxTestdata(t)
	if len(m.servers) != 9 {
		t.Fatalf("%d server blocks, want 9 (the includes of sites-enabled/* expanded)", len(m.servers))
	}
	tests := []struct {
		name string
		want Site
	}{
		{"example.com", Site{Match: "exact", ACMERedirect: "https://$host$request_uri", File: "/etc/nginx/sites-enabled/example.com", Line: 2}},
		{"WWW.Example.com.", Site{Match: "exact", ACMERedirect: "https://$host$request_uri"}},
		{"app.example.com", Site{Match: "exact", ACMEForward: "http://127.0.0.1:8402", Proxies: true, Backend: "http://127.0.0.1:3000",
			File: "/etc/nginx/sites-enabled/app", Line: 5}},
		{"static.example.net", Site{Match: "exact", DocRoot: "/var/lib/letsencrypt", ACMEStatic: "/var/lib/letsencrypt",
			ACMEDir: "/var/lib/letsencrypt/.well-known/acme-challenge", Proxies: true, Backend: "http://127.0.0.1:3001"}},
		{"alias.example.net", Site{Match: "exact", ACMEDir: "/var/www/acme"}},
		{"a.wild.example.org", Site{Match: "wildcard", DocRoot: "/srv/wild"}},
		{"wild.example.org", Site{Match: "default", DocRoot: "/var/www/html", File: "/etc/nginx/sites-enabled/default", Line: 21}},
		{"abc.re.example", Site{Match: "regex", DocRoot: "/srv/re"}},
		{"stateless.example.com", Site{Match: "exact", ACMEReturn: `200 $1.kD8Ay0wq5R1Hf2ZJdJmDfBJHnHPIGXbXMNlrZJF3A8o`,
			Proxies: true, Backend: "unix:/run/app.sock"}},
		{"other.example", Site{Match: "default", DocRoot: "/var/www/html"}},
		{"", Site{Match: "default", DocRoot: "/var/www/html"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sites := m.sites([]string{tc.name}, []int{80, 443})
			if len(sites) != 1 {
				t.Fatalf("%d sites, want one (port 80; :443 is a stream): %+v", len(sites), sites)
			}
			got := sites[0]
			if got.Port != 80 || got.Server != ServerNginx || got.Name != tc.name || got.TLS {
				t.Errorf("site %+v", got)
			}
			w := tc.want
			if got.Match != w.Match || got.DocRoot != w.DocRoot || got.ACMEForward != w.ACMEForward || got.ACMEStatic != w.ACMEStatic ||
				got.ACMEDir != w.ACMEDir || got.ACMERedirect != w.ACMERedirect || got.ACMEReturn != w.ACMEReturn ||
				got.Proxies != w.Proxies || got.Backend != w.Backend {
				t.Errorf("got  %+v\nwant %+v", got, w)
			}
			if w.File != "" && (got.File != w.File || got.Line != w.Line) {
				t.Errorf("block at %s:%d, want %s:%d", got.File, got.Line, w.File, w.Line)
			}
		})
	}
	// The HTTPS server block on 127.0.0.1:8443.
	sites := m.sites([]string{"example.com"}, []int{8443})
	if len(sites) != 1 || !sites[0].TLS || sites[0].DocRoot != "/var/www/example.com" {
		t.Errorf("example.com on 8443: %+v", sites)
	}
}

func TestNginxStreams(t *testing.T) {
	m := loadNginxTestdata(t)
	got := m.streams([]int{80, 443})
	want := []Stream{{Server: ServerNginx, Port: 443, Kind: StreamNginx, Preread: true, ALPNRoute: "127.0.0.1:8403",
		Default: "127.0.0.1:8443", File: "/etc/nginx/nginx.conf", Line: 93}}
	if !slices.Equal(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if s := m.streams([]int{80}); len(s) != 0 {
		t.Errorf("streams on :80: %+v", s)
	}
}

func TestNginxLocations(t *testing.T) {
	conf := `server {
		root /srv/a;
		location / { proxy_pass http://app; }
		location = /.well-known/acme-challenge/x { return 404; }
		location ~* \.PHP$ { fastcgi_pass unix:/run/php.sock; }
		location /.well-known/ {
			location ~ ^/\.well-known/acme-challenge/ { root /srv/regex; }
		}
		location ^~ /static/ { alias /srv/static/; }
		location ~ \.css$ { return 410; }
		location /img { root /srv/img; location /img/big { alias /srv/big; } }
	}`
	tree, err := parseNginxDump(nginxDump{Files: []string{"/c/nginx.conf"}, Text: map[string]string{"/c/nginx.conf": "http {" + conf + "}"}})
	if err != nil {
		t.Fatal(err)
	}
	m := newNginxModel(tree, "/usr/share/nginx")
	s := m.servers[0]
	tests := []struct {
		path, kind, target, served string
	}{
		{"/", "proxy", "http://app", ""},
		{"/.well-known/acme-challenge/x", "return", "404", ""},
		{acmeProbePath, "static", "", "/srv/regex" + acmeProbePath}, // the nested regex beats the prefix
		{"/index.php", "proxy", "unix:/run/php.sock", ""},
		{"/INDEX.PHP", "proxy", "unix:/run/php.sock", ""},
		{"/static/a.css", "static", "", "/srv/static/a.css"}, // ^~: no regex is tried
		{"/other/a.css", "return", "410", ""},
		{"/img/big/1.png", "static", "", "/srv/big/1.png"},
		{"/img/2.png", "static", "", "/srv/img/img/2.png"},
	}
	for _, tc := range tests {
		h := m.handle(s, tc.path)
		if h.kind != tc.kind || h.target != tc.target || h.served != tc.served {
			t.Errorf("%s: %s %q served %q; want %s %q served %q", tc.path, h.kind, h.target, h.served, tc.kind, tc.target, tc.served)
		}
	}
}

func TestNginxTokenize(t *testing.T) {
	toks, err := tokenizeNginx("a \"b c\" 'd\\'e' f\\;g ~\\.php$ ${x}{y} # comment ; {\n h;")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tk := range toks {
		got = append(got, tk.text)
	}
	want := []string{"a", "b c", "d'e", `f\;g`, `~\.php$`, "${x}", "{", "y", "}", "h", ";"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if toks[len(toks)-1].line != 2 {
		t.Errorf("line %d, want 2", toks[len(toks)-1].line)
	}
	for _, bad := range []string{"a \"b", "server { listen 80;", "}", "a { ; }"} {
		if _, err := parseNginxDump(nginxDump{Files: []string{"/x"}, Text: map[string]string{"/x": bad}}); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestNginxListen(t *testing.T) {
	tests := []struct {
		args []string
		want ngxListen
		ok   bool
	}{
		{[]string{"80"}, ngxListen{Addr: "80", Port: 80}, true},
		{[]string{"[::]:443", "ssl", "default_server"}, ngxListen{Addr: "[::]:443", Port: 443, SSL: true, Def: true}, true},
		{[]string{"127.0.0.1:8080", "default"}, ngxListen{Addr: "127.0.0.1:8080", Port: 8080, Def: true}, true},
		{[]string{"[::1]"}, ngxListen{Addr: "[::1]", Port: 80}, true},
		{[]string{"localhost"}, ngxListen{Addr: "localhost", Port: 80}, true},
		{[]string{"unix:/run/n.sock"}, ngxListen{Addr: "unix:/run/n.sock"}, false},
	}
	for _, tc := range tests {
		got, ok := parseNginxListen(tc.args)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%q: %+v %v; want %+v %v", tc.args, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNginxCmdline(t *testing.T) {
	tests := []struct {
		cmd  string
		want nginxArgs
	}{
		{"nginx: master process /usr/sbin/nginx -g daemon on; master_process on;", nginxArgs{Globals: "daemon on; master_process on;"}},
		{"nginx: master process /usr/sbin/nginx -p /tmp/x -c /tmp/x/nginx.conf -e /tmp/x/logs/error.log -g daemon off; pid /tmp/x/nginx.pid;",
			nginxArgs{Prefix: "/tmp/x", Conf: "/tmp/x/nginx.conf", Globals: "daemon off; pid /tmp/x/nginx.pid;", ErrorLog: "/tmp/x/logs/error.log"}},
		{"nginx: master process nginx", nginxArgs{}},
		{"/usr/sbin/nginx -c /etc/nginx/my conf.conf", nginxArgs{Conf: "/etc/nginx/my conf.conf"}},
	}
	for _, tc := range tests {
		if got := parseNginxCmdline(tc.cmd); got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.cmd, got, tc.want)
		}
	}
	if p := parseNginxPrefix("nginx version: nginx/1.22.1\nconfigure arguments: --with-cc-opt='-g -O2' --prefix=/usr/share/nginx --conf-path=/etc/nginx/nginx.conf"); p != "/usr/share/nginx" {
		t.Errorf("prefix %q", p)
	}
	if !strings.HasPrefix(acmeProbePath, "/.well-known/acme-challenge/") {
		t.Error(acmeProbePath)
	}
}
