package snippet

// The token pattern [-_a-zA-Z0-9]+ is base64url (RFC 8555 §8.1): the same
// set solve.ValidToken accepts, and nothing that could escape a path or a
// response header.

// statelessNginx: `return` with the capture of the regex location.
const statelessNginx = `# Detour: answer ACME http-01 challenges from nginx itself (stateless mode).
# The answer is "<token>.@THUMBPRINT@", the thumbprint being that of
# Detour's ACME account key; if that key changes, rerun
# ` + "`detour snippet stateless`" + `.
# Where: inside each ` + "`server { listen 80; ... }`" + ` block that serves a name Detour
# gets a certificate for.
# Precedence: regex locations are tried after prefix locations, so no
# ` + "`location ^~ /.well-known/...`" + ` may cover this path. A ` + "`return 301`" + ` (or ` + "`rewrite`" + `)
# written directly in the server block runs before any location is chosen
# and would redirect the challenges too: move it into
#     location / { return 301 https://$host$request_uri; }
location ~ ^/\.well-known/acme-challenge/([-_a-zA-Z0-9]+)$ {
    default_type text/plain;
    return 200 "$1.@THUMBPRINT@";
}
`

// statelessApache: mod_rewrite ends the request with status 200 at the
// translate-name stage (before mod_alias redirects), carrying the token in
// an environment variable; ErrorDocument 200 turns it into the body with an
// ap_expr string (Apache 2.4.13 and later).
const statelessApache = `# Detour: answer ACME http-01 challenges from Apache itself (stateless mode).
# The answer is "<token>.@THUMBPRINT@", the thumbprint being that of
# Detour's ACME account key; if that key changes, rerun
# ` + "`detour snippet stateless`" + `.
# Where: inside each <VirtualHost *:80> that serves a name Detour gets a
# certificate for. Needs mod_rewrite (Debian: ` + "`a2enmod rewrite`" + `) and
# Apache 2.4.13 or later; mod_headers, if loaded, sets Content-Type.
# Precedence: mod_rewrite runs before mod_alias, so a ` + "`Redirect / https://...`" + `
# does not catch the challenges; keep these lines above your own
# RewriteRules so that a RewriteRule redirect does not either.
RewriteEngine On
RewriteRule "^/\.well-known/acme-challenge/([-_a-zA-Z0-9]+)$" - [E=DETOUR_ACME_TOKEN:$1,R=200,L]
<Location "/.well-known/acme-challenge/">
    ErrorDocument 200 "%{env:DETOUR_ACME_TOKEN}.@THUMBPRINT@"
    <IfModule mod_headers.c>
        Header always set Content-Type "text/plain"
    </IfModule>
</Location>
`

// statelessHAProxy: `http-request return` with a log-format body (HAProxy
// 2.2 and later).
const statelessHAProxy = `# Detour: answer ACME http-01 challenges from HAProxy itself (stateless mode).
# The answer is "<token>.@THUMBPRINT@", the thumbprint being that of
# Detour's ACME account key; if that key changes, rerun
# ` + "`detour snippet stateless`" + `.
# Where: in the frontend (mode http) that binds port 80. Needs HAProxy 2.2
# or later.
# Precedence: http-request rules run in the order written: put this line
# above any ` + "`http-request redirect`" + `.
    http-request return status 200 content-type text/plain lf-string "%[path,field(-1,/)].@THUMBPRINT@" if { path_reg ^/\.well-known/acme-challenge/[-_a-zA-Z0-9]+$ }
`
