package config

import (
	"net"
	"path/filepath"
	"strconv"

	"golang.org/x/crypto/bcrypt"
)

// StatusPage holds the settings of the status page `detour run` serves:
// where it listens, and who may read it when that is beyond this host.
type StatusPage struct {
	// Listen is host:port (status_listen); empty: no page. A port alone
	// means loopback (127.0.0.1:PORT). It may be metrics_listen's
	// address: one listener then serves both.
	Listen string
	// User and PasswordBcrypt are the HTTP basic auth user and the bcrypt
	// hash of the password (status_user, status_password_bcrypt).
	User, PasswordBcrypt string
	// TLSCert and TLSKey serve the page over HTTPS (status_tls_cert,
	// status_tls_key), e.g. the live files of a certificate Detour keeps.
	TLSCert, TLSKey string
	// ClientCA requires a client certificate issued by the CAs in this
	// PEM file (status_client_ca); it needs TLSCert and TLSKey.
	ClientCA string
}

// Protected reports whether the page asks for credentials: a password or
// a client certificate.
func (s StatusPage) Protected() bool {
	return (s.User != "" && s.PasswordBcrypt != "") || s.ClientCA != ""
}

// Top-level keys of the status page.
const (
	keyStatusListen   = "status_listen"
	keyStatusUser     = "status_user"
	keyStatusPassword = "status_password_bcrypt"
	keyStatusTLSCert  = "status_tls_cert"
	keyStatusTLSKey   = "status_tls_key"
	keyStatusClientCA = "status_client_ca"
)

func statusFields(s *StatusPage) []field {
	return []field{
		str(keyStatusListen, &s.Listen),
		str(keyStatusUser, &s.User),
		str(keyStatusPassword, &s.PasswordBcrypt),
		str(keyStatusTLSCert, &s.TLSCert),
		str(keyStatusTLSKey, &s.TLSKey),
		str(keyStatusClientCA, &s.ClientCA),
	}
}

// validateStatus checks the status page's settings. A page reachable
// beyond this host without credentials is an error: it shows every
// certificate's names, state and errors.
func validateStatus(l *errList, sp *StatusPage) {
	if _, err := strconv.Atoi(sp.Listen); err == nil {
		sp.Listen = net.JoinHostPort("127.0.0.1", sp.Listen) // a port alone: loopback
	}
	s := *sp
	if s.Listen == "" {
		for _, k := range []struct{ key, v string }{{keyStatusUser, s.User}, {keyStatusPassword, s.PasswordBcrypt},
			{keyStatusTLSCert, s.TLSCert}, {keyStatusTLSKey, s.TLSKey}, {keyStatusClientCA, s.ClientCA}} {
			if k.v != "" {
				l.add(k.key, "%s has no effect without status_listen; add status_listen = \"127.0.0.1:9403\" or remove it", k.key)
			}
		}
		return
	}
	host, port, err := net.SplitHostPort(s.Listen)
	if err != nil {
		l.add(keyStatusListen, "%q is not host:port; write e.g. status_listen = \"127.0.0.1:9403\" (or the port alone for loopback)", s.Listen)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		l.add(keyStatusListen, "port %q is not a number from 0 to 65535", port)
		return
	}
	if (s.User == "") != (s.PasswordBcrypt == "") {
		l.add(keyStatusUser, "status_user and status_password_bcrypt go together: the user and the bcrypt hash of its password; set both or neither")
	}
	if s.PasswordBcrypt != "" {
		if _, err := bcrypt.Cost([]byte(s.PasswordBcrypt)); err != nil {
			l.add(keyStatusPassword, "is not a bcrypt hash (%v); put the hash, never the password: `detour config hash-password` prints one", err)
		}
	}
	for _, k := range []struct{ key, v string }{{keyStatusTLSCert, s.TLSCert}, {keyStatusTLSKey, s.TLSKey}, {keyStatusClientCA, s.ClientCA}} {
		if k.v != "" && !filepath.IsAbs(k.v) {
			l.add(k.key, "%q is a relative path; use an absolute file name", k.v)
		}
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		l.add(keyStatusTLSCert, "status_tls_cert and status_tls_key go together: the certificate the page is served with and its key; set both or neither")
	}
	if s.ClientCA != "" && s.TLSCert == "" {
		l.add(keyStatusClientCA, "a client certificate is asked for over TLS: set status_tls_cert and status_tls_key too (e.g. %s and %s of a certificate Detour keeps)",
			"/var/lib/detour/live/NAME/fullchain.pem", "/var/lib/detour/live/NAME/privkey.pem")
	}
	if where := beyondLoopback(host); where != "" && !s.Protected() {
		l.add(keyStatusListen, "%q serves the status page %s without credentials: it shows every certificate's names, state and errors to whoever connects. "+
			"Set status_user and status_password_bcrypt, or status_client_ca (with status_tls_cert and status_tls_key); or listen on loopback (status_listen = %q)",
			s.Listen, where, net.JoinHostPort("127.0.0.1", port))
	}
	if s.PasswordBcrypt != "" && s.TLSCert == "" && beyondLoopback(host) != "" {
		l.warn(keyStatusPassword, "the password travels in clear over plain HTTP beyond this host; set status_tls_cert and status_tls_key to serve the page over HTTPS")
	}
}
