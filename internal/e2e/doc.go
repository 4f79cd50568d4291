// Package e2e holds Detour's end-to-end tests of coexistence with real web
// servers. It has no code of its own, only tests.
//
// Each test starts nginx, Apache or HAProxy from Debian's packages with a
// configuration written to a temporary directory, on loopback ports that
// an in-process Pebble CA validates on (internal/testenv). The servers'
// configurations embed the blocks `detour snippet` prints, so the tests
// prove that those blocks work in a real server. Detour itself runs
// in-process through its command line (cli.Run), with the self-check on,
// so every path is shown to answer through the real server before the CA is
// asked.
//
// For every validation path a web server can share ports 80 and 443 with —
// webroot, side port and stateless (http-01, RFC 8555 §8.3), ALPN forward
// and front door (tls-alpn-01, RFC 8737) — a test keeps requesting pages
// over HTTP and HTTPS while Detour issues and then renews a certificate,
// and asserts that no request failed, that the server's master process
// never restarted, and that after the deploy hook's graceful reload the
// server presents the new certificate.
//
// A missing server binary fails the test with the Debian package to install
// (scripts/test.sh installs them); these tests never skip.
package e2e
