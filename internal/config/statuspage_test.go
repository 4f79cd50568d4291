package config

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestStatusPage checks the status page's keys: a page reachable beyond
// this host without credentials is refused at the line of status_listen,
// and every half-set pair is named.
func TestStatusPage(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	auth := "status_user = \"ops\"\nstatus_password_bcrypt = \"" + string(hash) + "\"\n"
	tls := "status_tls_cert = \"/etc/detour/status.pem\"\nstatus_tls_key = \"/etc/detour/status.key\"\n"
	type problem struct {
		line int
		key  string
		msg  string
	}
	tests := []struct {
		name    string
		doc     string
		errs    []problem
		warning string // a warning's key, "" for none
	}{
		{"loopback without credentials", "status_listen = \"127.0.0.1:9403\"\n", nil, ""},
		{"localhost without credentials", "status_listen = \"localhost:9403\"\n", nil, ""},
		{"every interface without credentials", "email = \"a@b.c\"\nstatus_listen = \":9403\"\n",
			[]problem{{2, "status_listen", `":9403" serves the status page on every interface without credentials`}}, ""},
		{"public address without credentials", "status_listen = \"192.0.2.7:9403\"\n",
			[]problem{{1, "status_listen", "status_user and status_password_bcrypt, or status_client_ca"}}, ""},
		{"public address with a password over HTTP", "status_listen = \"0.0.0.0:9403\"\n" + auth, nil, "status_password_bcrypt"},
		{"public address with a password over HTTPS", "status_listen = \"0.0.0.0:9403\"\n" + auth + tls, nil, ""},
		{"public address with a client certificate", "status_listen = \"0.0.0.0:9403\"\n" + tls + "status_client_ca = \"/etc/detour/clients.pem\"\n", nil, ""},
		{"user without password", "status_listen = \"127.0.0.1:9403\"\nstatus_user = \"ops\"\n",
			[]problem{{2, "status_user", "go together"}}, ""},
		{"password that is no hash", "status_listen = \"127.0.0.1:9403\"\nstatus_user = \"ops\"\nstatus_password_bcrypt = \"secret\"\n",
			[]problem{{3, "status_password_bcrypt", "detour config hash-password"}}, ""},
		{"client CA without TLS", "status_listen = \"0.0.0.0:9403\"\nstatus_client_ca = \"/etc/detour/clients.pem\"\n",
			[]problem{{2, "status_client_ca", "set status_tls_cert and status_tls_key too"}}, ""},
		{"relative certificate", "status_listen = \"127.0.0.1:9403\"\nstatus_tls_cert = \"status.pem\"\nstatus_tls_key = \"/k\"\n",
			[]problem{{2, "status_tls_cert", "relative path"}}, ""},
		{"credentials without a listener", "status_user = \"ops\"\n",
			[]problem{{1, "status_user", "no effect without status_listen"}}, ""},
		{"not host:port", "status_listen = \"localhost\"\n", []problem{{1, "status_listen", "not host:port"}}, ""},
		{"a port alone", "status_listen = \"9403\"\n", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("detour.toml", []byte(tt.doc))
			if len(tt.errs) == 0 {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				switch {
				case tt.warning == "" && cfg.Warnings != nil:
					t.Errorf("warnings %q, want none", cfg.Warnings)
				case tt.warning != "" && (len(cfg.Warnings) != 1 || cfg.Warnings[0].Key != tt.warning):
					t.Errorf("warnings %q, want one at %s", cfg.Warnings, tt.warning)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse accepted:\n%s", tt.doc)
			}
			var got []*Error
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var ce *Error
				if errors.As(e, &ce) {
					got = append(got, ce)
				}
			}
			if len(got) != len(tt.errs) {
				t.Fatalf("errors %v, want %d", err, len(tt.errs))
			}
			for i, w := range tt.errs {
				if got[i].Line != w.line || got[i].Key != w.key || !strings.Contains(got[i].Msg, w.msg) {
					t.Errorf("error %d = %v, want line %d key %s saying %q", i, got[i], w.line, w.key, w.msg)
				}
				if !strings.HasPrefix(got[i].Error(), "detour.toml:") {
					t.Errorf("error %q does not name the file and line", got[i])
				}
			}
		})
	}
}

// TestStatusListenPort: a port alone is that port on loopback.
func TestStatusListenPort(t *testing.T) {
	cfg, err := Parse("detour.toml", []byte("status_listen = \"9403\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Agent.Status.Listen != "127.0.0.1:9403" {
		t.Errorf("status_listen = %q, want 127.0.0.1:9403", cfg.Agent.Status.Listen)
	}
}

// TestExampleStatusListen switches the example's status_listen on: it
// loads, on loopback, without a warning.
func TestExampleStatusListen(t *testing.T) {
	cfg, err := Parse("example.toml", []byte(uncomment(t, Example, "status_listen")))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Agent.Status.Listen != "127.0.0.1:9403" || cfg.Warnings != nil {
		t.Errorf("status page = %+v, warnings %q", cfg.Agent.Status, cfg.Warnings)
	}
}
