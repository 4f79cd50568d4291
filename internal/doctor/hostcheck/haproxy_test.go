package hostcheck

import (
	"os"
	"slices"
	"testing"
)

// testdata/haproxy.cfg is Debian 12's stock /etc/haproxy/haproxy.cfg
// with frontends appended: :80 forwarding the challenge path to Detour
// and redirecting the rest to HTTPS except for one host, a TCP frontend
// on :443 routing acme-tls/1, an HTTPS frontend answering challenges
// statelessly, and a stats listener (`haproxy -c` passes on it, with the
// paths it needs changed).
func loadHAProxyTestdata(t *testing.T) *hapModel {
	t.Helper()
	b, err := os.ReadFile("testdata/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	secs, err := parseHAProxy([]string{"/etc/haproxy/haproxy.cfg"}, map[string]string{"/etc/haproxy/haproxy.cfg": string(b)})
	if err != nil {
		t.Fatal(err)
	}
	return newHAPModel(secs)
}

func TestHAProxySites(t *testing.T) {
	m := loadHAProxyTestdata(t)
	tests := []struct {
		name  string
		port  int
		want  Site
		notes bool
	}{
		{"www.example.com", 80, Site{ACMEForward: "http://127.0.0.1:8402"}, false},
		{"api.example.com", 80, Site{ACMEForward: "http://127.0.0.1:8402", Proxies: true, Backend: "unix:/run/api.sock"}, false},
		// No name: the Host condition cannot be decided.
		{"", 80, Site{ACMEForward: "http://127.0.0.1:8402", Proxies: true, Backend: "http://127.0.0.1:3000"}, true},
		{"www.example.com", 8443, Site{TLS: true, Proxies: true, Backend: "http://127.0.0.1:3000",
			ACMEReturn: "http-request return status 200 content-type text/plain lf-string %[path,field(-1,/)].kD8Ay0wq5R1Hf2ZJdJmDfBJHnHPIGXbXMNlrZJF3A8o"}, false},
		{"www.example.com", 8404, Site{}, false},
	}
	for _, tc := range tests {
		sites := m.sites([]string{tc.name}, []int{tc.port})
		if len(sites) != 1 {
			t.Fatalf("%s:%d: %d sites: %+v", tc.name, tc.port, len(sites), sites)
		}
		got, w := sites[0], tc.want
		if got.Server != ServerHAProxy || got.Match != "frontend" || got.Port != tc.port || got.TLS != w.TLS || got.DocRoot != "" ||
			got.ACMEForward != w.ACMEForward || got.ACMERedirect != w.ACMERedirect || got.ACMEReturn != w.ACMEReturn ||
			got.Proxies != w.Proxies || got.Backend != w.Backend || (len(got.Notes) > 0) != tc.notes {
			t.Errorf("%s:%d:\ngot  %+v\nwant %+v (notes %v)", tc.name, tc.port, got, w, tc.notes)
		}
	}
	// Two names, two ports: one site each.
	if s := m.sites([]string{"a.example", "b.example"}, []int{80, 443, 8443}); len(s) != 4 {
		t.Errorf("%d sites, want 4 (443 is TCP)", len(s))
	}
}

func TestHAProxyStreams(t *testing.T) {
	m := loadHAProxyTestdata(t)
	got := m.streams([]int{80, 443})
	want := []Stream{{Server: ServerHAProxy, Port: 443, Kind: StreamHAProxy, Preread: true, ALPNRoute: "127.0.0.1:8403",
		Default: "127.0.0.1:8443", File: "/etc/haproxy/haproxy.cfg", Line: 46}}
	if !slices.Equal(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestHAProxyModes(t *testing.T) {
	cfg := "defaults tcpd\n  mode tcp\ndefaults\n  mode http\nfrontend a\n  bind :443\n  default_backend b\n" +
		"frontend c from tcpd\n  bind :444\n  use_backend d if { req_ssl_alpn -i ACME-TLS/1 }\n  default_backend b\n" +
		"backend b\n  server s1 10.0.0.1:443\n  server s2 10.0.0.2:443\nbackend d\n  server s unix@/run/d.sock\n" +
		"listen web\n  bind :8080\n  mode http\n  server a 10.0.0.3:80 ssl verify none\n"
	secs, err := parseHAProxy([]string{"a.cfg"}, map[string]string{"a.cfg": cfg})
	if err != nil {
		t.Fatal(err)
	}
	m := newHAPModel(secs)
	if s := m.sites(nil, []int{443}); len(s) != 1 || !s[0].Proxies || s[0].Backend != "b" {
		t.Errorf("frontend a (mode http from the last defaults): %+v", s)
	}
	if s := m.sites(nil, []int{8080}); len(s) != 1 || !s[0].Proxies || s[0].Backend != "https://10.0.0.3:80" || s[0].ACMEForward != "" {
		t.Errorf("listen web (its own server): %+v", s)
	}
	st := m.streams([]int{444})
	if len(st) != 1 || st[0].ALPNRoute != "unix:/run/d.sock" || st[0].Default != "b" || st[0].Preread {
		t.Errorf("frontend c (mode tcp from defaults tcpd): %+v", st)
	}
	if _, err := parseHAProxy([]string{"x"}, map[string]string{"x": "  bind :80\n"}); err == nil {
		t.Error("a line outside any section parsed")
	}
}

func TestHAProxyConditions(t *testing.T) {
	sec := &hapSection{Lines: []hapLine{
		{Args: []string{"acl", "acme", "path_beg", "/.well-known/acme-challenge/"}},
		{Args: []string{"acl", "acme", "path", "/x"}},
		{Args: []string{"acl", "www", "hdr_beg(host)", "-i", "www."}},
		{Args: []string{"acl", "dom", "hdr_dom(host)", "-i", "example.com"}},
		{Args: []string{"acl", "wk", "path", "-m", "reg", `^/\.well-known/`}},
		{Args: []string{"acl", "src_ok", "src", "10.0.0.0/8"}},
	}}
	e := newHAPEval(sec)
	req := hapReq{path: acmeProbePath, host: "WWW.example.com", http: true}
	tests := []struct {
		cond string
		want tri
	}{
		{"", triYes},
		{"if acme", triYes},
		{"unless acme", triNo},
		{"if !acme", triNo},
		{"if ! acme", triNo},
		{"if acme www", triYes},
		{"if acme !www", triNo},
		{"if !acme || www", triYes},
		{"if !acme or !www", triNo},
		{"if dom wk", triYes},
		{"if src_ok", triUnknown},
		{"if src_ok || acme", triYes},
		{"if src_ok acme", triUnknown},
		{"if src_ok !acme", triNo},
		{"if { path_sub acme-challenge } { ssl_fc }", triNo},
		{"unless { ssl_fc }", triYes},
		{"if { path,lower -m beg /.well-known/acme-challenge/detour }", triYes},
		{"if TRUE", triYes},
		{"if undefined_acl", triUnknown},
	}
	for _, tc := range tests {
		words := []string{"use_backend", "x"}
		if tc.cond != "" {
			w, _ := splitHAProxyLine(tc.cond)
			words = append(words, w...)
		}
		if got := e.cond(words, req); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.cond, got, tc.want)
		}
	}
}

func TestHAProxyLexing(t *testing.T) {
	got, err := splitHAProxyLine(`  http-request return string "a b\"c" 'd e' f\ g # comment`)
	if err != nil || !slices.Equal(got, []string{"http-request", "return", "string", `a b"c`, "d e", "f g"}) {
		t.Errorf("%q %v", got, err)
	}
	if _, err := splitHAProxyLine(`bind "x`); err == nil {
		t.Error("an unterminated quote split")
	}
	binds := parseHAProxyBind([]string{"bind", ":80,127.0.0.1:8080-8081,ipv6@:::443,unix@/run/x.sock,[::]:8443", "ssl", "crt", "/x.pem"})
	want := []hapBind{{80, true}, {8080, true}, {8081, true}, {443, true}, {8443, true}}
	if !slices.Equal(binds, want) {
		t.Errorf("binds %+v", binds)
	}
	if got := parseHAProxyCmdline("/usr/sbin/haproxy -Ws -f /etc/haproxy/haproxy.cfg -f /etc/haproxy/conf.d -p /run/haproxy.pid -S /run/haproxy-master.sock"); !slices.Equal(got,
		[]string{"/etc/haproxy/haproxy.cfg", "/etc/haproxy/conf.d"}) {
		t.Errorf("%q", got)
	}
}
