// Package importer moves certificates from other ACME clients to Detour
// with the ACME accounts that obtained them (issue 12): `detour import
// certbot` and `detour import lego`.
//
// Keeping the account (RFC 8555 §7.1.2: its URL and key) is the point.
// The first renewal by Detour then names the certificate it replaces
// (RFC 9773 §5, "replaces", which a CA accepts from the account that
// obtained it only), the CA's rate-limit history stays with the account,
// and records bound to the account URL (a dns-persist-01
// _validation-persist record, a stateless http-01 answer) keep working.
//
// There are three steps, each its own function:
//
//   - ReadCertbot and ReadLego read the other client's directory into a
//     Source: accounts (CA directory, account URL, key), certificates
//     (every version kept, the live one marked) and each certificate's
//     renewal settings. They never write to the directory.
//   - Plan maps a Source onto Detour: per certificate its record and its
//     paths (certbot's webroot and standalone authenticators, its manual
//     authenticator with hooks that are executables as exec paths, its
//     dns-rfc2136 plugin, its nginx/apache installer as a deploy reload;
//     lego's --http, --http.webroot, --tls and --dns flags) or, when no
//     path fits, Unmapped with the reason and a suggestion. A certificate
//     the configuration describes ([[certificate]] of the same name and
//     names) is renewed with the configuration's paths instead.
//   - Apply writes the plan into a state directory: each account under
//     the account prefix its renewals look up, then per certificate its
//     versions in Detour's archive/ and live/ and its record, which names
//     the CA and account that issued it. It overwrites nothing and is
//     idempotent.
//
// Imported certificates are renewed from their records, as certificates
// obtained with `detour issue` flags are: the configuration file is not
// touched. Secrets a path needs (a TSIG key) go to files of the state
// directory, mode 0600, since records keep none.
package importer
