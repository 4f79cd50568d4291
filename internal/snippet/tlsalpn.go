package snippet

// exampleALPNAddr is the example tls-alpn-01 address shown in messages.
const exampleALPNAddr = "127.0.0.1:8403"

// HTTPSPlaceholder is the address the TLSALPNForward snippets give the HTTPS
// server, which must leave port 443; the user replaces it (it is marked
// EDIT) with the address the HTTPS server is moved to.
const HTTPSPlaceholder = "127.0.0.1:8443"

// alpnNginx: ssl_preread reads the ClientHello without terminating TLS
// and the map picks the upstream from the offered ALPN protocols.
func alpnNginx(t target) string {
	up := t.hostPort()
	if t.unix != "" {
		up = "unix:" + t.unix
	}
	return fill(`# Detour: send ACME tls-alpn-01 validation (TLS offering ALPN "acme-tls/1")
# to Detour (@ADDR@) and every other TLS connection, untouched, to your
# HTTPS server.
# Where: at the top level of nginx.conf, outside the http { } block. Needs
# nginx's stream module (Debian: the libnginx-mod-stream package, loaded from
# /etc/nginx/modules-enabled; elsewhere `+"`load_module modules/ngx_stream_module.so;`"+`).
# EDIT: your HTTPS server must leave port 443 for this block: change its
# `+"`listen 443 ssl`"+` to `+"`listen @HTTPS@ ssl`"+`, or replace @HTTPS@ below
# with the address you move it to. It then sees connections from 127.0.0.1;
# add `+"`proxy_protocol on;`"+` here and `+"`proxy_protocol`"+` to its listen line to
# keep the client's address. Drop the `+"`listen [::]:443;`"+` line on a host
# without IPv6.
stream {
    map $ssl_preread_alpn_protocols $detour_tls_upstream {
        ~\bacme-tls/1\b  @UP@;
        default          @HTTPS@;  # EDIT: your HTTPS server
    }
    server {
        listen 443;
        listen [::]:443;
        ssl_preread on;
        proxy_pass $detour_tls_upstream;
    }
}
`, "@ADDR@", t.String(), "@UP@", up, "@HTTPS@", HTTPSPlaceholder)
}

// alpnHAProxy: a TCP frontend that waits for the ClientHello and routes on
// its ALPN extension. It sets its own log format: the HTTP log format that
// Debian's stock defaults section sets cannot apply to a TCP frontend, and
// `haproxy -c` warns about it.
func alpnHAProxy(t target) string {
	server := t.hostPort()
	if t.unix != "" {
		server = "unix@" + t.unix
	}
	return fill(`# Detour: send ACME tls-alpn-01 validation (TLS offering ALPN "acme-tls/1")
# to Detour (@ADDR@) and every other TLS connection, untouched, to your
# HTTPS server.
# Where: at top level of haproxy.cfg, as the only frontend bound to port 443.
# EDIT: the server in https_server is where your HTTPS server listens now
# that it has left port 443; if HAProxy itself terminates TLS, bind that
# frontend to @HTTPS@ instead of :443. Add `+"`send-proxy-v2`"+` to that server line
# (and accept-proxy to its bind) to keep the client's address.
# option tcplog: a defaults section with `+"`option httplog`"+` (Debian's stock
# haproxy.cfg) would make `+"`haproxy -c`"+` warn about this TCP frontend; if your
# configuration sets no log target at all, drop that line.
frontend detour_tls_in
    bind :443
    mode tcp
    option tcplog
    tcp-request inspect-delay 5s
    tcp-request content accept if { req.ssl_hello_type 1 }
    use_backend detour_alpn if { req.ssl_alpn acme-tls/1 }
    default_backend https_server

backend detour_alpn
    mode tcp
    server detour @SERVER@

backend https_server
    mode tcp
    server web @HTTPS@  # EDIT: your HTTPS server
`, "@ADDR@", t.String(), "@SERVER@", server, "@HTTPS@", HTTPSPlaceholder)
}
