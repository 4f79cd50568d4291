package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/snippet"
	"github.com/detour-acme/detour/internal/testenv"
)

// nginxStreamModule is Debian's nginx stream module (libnginx-mod-stream),
// which ssl_preread needs.
const nginxStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// nginxConf is a complete nginx configuration: a port-80 server with the
// HTTP snippet, an HTTPS server, and optionally the stream block of the
// tls-alpn-01 snippet. The workers run as root where the test does, so
// they can reach anything the test made.
const nginxConf = `{{.User}}
worker_processes 1;
error_log {{.Dir}}/logs/error.log warn;
{{.LoadModule}}
events { worker_connections 512; }
http {
    log_format e2e '$request_uri|$http_user_agent';
    access_log {{.Dir}}/access.log e2e;
    client_body_temp_path {{.Dir}}/body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;
    server {
        listen {{.HTTPAddr}};
        server_name _;
        root {{.Root}};
{{.HTTPSnippet}}
    }
    server {
        listen {{.HTTPSAddr}} ssl;
        server_name _;
        root {{.Root}};
        ssl_certificate {{.Dir}}/cert.pem;
        ssl_certificate_key {{.Dir}}/key.pem;
    }
}
{{.Stream}}
`

// apacheConf is a complete Apache 2.4 configuration: a port-80 virtual
// host with the HTTP snippet and an HTTPS one. Workers run as uid 65534
// where the test runs as root, so what they serve is world-readable.
const apacheConf = `ServerRoot {{.Dir}}
DefaultRuntimeDir {{.Dir}}
PidFile {{.Dir}}/apache2.pid
ErrorLog {{.Dir}}/error.log
LogLevel warn
LogFormat "%U|%{User-Agent}i" e2e
CustomLog {{.Dir}}/access.log e2e
Mutex file:{{.Dir}} default
ServerName localhost
{{.User}}
{{range .Mods}}LoadModule {{.}}_module {{$.Modules}}/mod_{{.}}.so
{{end}}
Listen {{.HTTPAddr}}
Listen {{.HTTPSAddr}} https
SSLSessionCache shmcb:{{.Dir}}/ssl_scache(512000)
<Directory {{.Root}}>
    Require all granted
</Directory>
<VirtualHost {{.HTTPAddr}}>
    ServerName {{.Name}}
    DocumentRoot {{.Root}}
{{.HTTPSnippet}}
</VirtualHost>
<VirtualHost {{.HTTPSAddr}}>
    ServerName {{.Name}}
    DocumentRoot {{.Root}}
    SSLEngine on
    SSLCertificateFile {{.Dir}}/cert.pem
    SSLCertificateKeyFile {{.Dir}}/key.pem
</VirtualHost>
`

// apacheModules are the modules apacheConf loads.
var apacheModules = []string{"mpm_event", "authz_core", "dir", "alias", "rewrite", "headers", "proxy", "proxy_http", "ssl", "socache_shmcb"}

// haproxyConf is a complete HAProxy configuration: a port-80 frontend with
// the HTTP snippet's frontend lines (its backend after), an HTTPS
// frontend, and optionally the tls-alpn-01 snippet. HAProxy answers the
// page itself.
const haproxyConf = `global
    log stderr format raw local0 warning
defaults
    mode http
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend web
    bind {{.HTTPAddr}}
{{.HTTPFront}}
    http-request return status 200 content-type text/plain string "{{.Page}}" if { path / }

frontend https
    bind {{.HTTPSAddr}} ssl crt {{.Dir}}/site.pem
    http-request return status 200 content-type text/plain string "{{.Page}}" if { path / }

{{.HTTPBack}}
{{.Stream}}
`

// startServer starts the site's web server with httpSnip (the block
// `detour snippet http` or `detour snippet stateless` printed, "" for
// none) in its port-80 server and alpnSnip (`detour snippet tls-alpn`,
// "" for none) edited the way its EDIT comments ask: port 443 becomes the
// TLS validation port, the HTTPS placeholder the HTTPS server's address.
func (s *site) startServer(httpSnip, alpnSnip string) {
	t := s.t
	t.Helper()
	if alpnSnip != "" {
		alpnSnip = edit(t, alpnSnip, snippet.HTTPSPlaceholder, s.httpsAddr)
		switch s.server {
		case snippet.Nginx:
			alpnSnip = edit(t, alpnSnip, "listen 443;", "listen "+s.env.TLSAddr+";")
			alpnSnip = edit(t, alpnSnip, "listen [::]:443;", "")
		case snippet.HAProxy:
			alpnSnip = edit(t, alpnSnip, "bind :443", "bind "+s.env.TLSAddr)
		}
	}
	data := map[string]any{
		"HTTPAddr":  s.env.HTTPAddr,
		"HTTPSAddr": s.httpsAddr,
		"Root":      s.root,
		"Name":      s.name,
		"Page":      page,
		"Stream":    alpnSnip,
		"User":      "",
	}
	wait := []string{s.env.HTTPAddr, s.httpsAddr}
	if alpnSnip != "" {
		wait = append(wait, s.env.TLSAddr)
	}
	switch s.server {
	case snippet.Nginx:
		if os.Geteuid() == 0 {
			data["User"] = "user root;"
		}
		data["LoadModule"] = ""
		if alpnSnip != "" {
			testenv.RequireFile(t, nginxStreamModule, "libnginx-mod-stream")
			data["LoadModule"] = "load_module " + nginxStreamModule + ";"
		}
		data["HTTPSnippet"] = indent(httpSnip, 8)
		s.srv = testenv.StartNginx(t, s.dir, nginxConf, data, wait...)
	case snippet.Apache:
		if os.Geteuid() == 0 {
			data["User"] = "User #65534\nGroup #65534"
		}
		data["Mods"] = apacheModules
		data["HTTPSnippet"] = indent(httpSnip, 4)
		s.srv = testenv.StartApache(t, s.dir, apacheConf, data, wait...)
	case snippet.HAProxy:
		front, back, found := strings.Cut(httpSnip, "\nbackend ")
		if found {
			back = "backend " + back
		}
		data["HTTPFront"], data["HTTPBack"] = front, back
		s.srv = testenv.StartHAProxy(t, s.dir, haproxyConf, data, wait...)
	default:
		t.Fatalf("no configuration for server %q", s.server)
	}
}

// edit replaces old by new on the one configuration line (not a comment)
// of snip that holds it, as a user follows the snippet's EDIT comments. A
// snippet that changed shape fails the test instead of silently keeping
// port 443.
func edit(t testing.TB, snip, old, new string) string {
	t.Helper()
	lines := strings.Split(snip, "\n")
	n := 0
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "#") || !strings.Contains(l, old) {
			continue
		}
		lines[i] = strings.Replace(l, old, new, 1)
		n++
	}
	if n != 1 {
		t.Fatalf("the snippet has %d configuration lines holding %q, want one:\n%s", n, old, snip)
	}
	return strings.Join(lines, "\n")
}

// indent prefixes every non-empty line of s with n spaces.
func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n")
}
