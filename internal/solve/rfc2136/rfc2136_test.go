package rfc2136_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/rfc2136"
	"github.com/detour-acme/detour/internal/testenv"
)

// zones of the test BIND: detour.test, with _acme-challenge.www delegated
// by CNAME into auth.test (another zone on the same server) and a loop.
var zones = []testenv.BINDZone{
	{Name: "detour.test", Records: []string{
		"_acme-challenge.www IN CNAME www.auth.test.",
		"_acme-challenge.loop IN CNAME hop.detour.test.",
		"hop IN CNAME _acme-challenge.loop.detour.test.",
	}},
	{Name: "auth.test"},
}

// newSolver returns a solver updating b with its key; edit changes the
// options first.
func newSolver(t testing.TB, b *testenv.BIND, edit func(*rfc2136.Options)) *rfc2136.Solver {
	t.Helper()
	opts := rfc2136.Options{
		TSIGKey: b.Key, TSIGAlgorithm: b.Algorithm, TSIGSecret: b.Secret,
		Server: b.Addr, Resolver: b.Addr, Nameservers: b.Nameservers, PropagationTimeout: 10 * time.Second,
	}
	if edit != nil {
		edit(&opts)
	}
	s, err := rfc2136.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// txtAt returns the TXT values the server at addr holds at name.
func txtAt(t testing.TB, addr, name string) []string {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(name, mdns.TypeTXT)
	r, err := mdns.Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*mdns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	slices.Sort(out)
	return out
}

func challenge(t testing.TB, name, keyAuth string) solve.Challenge {
	t.Helper()
	id, err := ident.Parse(name)
	if err != nil {
		t.Fatal(err)
	}
	return solve.Challenge{Type: solve.DNS01, Identifier: id, Token: "tok", KeyAuthorization: keyAuth}
}

func TestCheck(t *testing.T) {
	b := testenv.StartBIND(t, testenv.BINDOptions{Zones: zones})
	tests := []struct {
		name    string
		id      string
		edit    func(*rfc2136.Options)
		wantErr string
		notApp  bool
	}{
		{name: "ok", id: "detour.test"},
		{name: "wildcard", id: "*.detour.test"},
		{name: "CNAME into another zone", id: "www.detour.test"},
		{name: "explicit zone and server", id: "a.detour.test", edit: func(o *rfc2136.Options) { o.Zone, o.Server = "detour.test", b.Addr }},
		{name: "IP address", id: "192.0.2.1", notApp: true, wantErr: "dns-01 cannot validate (RFC 8738)"},
		{name: "wrong secret", id: "detour.test", edit: func(o *rfc2136.Options) { o.TSIGSecret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" },
			wantErr: "the server refused the update: wrong TSIG key name or secret for zone detour.test (NOTAUTH/BADSIG); check tsig_key and tsig_secret against the key in named.conf"},
		{name: "wrong key name", id: "detour.test", edit: func(o *rfc2136.Options) { o.TSIGKey = "someone-else" },
			wantErr: "wrong TSIG key name or secret for zone detour.test (NOTAUTH/BADKEY)"},
		{name: "zone not found", id: "nowhere.invalid",
			wantErr: "the zone of nowhere.invalid could not be found (zone not found: no SOA record for _acme-challenge.nowhere.invalid."},
		{name: "CNAME loop", id: "loop.detour.test",
			wantErr: "finding the zone of loop.detour.test: CNAME loop: _acme-challenge.loop.detour.test. -> hop.detour.test. -> _acme-challenge.loop.detour.test."},
		{name: "zone set but record elsewhere", id: "www.detour.test", edit: func(o *rfc2136.Options) { o.Zone = "detour.test" },
			wantErr: "lives at www.auth.test., outside zone detour.test."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := ident.Parse(tt.id)
			if err != nil {
				t.Fatal(err)
			}
			err = newSolver(t, b, tt.edit).Check(t.Context(), id)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Check(%s): %v", tt.id, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Check(%s) = %v\nwant an error containing %q", tt.id, err, tt.wantErr)
			}
			if got := errors.Is(err, solve.ErrNotApplicable); got != tt.notApp {
				t.Errorf("errors.Is(err, ErrNotApplicable) = %v, want %v", got, tt.notApp)
			}
		})
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts rfc2136.Options
		want string
	}{
		{"secret not base64", rfc2136.Options{TSIGKey: "k", TSIGSecret: "%%%", Resolver: "127.0.0.1:53"}, "not valid base64"},
		{"algorithm", rfc2136.Options{TSIGKey: "k", TSIGSecret: "c2VjcmV0", TSIGAlgorithm: "hmac-md5", Resolver: "127.0.0.1:53"}, `"hmac-md5" is not supported`},
		{"secret without key", rfc2136.Options{TSIGSecret: "c2VjcmV0", Resolver: "127.0.0.1:53"}, "without tsig_key"},
		{"server without port", rfc2136.Options{Server: "192.0.2.1", Resolver: "127.0.0.1:53"}, "not host:port"},
		{"resolver without port", rfc2136.Options{Resolver: "127.0.0.1"}, "not host:port"},
		{"zone", rfc2136.Options{Zone: "a..b", Resolver: "127.0.0.1:53"}, "not a DNS name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := rfc2136.New(tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestPresentWaitCleanUp drives the solver by hand against a primary and a
// secondary: the wildcard and base values coexist on both, a CNAME moves
// the record into the other zone, and CleanUp removes exactly one value.
func TestPresentWaitCleanUp(t *testing.T) {
	b := testenv.StartBIND(t, testenv.BINDOptions{Zones: zones, Secondary: true})
	s := newSolver(t, b, nil)
	ctx := t.Context()
	base := challenge(t, "detour.test", "base.key-auth")
	wild := challenge(t, "*.detour.test", "wild.key-auth")
	www := challenge(t, "www.detour.test", "www.key-auth")
	for _, ch := range []solve.Challenge{base, wild, www} {
		if err := s.Present(ctx, ch); err != nil {
			t.Fatalf("Present(%s): %v", ch.Identifier, err)
		}
	}
	for _, ch := range []solve.Challenge{base, wild, www} {
		start := time.Now()
		if err := s.Wait(ctx, ch); err != nil {
			t.Fatalf("Wait(%s): %v", ch.Identifier, err)
		}
		t.Logf("%s: every authoritative server answers after %s", ch.Identifier, time.Since(start))
	}
	both := []string{base.DNS01Value(), wild.DNS01Value()}
	slices.Sort(both)
	for _, addr := range []string{b.Addr, b.SecondaryAddr} {
		if got := txtAt(t, addr, "_acme-challenge.detour.test."); !slices.Equal(got, both) {
			t.Errorf("%s holds %q at _acme-challenge.detour.test., want both values %q", addr, got, both)
		}
		if got := txtAt(t, addr, "www.auth.test."); !slices.Equal(got, []string{www.DNS01Value()}) {
			t.Errorf("%s holds %q at www.auth.test. (the CNAME target), want %q", addr, got, www.DNS01Value())
		}
	}
	if err := s.CleanUp(ctx, wild); err != nil {
		t.Fatal(err)
	}
	if got := txtAt(t, b.Addr, "_acme-challenge.detour.test."); !slices.Equal(got, []string{base.DNS01Value()}) {
		t.Errorf("after cleaning up the wildcard the primary holds %q, want only the base value", got)
	}
	for _, ch := range []solve.Challenge{base, www, wild} { // wild again: already gone, no error
		if err := s.CleanUp(ctx, ch); err != nil {
			t.Errorf("CleanUp(%s): %v", ch.Identifier, err)
		}
	}
	if got := txtAt(t, b.Addr, "_acme-challenge.detour.test."); len(got) != 0 {
		t.Errorf("after CleanUp the primary still holds %q", got)
	}
	if got := txtAt(t, b.Addr, "www.auth.test."); len(got) != 0 {
		t.Errorf("after CleanUp the primary still holds %q at www.auth.test.", got)
	}
}

// TestWaitTimesOut: a value nobody added is reported with what each server
// answers instead, after the propagation timeout.
func TestWaitTimesOut(t *testing.T) {
	b := testenv.StartBIND(t, testenv.BINDOptions{Zones: zones})
	s := newSolver(t, b, func(o *rfc2136.Options) { o.PropagationTimeout = 200 * time.Millisecond })
	err := s.Wait(t.Context(), challenge(t, "never.detour.test", "x"))
	want := fmt.Sprintf("waiting for the dns-01 record of never.detour.test: TXT _acme-challenge.never.detour.test. = %q is not answered by every authoritative server after",
		challenge(t, "never.detour.test", "x").DNS01Value())
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "ns1.detour.test. ("+b.Addr+") answers NXDOMAIN") {
		t.Fatalf("Wait = %v\nwant %q and ns1's NXDOMAIN", err, want)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Wait(ctx, challenge(t, "never.detour.test", "x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with a cancelled context = %v, want context.Canceled", err)
	}
}
