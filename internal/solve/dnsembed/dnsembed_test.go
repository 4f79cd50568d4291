package dnsembed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/dnsserver"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

func challenge(t *testing.T, name, keyAuth string) solve.Challenge {
	t.Helper()
	id, err := ident.Parse(name)
	if err != nil {
		t.Fatal(err)
	}
	return solve.Challenge{Type: solve.DNS01, Identifier: id, Token: "tok", KeyAuthorization: keyAuth}
}

func newSolver(t *testing.T, opts Options) *Solver {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func waitCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// served queries addr for the TXT values of name over TCP.
func served(t *testing.T, addr, name string) []string {
	t.Helper()
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	r, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, dns.TypeTXT), addr)
	if err != nil {
		t.Fatalf("querying %s: %v", addr, err)
	}
	var out []string
	for _, rr := range r.Answer {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	slices.Sort(out)
	return out
}

func assertClosed(t *testing.T, addr string) {
	t.Helper()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("listener on %s still accepts connections after the last CleanUp", addr)
	}
}

func TestNew(t *testing.T) {
	srv := dnsserver.New(dnsserver.Options{})
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"minimal", Options{Server: srv}, true},
		{"no server", Options{}, false},
		{"negative TTL", Options{Server: srv, TTL: -time.Second}, false},
		{"bad listen", Options{Server: srv, Listen: "53"}, false},
		{"bad query address", Options{Server: srv, QueryAddr: "localhost"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("New: %v, want ok=%v", err, tt.ok)
			}
			if err == nil && s.Type() != solve.DNS01 {
				t.Errorf("Type() = %q", s.Type())
			}
		})
	}
}

func TestPresentWaitCleanUp(t *testing.T) {
	srv := dnsserver.New(dnsserver.Options{})
	s := newSolver(t, Options{Server: srv, Listen: "127.0.0.1:0"})
	ctx := waitCtx(t)
	base := challenge(t, "example.test", "tokA.thumb")
	wild := challenge(t, "*.example.test", "tokB.thumb")
	name := base.DNS01Name()
	if name != wild.DNS01Name() || base.DNS01Value() == wild.DNS01Value() {
		t.Fatal("test setup: wildcard and base must share a name and differ in value")
	}

	if err := s.Check(ctx, base.Identifier); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if s.Addr() != "" {
		t.Errorf("Addr() = %q before Present, want empty", s.Addr())
	}
	for _, ch := range []solve.Challenge{base, wild} {
		if err := s.Present(ctx, ch); err != nil {
			t.Fatalf("Present(%s): %v", ch.Identifier, err)
		}
	}
	addr := s.Addr()
	if addr == "" {
		t.Fatal("no listener after Present")
	}
	if err := s.Check(ctx, base.Identifier); err != nil {
		t.Errorf("Check while listening: %v", err)
	}
	var wg sync.WaitGroup
	for _, ch := range []solve.Challenge{base, wild} {
		wg.Go(func() {
			if err := s.Wait(ctx, ch); err != nil {
				t.Errorf("Wait(%s): %v", ch.Identifier, err)
			}
		})
	}
	wg.Wait()
	want := []string{base.DNS01Value(), wild.DNS01Value()}
	slices.Sort(want)
	if got := served(t, addr, name); !slices.Equal(got, want) {
		t.Errorf("served %q, want both values %q", got, want)
	}

	steps := []struct {
		name      string
		ch        solve.Challenge
		remaining []string
		listening bool
	}{
		{"base cleaned, wildcard kept", base, []string{wild.DNS01Value()}, true},
		{"cleaning again is a no-op", base, []string{wild.DNS01Value()}, true},
		{"last cleaned, listener stopped", wild, nil, false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := s.CleanUp(ctx, st.ch); err != nil {
				t.Fatalf("CleanUp: %v", err)
			}
			if got := srv.TXT(name); !slices.Equal(got, st.remaining) {
				t.Errorf("table holds %q, want %q", got, st.remaining)
			}
			if st.listening {
				if got := served(t, addr, name); !slices.Equal(got, st.remaining) {
					t.Errorf("served %q, want %q", got, st.remaining)
				}
				return
			}
			assertClosed(t, addr)
			if s.Addr() != "" {
				t.Errorf("Addr() = %q after the last CleanUp", s.Addr())
			}
		})
	}

	t.Run("listener restarts for the next challenge", func(t *testing.T) {
		if err := s.Present(ctx, base); err != nil {
			t.Fatal(err)
		}
		if err := s.Wait(ctx, base); err != nil {
			t.Errorf("Wait: %v", err)
		}
		if err := s.CleanUp(ctx, base); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSameChallengeTwice(t *testing.T) {
	srv := dnsserver.New(dnsserver.Options{})
	s := newSolver(t, Options{Server: srv})
	ctx := waitCtx(t)
	ch := challenge(t, "example.test", "tok.thumb")
	for range 2 {
		if err := s.Present(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CleanUp(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if got := srv.TXT(ch.DNS01Name()); len(got) != 1 {
		t.Errorf("after one of two CleanUps the table holds %q, want the value still", got)
	}
	if err := s.CleanUp(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if got := srv.TXT(ch.DNS01Name()); len(got) != 0 {
		t.Errorf("after both CleanUps the table holds %q", got)
	}
}

func TestWaitServedElsewhere(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	srv := dnsserver.New(dnsserver.Options{Zones: []string{"example.test."}, Now: clock})
	pc, ln, err := dnsserver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, pc, ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	addr := pc.LocalAddr().String()
	ch := challenge(t, "www.example.test", "tok.thumb")

	tests := []struct {
		name      string
		queryAddr string
	}{
		{"over the network", addr},
		{"table only", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSolver(t, Options{Server: srv, QueryAddr: tt.queryAddr, TTL: time.Minute})
			short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if err := s.Wait(short, ch); err == nil {
				t.Fatal("Wait succeeded before Present")
			} else if tt.queryAddr != "" && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Wait before Present: %v, want a deadline error", err)
			}
			if err := s.Present(waitCtx(t), ch); err != nil {
				t.Fatal(err)
			}
			if err := s.Wait(waitCtx(t), ch); err != nil {
				t.Errorf("Wait: %v", err)
			}
			if err := s.CleanUp(waitCtx(t), ch); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("value expires after TTL", func(t *testing.T) {
		s := newSolver(t, Options{Server: srv, QueryAddr: addr, TTL: time.Minute})
		if err := s.Present(waitCtx(t), ch); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		now = now.Add(time.Minute)
		mu.Unlock()
		if got := served(t, addr, ch.DNS01Name()); len(got) != 0 {
			t.Errorf("served %q after the TTL, want nothing", got)
		}
		if err := s.CleanUp(waitCtx(t), ch); err != nil {
			t.Errorf("CleanUp after expiry: %v", err)
		}
	})
}

func TestCheck(t *testing.T) {
	usedUDP, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer usedUDP.Close()
	usedTCP, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer usedTCP.Close()

	dnsName, _ := ident.Parse("host.example.test")
	ipAddr, _ := ident.Parse("192.0.2.1")
	outside, _ := ident.Parse("host.example.org")
	zoned := dnsserver.New(dnsserver.Options{Zones: []string{"example.test."}})

	tests := []struct {
		name   string
		listen string
		id     ident.Identifier
		is     error
		substr string
	}{
		{"free address", "127.0.0.1:0", dnsName, nil, ""},
		{"served elsewhere", "", dnsName, nil, ""},
		{"IP identifier", "", ipAddr, solve.ErrNotApplicable, "http-01 or tls-alpn-01"},
		{"outside the zones", "", outside, solve.ErrNotApplicable, "outside every zone"},
		{"UDP port in use", usedUDP.LocalAddr().String(), dnsName, syscall.EADDRINUSE, "another program already listens"},
		{"TCP port in use", usedTCP.Addr().String(), dnsName, syscall.EADDRINUSE, "another program already listens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSolver(t, Options{Server: zoned, Listen: tt.listen})
			err := s.Check(context.Background(), tt.id)
			if tt.is == nil {
				if err != nil {
					t.Errorf("Check: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.is) {
				t.Fatalf("Check: %v, want it to wrap %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.substr) {
				t.Errorf("Check: %q does not say %q", err, tt.substr)
			}
		})
	}

	t.Run("Present explains a busy address too", func(t *testing.T) {
		s := newSolver(t, Options{Server: zoned, Listen: usedTCP.Addr().String()})
		ch := challenge(t, "host.example.test", "tok.thumb")
		if err := s.Present(context.Background(), ch); !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("Present: %v, want EADDRINUSE", err)
		}
		if got := zoned.TXT(ch.DNS01Name()); len(got) != 0 {
			t.Errorf("failed Present left %q behind", got)
		}
		if err := s.CleanUp(context.Background(), ch); err != nil {
			t.Errorf("CleanUp after failed Present: %v", err)
		}
	})
}

func TestExplainBind(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		substr string
	}{
		{"permission", &net.OpError{Op: "listen", Net: "udp", Err: os.NewSyscallError("bind", syscall.EACCES)}, "CAP_NET_BIND_SERVICE"},
		{"in use", &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}, "systemd-resolved"},
		{"other", errors.New("boom"), "starting the dns-01 listener: binding UDP :53: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := explainBind(fmt.Errorf("binding UDP :53: %w", tt.err))
			if !strings.Contains(err.Error(), tt.substr) {
				t.Errorf("%q does not mention %q", err, tt.substr)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("%v does not wrap the cause", err)
			}
		})
	}
}

func TestQueryable(t *testing.T) {
	tests := []struct {
		bound  string
		listen string
		want   string
	}{
		{"[::]:53", ":53", "127.0.0.1:53"},
		{"0.0.0.0:53", "0.0.0.0:53", "127.0.0.1:53"},
		{"[::]:53", "[::]:53", "[::1]:53"},
		{"192.0.2.1:5353", "192.0.2.1:5353", "192.0.2.1:5353"},
	}
	for _, tt := range tests {
		t.Run(tt.listen, func(t *testing.T) {
			a, err := net.ResolveUDPAddr("udp", tt.bound)
			if err != nil {
				t.Fatal(err)
			}
			if got := queryable(a, tt.listen); got != tt.want {
				t.Errorf("queryable(%s, %s) = %s, want %s", tt.bound, tt.listen, got, tt.want)
			}
		})
	}
}
