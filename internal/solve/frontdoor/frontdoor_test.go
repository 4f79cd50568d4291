package frontdoor_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/router"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/frontdoor"
	"github.com/detour-acme/detour/internal/store"
)

func newFS(t *testing.T) *store.FS {
	t.Helper()
	fs, err := store.NewFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func mustID(t *testing.T, s string) ident.Identifier {
	t.Helper()
	id, err := ident.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// startRouter runs a Detour router answering from st (nil: no ACME) on
// 127.0.0.1:0 and returns its address.
func startRouter(t *testing.T, st store.Storage) string {
	t.Helper()
	tab, err := router.NewTable(nil)
	if err != nil {
		t.Fatal(err)
	}
	opts := router.Options{DrainTimeout: 100 * time.Millisecond}
	if st != nil {
		opts.ACME = frontdoor.NewResponder(st, nil)
	}
	r, err := router.New(opts, tab)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func TestPresentCleanUp(t *testing.T) {
	ctx := context.Background()
	fs := newFS(t)
	s, err := frontdoor.New(frontdoor.Options{Store: fs, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, key string
	}{
		{"www.example.com", "challenges/tls-alpn-01/www.example.com"},
		{"192.0.2.1", "challenges/tls-alpn-01/192.0.2.1"},
		{"2001:db8::1", "challenges/tls-alpn-01/2001_db8__1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := mustID(t, tt.name)
			ch := solve.Challenge{Type: solve.TLSALPN01, Identifier: id, Token: "tok", KeyAuthorization: "tok.thumb"}
			if got := frontdoor.Key(id); got != tt.key {
				t.Fatalf("Key = %q, want %q", got, tt.key)
			}
			before := time.Now()
			if err := s.Present(ctx, ch); err != nil {
				t.Fatal(err)
			}
			data, err := fs.Load(ctx, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			var rec frontdoor.Record
			if err := json.Unmarshal(data, &rec); err != nil {
				t.Fatal(err)
			}
			if rec.Identifier != id.Value || rec.Type != id.Type || rec.KeyAuthorization != "tok.thumb" {
				t.Errorf("record = %+v", rec)
			}
			if exp := rec.Expires.Sub(before); exp < 59*time.Second || exp > 61*time.Second {
				t.Errorf("expires in %s, want the 1m TTL", exp)
			}
			// A CleanUp for another key authorization (a concurrent issuer
			// whose record was replaced) leaves the record alone.
			other := ch
			other.KeyAuthorization = "other.thumb"
			if err := s.CleanUp(ctx, other); err != nil {
				t.Fatal(err)
			}
			if _, err := fs.Load(ctx, tt.key); err != nil {
				t.Fatalf("record removed by a foreign CleanUp: %v", err)
			}
			if err := s.CleanUp(ctx, ch); err != nil {
				t.Fatal(err)
			}
			if _, err := fs.Load(ctx, tt.key); !errors.Is(err, store.ErrNotExist) {
				t.Fatalf("record still there after CleanUp: %v", err)
			}
			if err := s.CleanUp(ctx, ch); err != nil {
				t.Fatalf("second CleanUp: %v", err)
			}
		})
	}
}

func TestPresentRefuses(t *testing.T) {
	s, err := frontdoor.New(frontdoor.Options{Store: newFS(t)})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ch   solve.Challenge
		want string
	}{
		{"wildcard", solve.Challenge{Identifier: mustID(t, "*.example.com"), KeyAuthorization: "k"}, "dns-01"},
		{"wrong type", solve.Challenge{Type: solve.HTTP01, Identifier: mustID(t, "a.example.com"), KeyAuthorization: "k"}, "tls-alpn-01 only"},
		{"not normalised", solve.Challenge{Identifier: ident.Identifier{Type: "dns", Value: "A.example.com"}, KeyAuthorization: "k"}, "not normalised"},
		{"path in name", solve.Challenge{Identifier: ident.Identifier{Type: "dns", Value: "a/../b.example"}, KeyAuthorization: "k"}, "invalid identifier"},
		{"no key authorization", solve.Challenge{Identifier: mustID(t, "a.example.com")}, "empty key authorization"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Present(context.Background(), tt.ch)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Present = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := frontdoor.New(frontdoor.Options{}); err == nil {
		t.Error("New without a store accepted")
	}
}

func TestCheck(t *testing.T) {
	fs := newFS(t)
	good := startRouter(t, fs)
	otherStore := startRouter(t, newFS(t))
	noACME := startRouter(t, nil) // routes nothing: acme-tls/1 is closed

	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	cert := selfSignedFor(t, "www.example.com")
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"acme-tls/1"}}).Handshake()
			}()
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	tests := []struct {
		name, addr, id, want string
		notApplicable        bool
	}{
		{name: "router", addr: good, id: "www.example.com"},
		{name: "router ip", addr: good, id: "192.0.2.1"},
		{name: "wildcard", addr: good, id: "*.example.com", notApplicable: true},
		{name: "nothing listening", addr: closedAddr, id: "www.example.com", want: "no Detour router answers on " + closedAddr + " "},
		{name: "another tls server", addr: plain.Addr().String(), id: "www.example.com", want: "is not a Detour router"},
		{name: "router without responder", addr: noACME, id: "www.example.com", want: "is not a Detour router"},
		{name: "router on another state dir", addr: otherStore, id: "www.example.com", want: "same --state-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := frontdoor.New(frontdoor.Options{Store: fs, RouterAddr: tt.addr})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Check(context.Background(), mustID(t, tt.id))
			switch {
			case tt.notApplicable:
				if !errors.Is(err, solve.ErrNotApplicable) {
					t.Fatalf("Check = %v, want ErrNotApplicable", err)
				}
			case tt.want == "":
				if err != nil {
					t.Fatal(err)
				}
			case err == nil || !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Check = %v, want an error containing %q", err, tt.want)
			case !strings.Contains(err.Error(), "detour router"):
				t.Fatalf("Check = %v, does not say how to start the router", err)
			}
			keys, err := fs.List(context.Background(), frontdoor.KeyPrefix)
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 0 {
				t.Fatalf("probe records left behind: %v", keys)
			}
		})
	}
}

func TestCheckNoRouterMessage(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()
	s, _ := frontdoor.New(frontdoor.Options{Store: newFS(t), RouterAddr: addr})
	err = s.Check(context.Background(), mustID(t, "www.example.com"))
	_, port, _ := net.SplitHostPort(addr)
	want := "start `detour router --listen :" + port + " --backend 127.0.0.1:8443`, and move your HTTPS server to the backend address"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Check = %v, want it to say %q", err, want)
	}
}
