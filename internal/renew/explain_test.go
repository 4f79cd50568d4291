package renew

import (
	"context"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// typed is a solver of one challenge type that answers nothing.
type typed string

func (s typed) Type() string                                 { return string(s) }
func (typed) Check(context.Context, ident.Identifier) error  { return nil }
func (typed) Present(context.Context, solve.Challenge) error { return nil }
func (typed) CleanUp(context.Context, solve.Challenge) error { return nil }

// TestExplainValidation: a CA that could not connect gets the likely
// causes and the fixes, for the details Pebble and Let's Encrypt send;
// other failures are left as the CA said them.
func TestExplainValidation(t *testing.T) {
	const conn, unauth = "urn:ietf:params:acme:error:connection", "urn:ietf:params:acme:error:unauthorized"
	tests := []struct {
		typ, problem, detail string
		want                 []string // none: only the path is added
	}{
		{solve.HTTP01, conn, `Get "http://a.test:80/.well-known/acme-challenge/x": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`,
			[]string{"could not connect to a.test on port 80/tcp", "security group", "NAT without a port forward of 80"}},
		{solve.HTTP01, conn, "192.0.2.1: Timeout during connect (likely firewall problem)", []string{"on port 80/tcp", "cloud or provider firewall"}},
		{solve.TLSALPN01, conn, "192.0.2.1: Timeout during connect (likely firewall problem)", []string{"on port 443/tcp"}},
		{solve.TLSALPN01, unauth, "Failed to connect to 192.0.2.1:443 for the tls-alpn-01 challenge", []string{"on port 443/tcp", "Allow inbound TCP 443"}},
		{solve.HTTP01, conn, "192.0.2.1: Connection refused", []string{"port 80/tcp was refused", "A or AAAA record points at another machine", "forwards port 80"}},
		{solve.HTTP01, unauth, "Invalid response from http://a.test/.well-known/acme-challenge/x: 404", nil},
		{solve.DNS01, conn, "DNS problem: query timed out looking up TXT for _acme-challenge.a.test", nil},
	}
	for _, tc := range tests {
		p := acme.Problem{Type: tc.problem, Detail: tc.detail}
		err := explainValidation(&acme.ValidationError{Identifier: "a.test", Challenge: tc.typ, Problem: &p}, solve.Path{Name: "web", Solver: typed(tc.typ)})
		msg := err.Error()
		if !strings.Contains(msg, tc.detail) || !strings.Contains(msg, "(path web)") {
			t.Errorf("%s %q: the CA's words or the path are lost: %s", tc.typ, tc.detail, msg)
		}
		if len(tc.want) == 0 && strings.Contains(msg, "\n") {
			t.Errorf("%s %q: explained although not a connection failure: %s", tc.typ, tc.detail, msg)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s %q: lacks %q: %s", tc.typ, tc.detail, w, msg)
			}
		}
	}
}
