package snippet

import (
	"errors"
	"strconv"
)

// forwardNginx: a `location ^~` prefix beats every regex location. nginx's
// implicit single-server upstream is never marked down, so a side port that
// was closed a moment ago is tried again at once.
func forwardNginx(t target) string {
	pass := "http://" + t.hostPort()
	if t.unix != "" {
		pass = "http://unix:" + t.unix + ":"
	}
	return fill(`# Detour: forward ACME http-01 challenges to Detour's side port (@ADDR@).
# Where: inside each `+"`server { listen 80; ... }`"+` block that serves a name Detour
# gets a certificate for.
# Precedence: `+"`location ^~`"+` wins over every regex location, so no other
# location takes these requests. But a `+"`return 301`"+` (or `+"`rewrite`"+`) written
# directly in the server block runs before any location is chosen, wherever
# it stands, and would redirect the challenges too: move it into
#     location / { return 301 https://$host$request_uri; }
location ^~ /.well-known/acme-challenge/ {
    proxy_pass @PASS@;
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-Host $host;
}
`, "@ADDR@", t.String(), "@PASS@", pass)
}

// forwardApache: ProxyPass in server context is applied before mod_alias
// (Redirect); the no-op RewriteRule keeps a mod_rewrite redirect from
// catching challenges. retry=0 keeps mod_proxy from putting the side port
// in an error state for a while after it was found closed (Detour binds it
// only while validating).
func forwardApache(t target) string {
	url := "http://" + t.hostPort() + "/.well-known/acme-challenge/"
	if t.unix != "" {
		url = "unix:" + t.unix + "|http://localhost/.well-known/acme-challenge/"
	}
	return fill(`# Detour: forward ACME http-01 challenges to Detour's side port (@ADDR@).
# Where: inside each <VirtualHost *:80> that serves a name Detour gets a
# certificate for. Needs mod_proxy and mod_proxy_http (Debian:
# `+"`a2enmod proxy proxy_http`"+`).
# Precedence: ProxyPass is applied before mod_alias, so a
# `+"`Redirect / https://...`"+` does not catch the challenges. A RewriteRule
# redirect would: the no-op RewriteRule below stops mod_rewrite for the
# challenges, so keep it above your own RewriteRules.
# retry=0: Detour opens the side port only while validating; it keeps
# mod_proxy from holding an earlier failure against the next request.
<IfModule mod_rewrite.c>
    RewriteEngine On
    RewriteRule "^/\.well-known/acme-challenge/" - [L]
</IfModule>
ProxyPass "/.well-known/acme-challenge/" "@URL@" retry=0
<Location "/.well-known/acme-challenge/">
    ProxyPreserveHost On
</Location>
`, "@ADDR@", t.String(), "@URL@", url)
}

// forwardHAProxy: HAProxy keeps the Host header as it is; a server without
// `check` is never marked down.
func forwardHAProxy(t target) string {
	server := t.hostPort()
	if t.unix != "" {
		server = "unix@" + t.unix
	}
	return fill(`# Detour: forward ACME http-01 challenges to Detour's side port (@ADDR@).
# Where: the two indented lines go in the frontend (mode http) that binds
# port 80, near its top (an acl must come before the lines that use it); the
# backend section goes at top level. HAProxy passes the Host header
# unchanged.
# Precedence: `+"`http-request redirect`"+` runs before any use_backend, whatever
# the order in the file, so make your HTTPS redirect, below the acl, skip
# the challenges:
#     http-request redirect scheme https code 301 unless is_detour_acme
    acl is_detour_acme path_beg /.well-known/acme-challenge/
    use_backend detour_acme if is_detour_acme

backend detour_acme
    mode http
    server detour @SERVER@
`, "@ADDR@", t.String(), "@SERVER@", server)
}

// forwardCaddy: Caddy's reverse_proxy passes the Host header unchanged.
// The block is indented with tabs, as `caddy fmt` writes it: `caddy
// validate` and `caddy run` warn that a Caddyfile is "not formatted"
// otherwise.
func forwardCaddy(t target) string {
	up := t.hostPort()
	if t.unix != "" {
		up = "unix/" + t.unix
	}
	return fill(`# Detour: forward ACME http-01 challenges to Detour's side port (@ADDR@).
# Where: inside the site block that serves your names over plain HTTP, such
# as `+"`http://example.com { ... }`"+` (an explicit http:// site also replaces
# Caddy's automatic HTTP-to-HTTPS redirect for that name). reverse_proxy
# passes the Host header unchanged.
# Precedence: Caddy runs a top-level `+"`redir`"+` before any `+"`handle`"+`; put your
# redirect in a fallback `+"`handle { redir https://{host}{uri} permanent }`"+`,
# which runs only when this more specific handle does not match.
handle /.well-known/acme-challenge/* {
	reverse_proxy @UP@
}
`, "@ADDR@", t.String(), "@UP@", up)
}

// forwardTraefik: a file-provider router on the port-80 entry point.
func forwardTraefik(t target) (string, error) {
	if t.unix != "" {
		return "", errors.New("traefik cannot forward to a Unix socket: give Detour a TCP side port such as \"127.0.0.1:8402\"")
	}
	return fill(`# Detour: forward ACME http-01 challenges to Detour's side port (@ADDR@).
# Where: a file read by Traefik's file provider (providers.file.directory or
# providers.file.filename), such as /etc/traefik/dynamic/detour.yml. "web"
# must be the name of your port-80 entry point. passHostHeader keeps Host.
# Precedence: this router's priority beats your other routers on "web". A
# redirect set on the entry point (entryPoints.web.http.redirections) makes
# a router whose priority may be higher: give it the lowest one, with
#     --entrypoints.web.http.redirections.entrypoint.priority=1
# (or redirect with a redirectScheme middleware on your own routers).
http:
  routers:
    detour-acme:
      entryPoints:
        - web
      rule: "PathPrefix(`+"`/.well-known/acme-challenge/`"+`)"
      priority: 100000
      service: detour-acme
  services:
    detour-acme:
      loadBalancer:
        passHostHeader: true
        servers:
          - url: "http://@HOSTPORT@"
`, "@ADDR@", t.String(), "@HOSTPORT@", t.hostPort()), nil
}

// forwardLighttpd: mod_proxy passes the Host header unchanged.
func forwardLighttpd(t target) string {
	backend := `"host" => "` + t.host + `", "port" => ` + strconv.Itoa(t.port)
	if t.unix != "" {
		backend = `"host" => "` + t.unix + `"`
	}
	return fill(`# Detour: forward ACME http-01 challenges to Detour's side port (@ADDR@).
# Where: lighttpd.conf (or a file in conf-enabled/), at top level or inside
# the block of your port-80 socket. mod_proxy passes the Host header
# unchanged. Drop the server.modules line if mod_proxy is already loaded
# (`+"`lighttpd-enable-mod proxy`"+`).
# Precedence: a url.redirect to https in the same scope matches the
# challenges too; wrap it in
#     $HTTP["url"] !~ "^/\.well-known/acme-challenge/" { url.redirect = ... }
server.modules += ( "mod_proxy" )
$HTTP["url"] =~ "^/\.well-known/acme-challenge/" {
    proxy.server = ( "" => ( ( @BACKEND@ ) ) )
}
`, "@ADDR@", t.String(), "@BACKEND@", backend)
}
