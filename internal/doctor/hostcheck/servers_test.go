package hostcheck

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/doctor/check"
	"github.com/detour-acme/detour/internal/testenv"
)

// The tests below start real servers (Debian's nginx, Apache and
// HAProxy) on free loopback ports and check what Check reads from /proc
// and from the servers' effective configurations.

// checkLocal runs Check on this host for ports, without the firewall and
// with no DMI data.
func checkLocal(t *testing.T, ports []int, names ...string) (Facts, []check.Result) {
	t.Helper()
	return Check(t.Context(), Options{Ports: ports, Names: names, SkipFirewall: true, DMIRoot: t.TempDir()})
}

// result returns the result named name about subject.
func result(t *testing.T, rs []check.Result, name, subject string) check.Result {
	t.Helper()
	for _, r := range rs {
		if r.Name == name && r.Subject == subject {
			return r
		}
	}
	t.Fatalf("no result %s for %q among %v", name, subject, rs)
	return check.Result{}
}

func site(t *testing.T, f Facts, name string, port int) Site {
	t.Helper()
	for _, s := range f.Sites {
		if s.Name == name && s.Port == port {
			return s
		}
	}
	t.Fatalf("no site for %s:%d among %+v", name, port, f.Sites)
	return Site{}
}

// checkHolder checks that every socket on port is held by the server's
// master process.
func checkHolder(t *testing.T, f Facts, port int, srv *testenv.Server, kind string) {
	t.Helper()
	hs := f.Holders[port]
	if len(hs) == 0 {
		t.Fatalf("nothing holds port %d: %+v", port, f.Holders)
	}
	for _, h := range hs {
		if h.PID != srv.MasterPID() || h.Server != kind || h.Addr != "127.0.0.1:"+strconv.Itoa(port) {
			t.Errorf("port %d held by %+v; want %s's master pid %d", port, h, kind, srv.MasterPID())
		}
	}
}

// waitChildren waits until the process pid has n children (the workers a
// server forks after it listens), so that they hold its sockets too.
func waitChildren(t *testing.T, pid, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		count := 0
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if b, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil && parseStatPPID(string(b)) == pid {
				count++
			}
		}
		if count >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d has %d children after 10s, want %d", pid, count, n)
		}
		time.Sleep(10 * time.Millisecond) // polling /proc: no event says a worker started
	}
}

func userLine(nginx bool) string {
	if os.Geteuid() != 0 {
		return ""
	}
	if nginx {
		return "user root;"
	}
	return "User #65534\nGroup #65534"
}

const nginxTestConf = `{{.User}}
worker_processes 2;
error_log {{.Dir}}/logs/error.log warn;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path {{.Dir}}/body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;
    include sites/*.conf;
}
stream {
    map $ssl_preread_alpn_protocols $upstream {
        ~\bacme-tls/1\b  127.0.0.1:8403;
        default          127.0.0.1:8443;
    }
    server {
        listen 127.0.0.1:{{.TLS}};
        ssl_preread on;
        proxy_pass $upstream;
    }
}
`

// nginxSites are included relative to the configuration's directory:
// reading them needs nginx -T with the running master's -c.
const nginxSites = `server {
    listen 127.0.0.1:{{.HTTP}} default_server;
    server_name www.example.test;
    root {{.Root}};
}
server {
    listen 127.0.0.1:{{.HTTP}};
    server_name app.example.test;
    location / { proxy_pass http://127.0.0.1:{{.App}}; }
    location ^~ /.well-known/acme-challenge/ { proxy_pass http://127.0.0.1:8402; }
}
server {
    listen 127.0.0.1:{{.HTTP}};
    server_name api.example.test;
    location / { proxy_pass http://127.0.0.1:{{.App}}; }
}
`

func TestNginxReal(t *testing.T) {
	t.Parallel()
	testenv.RequireFile(t, "/usr/lib/nginx/modules/ngx_stream_module.so", "libnginx-mod-stream")
	dir := testenv.WorldReadableDir(t)
	root := filepath.Join(dir, "www")
	httpPort, tlsPort, app := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	if err := os.MkdirAll(filepath.Join(dir, "sites"), 0o755); err != nil {
		t.Fatal(err)
	}
	sites := strings.NewReplacer("{{.HTTP}}", strconv.Itoa(httpPort), "{{.Root}}", root, "{{.App}}", strconv.Itoa(app)).Replace(nginxSites)
	if err := os.WriteFile(filepath.Join(dir, "sites", "a.conf"), []byte(sites), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := testenv.StartNginx(t, dir, nginxTestConf, map[string]any{"User": userLine(true), "TLS": tlsPort},
		"127.0.0.1:"+strconv.Itoa(httpPort), "127.0.0.1:"+strconv.Itoa(tlsPort))

	waitChildren(t, srv.MasterPID(), 2)
	f, rs := checkLocal(t, []int{httpPort, tlsPort}, "www.example.test", "app.example.test", "api.example.test", "other.example.test")
	checkHolder(t, f, httpPort, srv, ServerNginx)
	checkHolder(t, f, tlsPort, srv, ServerNginx)
	if h := f.Holders[httpPort][0]; len(h.PIDs) != 3 || !strings.HasPrefix(h.Command, "nginx: master process") {
		t.Errorf("holder %+v: want the master and its 2 workers", h)
	}
	if s := site(t, f, "www.example.test", httpPort); s.DocRoot != root || s.Match != "exact" || s.Proxies || s.ACMEForward != "" ||
		s.File != filepath.Join(dir, "sites", "a.conf") || s.Line != 1 {
		t.Errorf("www: %+v", s)
	}
	if s := site(t, f, "other.example.test", httpPort); s.DocRoot != root || s.Match != "default" {
		t.Errorf("other (the default server): %+v", s)
	}
	if s := site(t, f, "app.example.test", httpPort); s.ACMEForward != "http://127.0.0.1:8402" || !s.Proxies || s.DocRoot != "" {
		t.Errorf("app: %+v", s)
	}
	if s := site(t, f, "api.example.test", httpPort); s.ACMEForward != "" || !s.Proxies || s.DocRoot != "" ||
		s.Backend != "http://127.0.0.1:"+strconv.Itoa(app) {
		t.Errorf("api: %+v", s)
	}
	if len(f.Streams) != 1 || f.Streams[0].Port != tlsPort || !f.Streams[0].Preread || f.Streams[0].ALPNRoute != "127.0.0.1:8403" ||
		f.Streams[0].Kind != StreamNginx {
		t.Errorf("streams %+v", f.Streams)
	}
	r := result(t, rs, "web.nginx", "www.example.test")
	ev := strings.Join(r.Evidence, "\n")
	if r.Status != check.Info || !strings.Contains(r.Summary, "document root "+root) || !strings.Contains(ev, "-c "+srv.Conf) ||
		!strings.Contains(ev, "acme-tls/1 routed to 127.0.0.1:8403") {
		t.Errorf("web.nginx:\n%s", r)
	}
	if r := result(t, rs, "port."+strconv.Itoa(httpPort), ""); !strings.Contains(r.Summary, "nginx (pid "+strconv.Itoa(srv.MasterPID())+")") {
		t.Errorf("port result:\n%s", r)
	}
}

const apacheTestConf = `ServerRoot {{.Dir}}
DefaultRuntimeDir {{.Dir}}
PidFile {{.Dir}}/apache2.pid
ErrorLog {{.Dir}}/error.log
Mutex file:{{.Dir}} default
ServerName localhost
{{.User}}
LoadModule mpm_event_module {{.Modules}}/mod_mpm_event.so
LoadModule authz_core_module {{.Modules}}/mod_authz_core.so
LoadModule alias_module {{.Modules}}/mod_alias.so
LoadModule proxy_module {{.Modules}}/mod_proxy.so
LoadModule proxy_http_module {{.Modules}}/mod_proxy_http.so
Listen 127.0.0.1:{{.HTTP}}
# APACHE_RUN_DIR comes from the server's environment (as on Debian, where
# apache2ctl sets it): reading the configuration needs it too.
Define SITE_ROOT ${APACHE_RUN_DIR}/www
<VirtualHost 127.0.0.1:{{.HTTP}}>
    ServerName www.example.test
    ServerAlias *.www.example.test
    DocumentRoot ${SITE_ROOT}
</VirtualHost>
<VirtualHost 127.0.0.1:{{.HTTP}}>
    ServerName app.example.test
    ProxyPass /.well-known/acme-challenge/ http://127.0.0.1:8402/.well-known/acme-challenge/ retry=0
    ProxyPass / http://127.0.0.1:{{.App}}/
</VirtualHost>
<VirtualHost 127.0.0.1:{{.HTTP}}>
    ServerName static.example.test
    Alias /.well-known/acme-challenge/ {{.Root}}/acme/.well-known/acme-challenge/
    ProxyPass /.well-known/acme-challenge/ !
    ProxyPass / http://127.0.0.1:{{.App}}/
</VirtualHost>
`

func TestApacheReal(t *testing.T) {
	t.Parallel()
	dir := testenv.WorldReadableDir(t)
	root := filepath.Join(dir, "www")
	httpPort, app := testenv.FreePort(t), testenv.FreePort(t)
	srv := testenv.StartApache(t, dir, apacheTestConf, map[string]any{"User": userLine(false), "HTTP": httpPort, "Root": root, "App": app},
		"127.0.0.1:"+strconv.Itoa(httpPort))

	waitChildren(t, srv.MasterPID(), 1)
	f, rs := checkLocal(t, []int{httpPort}, "www.example.test", "a.www.example.test", "app.example.test", "static.example.test")
	checkHolder(t, f, httpPort, srv, ServerApache)
	if h := f.Holders[httpPort][0]; len(h.PIDs) < 2 {
		t.Errorf("holder %+v: want the master and its children", h)
	}
	conf, err := os.ReadFile(srv.Conf)
	if err != nil {
		t.Fatal(err)
	}
	line := 1 + strings.Count(string(conf[:strings.Index(string(conf), "<VirtualHost")]), "\n")
	for _, name := range []string{"www.example.test", "a.www.example.test"} {
		if s := site(t, f, name, httpPort); s.DocRoot != root || s.Proxies || s.File != srv.Conf || s.Line != line || s.Match == "default" {
			t.Errorf("%s: %+v", name, s)
		}
	}
	if s := site(t, f, "app.example.test", httpPort); s.ACMEForward != "http://127.0.0.1:8402" || !s.Proxies || s.DocRoot != "" {
		t.Errorf("app: %+v", s)
	}
	if s := site(t, f, "static.example.test", httpPort); s.ACMEStatic != root+"/acme" || s.DocRoot != root+"/acme" || !s.Proxies {
		t.Errorf("static: %+v", s)
	}
	r := result(t, rs, "web.apache", "app.example.test")
	if r.Status != check.Info || !strings.Contains(r.Summary, "already forwards /.well-known/acme-challenge/ to http://127.0.0.1:8402") ||
		!strings.Contains(strings.Join(r.Evidence, "\n"), "-f "+srv.Conf) {
		t.Errorf("web.apache:\n%s", r)
	}
}

const haproxyTestConf = `global
    log stderr format raw local0 warning
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend web
    bind 127.0.0.1:{{.HTTP}}
    acl is_acme path_beg /.well-known/acme-challenge/
    use_backend detour_acme if is_acme
    default_backend app

frontend tls
    bind 127.0.0.1:{{.TLS}}
    mode tcp
    tcp-request inspect-delay 5s
    tcp-request content accept if { req.ssl_hello_type 1 }
    use_backend alpn if { req.ssl_alpn acme-tls/1 }
    default_backend https

backend app
    server app 127.0.0.1:{{.App}}
backend detour_acme
    server detour 127.0.0.1:8402
backend alpn
    mode tcp
    server detour 127.0.0.1:8403
backend https
    mode tcp
    server web 127.0.0.1:8443
`

func TestHAProxyReal(t *testing.T) {
	t.Parallel()
	// The application behind HAProxy: it serves no files.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	appSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("app")) })}
	go appSrv.Serve(ln)
	t.Cleanup(func() { appSrv.Close() })
	app := ln.Addr().(*net.TCPAddr).Port

	dir := testenv.WorldReadableDir(t)
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	srv := testenv.StartHAProxy(t, dir, haproxyTestConf, map[string]any{"HTTP": httpPort, "TLS": tlsPort, "App": app},
		"127.0.0.1:"+strconv.Itoa(httpPort), "127.0.0.1:"+strconv.Itoa(tlsPort))
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(httpPort) + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HAProxy -> app: %s", resp.Status)
	}

	f, rs := checkLocal(t, []int{httpPort, tlsPort}, "app.example.test")
	checkHolder(t, f, httpPort, srv, ServerHAProxy)
	checkHolder(t, f, tlsPort, srv, ServerHAProxy)
	if f.HAProxyConfig != srv.Conf {
		t.Errorf("HAProxyConfig %q, want %q", f.HAProxyConfig, srv.Conf)
	}
	s := site(t, f, "app.example.test", httpPort)
	if !s.Proxies || s.Backend != "http://127.0.0.1:"+strconv.Itoa(app) || s.ACMEForward != "http://127.0.0.1:8402" || s.DocRoot != "" || s.TLS {
		t.Errorf("site %+v", s)
	}
	if len(f.Streams) != 1 || f.Streams[0].Port != tlsPort || f.Streams[0].Kind != StreamHAProxy || !f.Streams[0].Preread ||
		f.Streams[0].ALPNRoute != "127.0.0.1:8403" || f.Streams[0].Default != "127.0.0.1:8443" {
		t.Errorf("streams %+v", f.Streams)
	}
	r := result(t, rs, "web.haproxy", "app.example.test")
	if r.Status != check.Info || !strings.Contains(strings.Join(r.Evidence, "\n"), "haproxy -c: the configuration is valid") {
		t.Errorf("web.haproxy:\n%s", r)
	}
}
