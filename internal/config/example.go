package config

// Example is a complete, commented configuration file. It parses and
// validates as it stands (`detour config example` prints it).
const Example = `# Detour configuration: /etc/detour/detour.toml
# Every key is optional except where a comment says otherwise.

# Where accounts, certificates and locks live (absolute path).
state_dir = "/var/lib/detour"

# Default ACME account contact; the CA sends expiry and policy mail here.
email = "ops@example.com"

# Default CA for certificates: a shortcut (letsencrypt, letsencrypt-staging,
# zerossl, google, google-staging, buypass, buypass-staging), the name of a
# [ca.NAME] table below, or an ACME directory URL.
default_ca = "letsencrypt"

# Default certificate key: ecdsa-p256, ecdsa-p384, rsa2048, rsa3072, rsa4096.
key_type = "ecdsa-p256"

# You accept the terms of service of the CAs you use.
agree_tos = true

# The agent (detour run): Prometheus metrics, off unless set.
# metrics_listen = "127.0.0.1:9402"
# Tell someone when a certificate is within notify_days of expiry and its
# last renewal failed (a command, a webhook, or both).
# notify_command = "mail -s 'detour: $DETOUR_NAME' ops@example.com"
# notify_webhook = "https://hooks.example.com/detour"
# notify_days = 7

# A private CA, or one that needs External Account Binding.
[ca.corp]
directory = "https://acme.corp.example/directory"   # required, https
staging = "https://acme-staging.corp.example/directory"   # used by --dry-run
# root_bundle = "/etc/detour/corp-root.pem"   # PEM roots trusted for this CA's API
eab_kid = "kid-123"                            # EAB: both or neither
eab_hmac_key = "c2VjcmV0LWhtYWMta2V5LWZyb20tdGhlLWNh"   # base64url, as the CA shows it
# eab_hmac_key_file = "/etc/detour/eab.key"    # instead of eab_hmac_key
email = "pki-team@example.com"                 # overrides the global email

# A built-in shortcut that needs EAB gets its credentials from a table of the
# same name; directory and staging come from the shortcut.
# [ca.zerossl]
# eab_kid = "..."
# eab_hmac_key = "..."

# Validation paths; a certificate lists them by name, in order of preference.
# Built-ins need no table: "standalone-http" (:80), "standalone-tls-alpn"
# (:443) and "dns-embedded" (:53).
[path.web]
kind = "standalone"        # binds the port itself
challenge = "http-01"      # or "tls-alpn-01" (default listen ":443")
listen = ":80"             # host:port

[path.dns]
kind = "dns-embedded"      # answers dns-01 from Detour's own DNS responder
listen = "[::]:53"         # delegate _acme-challenge.<name> here with an NS record

# Paths for a web server that keeps ports 80/443 (nginx, Apache, HAProxy...).
[path.docroot]
kind = "webroot"           # writes the token into the served directory
root = "/var/www/html"     # required: the root your web server serves for the names

[path.forward]
kind = "side-port"         # the web server forwards /.well-known/acme-challenge/ here
listen = "127.0.0.1:8402"  # or "unix:/run/detour/http.sock"; see ` + "`detour snippet http`" + `

[path.nofiles]
kind = "stateless"         # the web server answers <token>.<thumbprint> itself;
                           # ` + "`detour snippet stateless`" + ` prints the block

[path.alpn]
kind = "alpn-forward"      # nginx stream / HAProxy send acme-tls/1 here
listen = "127.0.0.1:8403"  # see ` + "`detour snippet tls-alpn`" + `

[path.door]
kind = "front-door"        # ` + "`detour router`" + ` owns :443 and passes the rest on
router = "127.0.0.1:443"   # where the router listens

# Port 80 closed by the firewall? Open it only while the CA validates; the
# kernel closes it by itself after firewall_timeout even if Detour dies.
[path.window]
kind = "standalone"
listen = ":80"
firewall = "nftables"      # or "iptables", "iptables-nft", "ufw", "firewalld", "exec"
firewall_timeout = "10m"

# dns-01 without an inbound port.
[path.bind]
kind = "rfc2136"           # dynamic updates to the zone's primary
tsig_key = "detour-key"
tsig_algorithm = "hmac-sha256"
tsig_secret_file = "/etc/detour/tsig.secret"   # or tsig_secret = "base64..."
# server = "192.0.2.53:53"  # default: the zone's SOA primary

[path.delegated]
kind = "acme-dns"          # one CNAME _acme-challenge.<name> -> an acme-dns zone
server = "https://auth.example.net"            # any acme-dns server, or ` + "`detour dns-server`" + `

[path.cloud]
kind = "dns-provider"      # through the provider's API (lego's providers)
provider = "cloudflare"    # cloudflare, route53, digitalocean, hetzner, gandi, ovh
credentials_file = "/etc/detour/cloudflare.ini"  # api_token = "..."

[path.standing]
kind = "persist"           # dns-persist-01: one standing TXT, no change at renewal
policy = "wildcard"        # ` + "`detour persist-record <name> --wildcard`" + ` prints it

[[certificate]]
name = "example"                                 # default: the first domain
domains = ["example.com", "www.example.com"]
paths = ["forward", "docroot", "web"]            # the first that works is used
deploy_hook = "systemctl reload nginx"           # run after each new certificate
# self_check = false   # skip Detour's own fetch before asking the CA (NAT without hairpin)
reload = ["nginx"]                               # built-in graceful reload (systemd, else the pid file)
fallback_ca = ["buypass"]                        # after after_failures failures in a row on the CA
after_failures = 3

[[certificate.output]]                           # a copy for a service running as another user
path = "/etc/haproxy/certs/example.pem"
format = "combined"                              # cert, chain, fullchain, privkey, combined, pkcs12
owner = "haproxy"
mode = "0640"

[[certificate]]
# name defaults to "wildcard.example.com"
domains = ["*.example.com", "example.com"]
ca = "corp"                                      # default: default_ca
key_type = "ecdsa-p384"                          # default: key_type above
profile = "tlsserver"                            # ACME profile, if the CA offers profiles
preferred_chain = "ISRG Root X1"                 # issuer common name of the chain to prefer
paths = ["dns", "web"]                           # a wildcard needs a dns-01 path

# The front door: ` + "`detour router`" + ` owns :443 and passes everything but
# the CA's acme-tls/1 connections to the web server on a local port.
[router]
listen = ":443"
backend = "127.0.0.1:8443"
proxy_protocol = false

[[certificate]]
name = "lb-address"
domains = ["192.0.2.10"]                         # IP addresses need http-01 or tls-alpn-01
paths = ["standalone-tls-alpn"]
`
