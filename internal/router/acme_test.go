package router

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"net"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/frontdoor"
	"github.com/detour-acme/detour/internal/store"
)

// acmeExtension returns the value of the id-pe-acmeIdentifier extension
// (RFC 8737 §6.1), and whether it is critical.
func acmeExtension(c *x509.Certificate) ([]byte, bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}) {
			return e.Value, e.Critical
		}
	}
	return nil, false
}

// The router answers acme-tls/1 itself with the challenge certificate the
// issuing process presented through the store; other connections still go
// to the backend.
func TestACMEAnsweredLocally(t *testing.T) {
	ctx := context.Background()
	fs, err := store.NewFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	solver, err := frontdoor.New(frontdoor.Options{Store: fs})
	if err != nil {
		t.Fatal(err)
	}
	presented := map[string]solve.Challenge{}
	for _, name := range []string{"app.example.com", "192.0.2.7", "2001:db8::7"} {
		id, err := ident.Parse(name)
		if err != nil {
			t.Fatal(err)
		}
		ch := solve.Challenge{Type: solve.TLSALPN01, Identifier: id, Token: "tok", KeyAuthorization: "tok.thumb-" + name}
		if err := solver.Present(ctx, ch); err != nil {
			t.Fatal(err)
		}
		presented[name] = ch
	}
	b := startBackend(t, tagEcho("B"))
	r, addr := startRouter(t, Options{ACME: frontdoor.NewResponder(fs, nil)}, Route{Backend: b.addr})

	tests := []struct {
		name, sni, id string
		wantErr       bool
	}{
		{name: "dns", sni: "app.example.com", id: "app.example.com"},
		{name: "ipv4 reverse name", sni: "7.2.0.192.in-addr.arpa", id: "192.0.2.7"},
		{name: "ipv6 reverse name", sni: "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", id: "2001:db8::7"},
		{name: "not presented", sni: "other.example.com", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			c := tls.Client(raw, &tls.Config{
				ServerName:         tt.sni,
				NextProtos:         []string{"acme-tls/1"},
				InsecureSkipVerify: true,
			})
			err = c.Handshake()
			if tt.wantErr {
				if err == nil {
					t.Fatal("handshake succeeded without a presented challenge")
				}
				// The router closes the connection after counting it.
				waitClosed(t, raw, 5*time.Second)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			st := c.ConnectionState()
			if st.NegotiatedProtocol != "acme-tls/1" {
				t.Fatalf("negotiated %q", st.NegotiatedProtocol)
			}
			leaf := st.PeerCertificates[0]
			sum := sha256.Sum256([]byte(presented[tt.id].KeyAuthorization))
			want, _ := asn1.Marshal(sum[:])
			if v, crit := acmeExtension(leaf); !crit || !bytes.Equal(v, want) {
				t.Fatalf("acmeIdentifier extension = %x (critical %v), want %x", v, crit, want)
			}
			if err := leaf.VerifyHostname(tt.id); err != nil {
				t.Fatalf("certificate does not name %s: %v", tt.id, err)
			}
			// RFC 8737 §3: nothing follows the handshake.
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("connection stays open after the handshake")
			}
		})
	}
	if st := r.Stats(); st.ACME != 3 || st.Failed != 1 || b.accepted.Load() != 0 {
		t.Errorf("stats = %+v, backend connections %d; want 3 answered, 1 failed, none passed", st, b.accepted.Load())
	}

	// After CleanUp the answer is gone.
	if err := solver.CleanUp(ctx, presented["app.example.com"]); err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "app.example.com", NextProtos: []string{"acme-tls/1"}, InsecureSkipVerify: true})
	if err == nil {
		c.Close()
		t.Fatal("challenge still answered after CleanUp")
	}
	// Ordinary traffic for the same name is untouched.
	hello := captureHello(t, helloCfg("app.example.com", "h2"))
	pc := dial(t, addr, hello)
	if got := readN(t, pc, 1+len(hello)); !bytes.Equal(got[1:], hello) {
		t.Fatal("h2 connection not passed through")
	}
}
