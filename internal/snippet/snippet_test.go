package snippet

import (
	"fmt"
	"strings"
	"testing"
)

// checkSnippet asserts the common shape: a leading comment that says where
// the block goes, and each wanted line present (trimmed, exact).
func checkSnippet(t *testing.T, got string, want []string) {
	t.Helper()
	if !strings.HasPrefix(got, "# Detour: ") {
		t.Errorf("snippet does not start with the Detour comment:\n%s", got)
	}
	if !strings.Contains(got, "# Where: ") {
		t.Errorf("snippet does not say where it goes:\n%s", got)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(got, "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, w := range want {
		if !lines[w] {
			t.Errorf("missing line %q in:\n%s", w, got)
		}
	}
}

func TestHTTPForward(t *testing.T) {
	tests := []struct {
		server, addr string
		want         []string
	}{
		{"nginx", "", []string{
			"location ^~ /.well-known/acme-challenge/ {",
			"proxy_pass http://127.0.0.1:8402;",
			"proxy_set_header Host $host;",
		}},
		{"nginx", "unix:/run/detour/http.sock", []string{"proxy_pass http://unix:/run/detour/http.sock:;"}},
		{"nginx", "[::1]:8402", []string{"proxy_pass http://[::1]:8402;"}},
		{"apache", "127.0.0.1:8402", []string{
			`RewriteRule "^/\.well-known/acme-challenge/" - [L]`,
			`ProxyPass "/.well-known/acme-challenge/" "http://127.0.0.1:8402/.well-known/acme-challenge/" retry=0`,
			"ProxyPreserveHost On",
		}},
		{"Apache2", "unix:/run/detour/http.sock", []string{
			`ProxyPass "/.well-known/acme-challenge/" "unix:/run/detour/http.sock|http://localhost/.well-known/acme-challenge/" retry=0`,
		}},
		{"httpd", "", []string{"ProxyPreserveHost On"}},
		{"haproxy", "", []string{
			"acl is_detour_acme path_beg /.well-known/acme-challenge/",
			"use_backend detour_acme if is_detour_acme",
			"backend detour_acme",
			"server detour 127.0.0.1:8402",
		}},
		{"haproxy", "unix:/run/detour/http.sock", []string{"server detour unix@/run/detour/http.sock"}},
		{"caddy", "", []string{"handle /.well-known/acme-challenge/* {", "reverse_proxy 127.0.0.1:8402"}},
		{"caddy", "unix:/run/detour/http.sock", []string{"reverse_proxy unix//run/detour/http.sock"}},
		{"traefik", "", []string{
			"rule: \"PathPrefix(`/.well-known/acme-challenge/`)\"",
			"priority: 100000",
			"passHostHeader: true",
			`- url: "http://127.0.0.1:8402"`,
		}},
		{"lighttpd", "", []string{
			`$HTTP["url"] =~ "^/\.well-known/acme-challenge/" {`,
			`proxy.server = ( "" => ( ( "host" => "127.0.0.1", "port" => 8402 ) ) )`,
		}},
		{"lighttpd", "unix:/run/detour/http.sock", []string{`proxy.server = ( "" => ( ( "host" => "/run/detour/http.sock" ) ) )`}},
	}
	for _, tt := range tests {
		t.Run(tt.server+"_"+tt.addr, func(t *testing.T) {
			got, err := HTTPForward(tt.server, tt.addr)
			if err != nil {
				t.Fatal(err)
			}
			checkSnippet(t, got, tt.want)
		})
	}
}

func TestStateless(t *testing.T) {
	tests := []struct {
		server string
		want   []string
	}{
		{"nginx", []string{
			`location ~ ^/\.well-known/acme-challenge/([-_a-zA-Z0-9]+)$ {`,
			"default_type text/plain;",
			`return 200 "$1.` + testThumbprint + `";`,
		}},
		{"apache", []string{
			`RewriteRule "^/\.well-known/acme-challenge/([-_a-zA-Z0-9]+)$" - [E=DETOUR_ACME_TOKEN:$1,R=200,L]`,
			`ErrorDocument 200 "%{env:DETOUR_ACME_TOKEN}.` + testThumbprint + `"`,
		}},
		{"haproxy", []string{
			`http-request return status 200 content-type text/plain lf-string "%[path,field(-1,/)].` + testThumbprint + `" if { path_reg ^/\.well-known/acme-challenge/[-_a-zA-Z0-9]+$ }`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.server, func(t *testing.T) {
			got, err := Stateless(tt.server, testThumbprint)
			if err != nil {
				t.Fatal(err)
			}
			checkSnippet(t, got, tt.want)
		})
	}
}

func TestTLSALPNForward(t *testing.T) {
	tests := []struct {
		server, addr string
		want         []string
	}{
		{"nginx", "127.0.0.1:8403", []string{
			"stream {",
			"map $ssl_preread_alpn_protocols $detour_tls_upstream {",
			`~\bacme-tls/1\b  127.0.0.1:8403;`,
			"default          127.0.0.1:8443;  # EDIT: your HTTPS server",
			"ssl_preread on;",
			"proxy_pass $detour_tls_upstream;",
		}},
		{"nginx", "unix:/run/detour/alpn.sock", []string{`~\bacme-tls/1\b  unix:/run/detour/alpn.sock;`}},
		{"haproxy", "127.0.0.1:8403", []string{
			"mode tcp",
			"tcp-request inspect-delay 5s",
			"tcp-request content accept if { req.ssl_hello_type 1 }",
			"use_backend detour_alpn if { req.ssl_alpn acme-tls/1 }",
			"server detour 127.0.0.1:8403",
			"server web 127.0.0.1:8443  # EDIT: your HTTPS server",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.server+"_"+tt.addr, func(t *testing.T) {
			got, err := TLSALPNForward(tt.server, tt.addr)
			if err != nil {
				t.Fatal(err)
			}
			checkSnippet(t, got, tt.want)
		})
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name    string
		call    func() (string, error)
		wantErr string
	}{
		{"forward unknown server", func() (string, error) { return HTTPForward("iis", "") },
			`unknown web server "iis": supported are nginx, apache, haproxy, caddy, traefik, lighttpd`},
		{"stateless unknown server", func() (string, error) { return Stateless("caddy", testThumbprint) },
			`unknown web server "caddy": supported are nginx, apache, haproxy`},
		{"alpn unknown server", func() (string, error) { return TLSALPNForward("apache", "127.0.0.1:8403") },
			`unknown web server "apache": supported are nginx, haproxy`},
		{"no port", func() (string, error) { return HTTPForward("nginx", "127.0.0.1") }, "want host:port"},
		{"bad port", func() (string, error) { return HTTPForward("nginx", "127.0.0.1:0") }, "from 1 to 65535"},
		{"unspecified host", func() (string, error) { return HTTPForward("nginx", "0.0.0.0:8402") }, "concrete address"},
		{"empty host", func() (string, error) { return HTTPForward("nginx", ":8402") }, "IP address or a host name"},
		{"injection in host", func() (string, error) { return HTTPForward("nginx", "a;b:8402") }, "IP address or a host name"},
		{"relative socket", func() (string, error) { return HTTPForward("nginx", "unix:run/x.sock") }, "absolute path"},
		{"injection in socket", func() (string, error) { return HTTPForward("nginx", "unix:/run/x;y.sock") }, "absolute path"},
		{"traefik unix", func() (string, error) { return HTTPForward("traefik", "unix:/run/detour/http.sock") }, "Unix socket"},
		{"empty thumbprint", func() (string, error) { return Stateless("nginx", "") }, "thumbprint is empty"},
		{"short thumbprint", func() (string, error) { return Stateless("nginx", "abc") }, "not an account key thumbprint"},
		{"injection in thumbprint", func() (string, error) { return Stateless("nginx", `LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEu";`) }, "not an account key thumbprint"},
		{"alpn without addr", func() (string, error) { return TLSALPNForward("nginx", "") }, "missing Detour's tls-alpn-01 address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.call()
			if err == nil {
				t.Fatalf("no error; got:\n%s", got)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

// caddyFmtIndent checks the indentation rule of `caddy fmt`: each line,
// comments included, is indented by one tab per enclosing block and by
// nothing else. A line ending in "{" opens a block, one starting with "}"
// closes one.
func caddyFmtIndent(snip string) error {
	depth := 0
	for i, line := range strings.Split(strings.TrimRight(snip, "\n"), "\n") {
		text := strings.TrimLeft(line, " \t")
		if text == "" {
			if line != "" {
				return fmt.Errorf("line %d is blank but not empty: %q", i+1, line)
			}
			continue
		}
		if strings.HasPrefix(text, "}") {
			depth--
		}
		if depth < 0 {
			return fmt.Errorf("line %d closes a block that was never opened: %q", i+1, line)
		}
		if want := strings.Repeat("\t", depth) + text; line != want {
			return fmt.Errorf("line %d is indented %q, caddy fmt indents it %q", i+1, line[:len(line)-len(text)], want[:depth])
		}
		if !strings.HasPrefix(text, "#") && strings.HasSuffix(text, "{") {
			depth++
		}
	}
	if depth != 0 {
		return fmt.Errorf("%d blocks left open", depth)
	}
	return nil
}

// The Caddy snippet is indented as `caddy fmt` writes it (tabs), so that
// `caddy validate` does not warn that the Caddyfile is not formatted.
func TestHTTPForwardCaddyFormatted(t *testing.T) {
	for _, addr := range []string{"", "unix:/run/detour/http.sock", "[::1]:8402"} {
		t.Run(addr, func(t *testing.T) {
			snip, err := HTTPForward("caddy", addr)
			if err != nil {
				t.Fatal(err)
			}
			if err := caddyFmtIndent(snip); err != nil {
				t.Errorf("%v in:\n%s", err, snip)
			}
		})
	}
	// The rule itself: spaces are refused, tabs per depth accepted.
	if caddyFmtIndent("a {\n    b\n}\n") == nil {
		t.Error("space indentation accepted")
	}
	if err := caddyFmtIndent("# c {\na {\n\tb {\n\t\t# x\n\t\tc\n\t}\n}\n"); err != nil {
		t.Errorf("tab indentation refused: %v", err)
	}
}

func TestCheckServer(t *testing.T) {
	tests := []struct {
		server    string
		supported []string
		wantErr   string
	}{
		{"nginx", StatelessServers(), ""},
		{" Apache2 ", StatelessServers(), ""},
		{"httpd", StatelessServers(), ""},
		{"lighttpd", StatelessServers(), `unknown web server "lighttpd": supported are nginx, apache, haproxy`},
		{"lighttpd", HTTPForwardServers(), ""},
		{"caddy", TLSALPNForwardServers(), `unknown web server "caddy": supported are nginx, haproxy`},
	}
	for _, tt := range tests {
		t.Run(tt.server, func(t *testing.T) {
			err := CheckServer(tt.server, tt.supported)
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("CheckServer(%q) = %v, want nil", tt.server, err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("CheckServer(%q) = %v, want %q", tt.server, err, tt.wantErr)
			}
		})
	}
}
