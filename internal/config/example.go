package config

import (
	"fmt"
	"strings"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/kinds"
)

// Example is a complete, commented configuration file. It parses and
// validates as it stands (`detour config example` prints it). Its
// [path.NAME] tables come from the kinds' specs: one per kind, with the
// settings that have an example value and their one-line docs.
var Example = exampleHead + examplePaths() + exampleTail

const exampleHead = `# Detour configuration: /etc/detour/detour.toml
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
# The status page (read-only HTML, and /status.json), off unless set. It may
# share metrics_listen's address. Beyond loopback it needs credentials:
# status_user with the bcrypt hash of its password (detour config
# hash-password prints one), or a client certificate over TLS.
# status_listen = "127.0.0.1:9403"
# status_user = "ops"
# status_password_bcrypt = "$2a$12$..."
# status_tls_cert = "/var/lib/detour/live/example/fullchain.pem"
# status_tls_key = "/var/lib/detour/live/example/privkey.pem"
# status_client_ca = "/etc/detour/status-clients-ca.pem"
# Tell someone when a certificate is within notify_days of expiry and its
# last renewal failed (a command, a webhook, or both). The command runs under
# /bin/sh with DETOUR_NAME, DETOUR_DOMAINS, DETOUR_NOT_AFTER, DETOUR_ERROR and
# DETOUR_FAILURES set. The outer '...' are TOML's: the shell sees "...", in
# which it expands $DETOUR_NAME (it would not in single quotes).
# notify_command = 'mail -s "detour: $DETOUR_NAME" ops@example.com'
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

`

const exampleTail = `[[certificate]]
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
group = "haproxy"                                # mode 0640: the group reads the key too
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

// examplePaths renders one [path.NAME] table per kind that names an
// example, and a firewall window around the first kind that can have one.
func examplePaths() string {
	var b strings.Builder
	names := builtinNames()
	fmt.Fprintf(&b, "# Validation paths; a certificate lists them by name, in order of preference.\n")
	fmt.Fprintf(&b, "# Built-ins need no table: %s.\n", strings.Join(quoted(names), ", "))
	fmt.Fprintf(&b, "# `detour paths` lists every kind and setting; `detour paths KIND` one kind.\n")
	window := false
	for _, sp := range kinds.All() {
		if sp.Example == "" {
			continue
		}
		b.WriteString("\n")
		exampleTable(&b, sp, sp.Example, false)
		if sp.Window != nil && !window {
			window = true
			b.WriteString("\n# Port 80 closed by the firewall? Open it only while the CA validates; the\n")
			b.WriteString("# kernel closes it by itself after firewall_timeout even if Detour dies.\n")
			exampleTable(&b, sp, "window", true)
		}
	}
	b.WriteString("\n")
	return b.String()
}

// exampleTable renders the [path.name] table of spec sp: kind, then each
// setting with an example value (the window's too when withWindow).
func exampleTable(b *strings.Builder, sp solve.Spec, name string, withWindow bool) {
	type line struct{ kv, doc string }
	lines := []line{{kv: fmt.Sprintf("kind = %q", sp.Kind)}}
	for _, s := range sp.Settings {
		isWindow := strings.HasPrefix(s.Key, "firewall")
		if s.Example == "" || isWindow != withWindow && isWindow {
			continue
		}
		if withWindow && !isWindow && !s.Required && s.Key != "listen" {
			continue
		}
		doc := s.Doc
		if s.Required {
			doc = "required: " + doc
		}
		lines = append(lines, line{fmt.Sprintf("%s = %q", s.Key, s.Example), doc})
	}
	width := 0
	for _, l := range lines {
		width = max(width, len(l.kv))
	}
	if !withWindow {
		fmt.Fprintf(b, "# %s: %s.\n", sp.Kind, sp.Summary)
	}
	fmt.Fprintf(b, "[path.%s]\n", name)
	for _, l := range lines {
		if l.doc == "" {
			fmt.Fprintf(b, "%s\n", l.kv)
			continue
		}
		fmt.Fprintf(b, "%-*s  # %s\n", width, l.kv, l.doc)
	}
}

// KindExample returns an example [path.NAME] table of kind sp, with its
// firewall window when the kind can have one.
func KindExample(sp solve.Spec) string {
	var b strings.Builder
	name := sp.Example
	if name == "" {
		name = sp.Kind
	}
	exampleTable(&b, sp, name, false)
	if sp.Window != nil {
		b.WriteString("\n")
		exampleTable(&b, sp, name+"-window", true)
	}
	return b.String()
}
