// Package config turns Detour's one TOML file (DefaultFile,
// /etc/detour/detour.toml) into a typed, validated Config.
//
// Loading runs in three separate steps: decode (TOML into a mirror of the
// file, reporting unknown keys and wrong types), defaults (fill what the
// file leaves out) and validation (semantic checks, producing the Config).
// Every problem a user can cause is an *Error naming the file, the line and
// the key path, and saying what to change; all problems are reported at
// once, sorted by line. Line numbers come from go-toml's unstable AST, which
// keeps byte offsets. In key paths, entries of arrays are numbered from 0:
// "certificate[0]" is the first [[certificate]].
//
// # File format
//
// Top-level keys (all optional):
//
//	state_dir  = "/var/lib/detour"   # absolute; accounts, certificates, locks
//	email      = "ops@example.com"   # default ACME account contact (RFC 8555 §7.3)
//	default_ca = "letsencrypt"       # default CA: a shortcut, a [ca.NAME] name, or a directory URL
//	key_type   = "ecdsa-p256"        # default certificate key; see acme.ParseKeyType
//	agree_tos  = true                # the user accepts the CA's terms of service
//
// In a file without [ca.NAME] tables the default CA may also be written
// ca = "NAME"; TOML forbids a key ca that is both a string and a table, so
// files with tables use default_ca.
//
// A [ca.NAME] table describes a private CA or one needing External Account
// Binding (RFC 8555 §7.3.4): directory (required unless NAME is a built-in
// shortcut, whose table then only adds to it), staging (the directory
// --dry-run uses), root_bundle (a PEM file of CA certificates trusted for the
// CA's API), eab_kid with eab_hmac_key or eab_hmac_key_file (base64url),
// and email (overrides the global one). Directories must be https; plain
// http is accepted only for 127.0.0.1, ::1 and localhost. Relative file
// names are resolved against the configuration file's directory.
//
// Built-in CA shortcuts (see ResolveCA): letsencrypt, letsencrypt-staging,
// zerossl (needs EAB), google (needs EAB), google-staging (needs EAB),
// buypass and buypass-staging.
//
// A [path.NAME] table defines a validation path, the way one challenge is
// answered. Its kind selects the solver; the kind's spec (declared in the
// kind's own package, listed in package solve/kinds) says which other keys
// apply, their types, defaults and checks, and which are secrets kept out
// of certificate records. `detour paths [KIND]` prints the specs. Every
// kind accepts challenge (the first of its challenges by default); kinds
// that answer on port 80/443 also accept the firewall window settings of
// package firewall. Built-in paths need no table: "standalone-http",
// "standalone-tls-alpn", "side-port", "stateless", "alpn-forward",
// "front-door" and "dns-embedded", each with its kind's defaults.
//
// Each [[certificate]] entry has domains (DNS names, wildcards, IP addresses
// per RFC 8738; parsed with ident.Parse) and optionally name (default: the
// first domain, with "*." spelled "wildcard.", see DefaultName; at most 64
// lower-case letters, digits, '.', '_', '-'), ca, key_type, profile (an ACME
// profile name), preferred_chain (an issuer common name) and paths (path
// names in order of preference, default ["standalone-http"]). A wildcard
// needs a DNS path (RFC 8555 §7.1.3); an IP address needs an http-01 or
// tls-alpn-01 path (RFC 8738 §7); solve.Applicable is the rule.
//
// Settings that are valid but probably a mistake (a private key other users
// can read, metrics served beyond loopback) load with Config.Warnings.
//
// Example holds a complete, commented file.
package config
