package dns_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/testenv"
)

// testZones are the zones of the test BIND: detour.test with a child zone,
// a zone CNAMEs point into, and a zone the secondary is never told about.
func testZones() []testenv.BINDZone {
	long := []string{}
	for i := range dns.MaxCNAMEs + 1 {
		long = append(long, fmt.Sprintf("c%d IN CNAME c%d.detour.test.", i, i+1))
	}
	return []testenv.BINDZone{
		{Name: "detour.test", Records: append([]string{
			"child IN NS ns1.detour.test.",
			"_acme-challenge.www IN CNAME www.auth.test.",
			"_acme-challenge.loop IN CNAME hop.detour.test.",
			"hop IN CNAME _acme-challenge.loop.detour.test.",
		}, long...)},
		{Name: "child.detour.test"},
		{Name: "auth.test"},
		{Name: "stale.test", NoNotify: true},
	}
}

func startBIND(t *testing.T) (*testenv.BIND, *dns.Client) {
	t.Helper()
	b := testenv.StartBIND(t, testenv.BINDOptions{Zones: testZones(), Secondary: true})
	c, err := dns.New(dns.Options{Resolver: b.Addr, Nameservers: b.Nameservers, QueryTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return b, c
}

// TestBIND runs the client against a real primary and secondary BIND9.
func TestBIND(t *testing.T) {
	b, c := startBIND(t)
	key := &dns.TSIGKey{Name: b.Key, Algorithm: b.Algorithm, Secret: b.Secret}
	u, err := dns.NewUpdater(dns.UpdaterOptions{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("FindZone", func(t *testing.T) { testFindZone(t, c) })
	t.Run("UpdateAndWait", func(t *testing.T) { testUpdateAndWait(t, b, c, u) })
	t.Run("UpdateErrors", func(t *testing.T) { testUpdateErrors(t, b) })
	t.Run("WaitNamesLaggingServer", func(t *testing.T) { testWaitLagging(t, b, c, u) })
}

func testFindZone(t *testing.T, c *dns.Client) {
	ctx := t.Context()
	tests := []struct {
		name, ask string
		want      dns.Zone
		wantErr   string
	}{
		{name: "apex", ask: "_acme-challenge.detour.test",
			want: dns.Zone{Name: "detour.test.", Primary: "ns1.detour.test.", Target: "_acme-challenge.detour.test.", Chain: []string{"_acme-challenge.detour.test."}}},
		{name: "deep name that does not exist", ask: "_acme-challenge.a.b.detour.test.",
			want: dns.Zone{Name: "detour.test.", Primary: "ns1.detour.test.", Target: "_acme-challenge.a.b.detour.test.", Chain: []string{"_acme-challenge.a.b.detour.test."}}},
		{name: "child zone", ask: "_acme-challenge.x.child.detour.test.",
			want: dns.Zone{Name: "child.detour.test.", Primary: "ns1.detour.test.", Target: "_acme-challenge.x.child.detour.test.", Chain: []string{"_acme-challenge.x.child.detour.test."}}},
		{name: "CNAME into another zone", ask: "_acme-challenge.WWW.detour.test.",
			want: dns.Zone{Name: "auth.test.", Primary: "ns1.detour.test.", Target: "www.auth.test.", Chain: []string{"_acme-challenge.www.detour.test.", "www.auth.test."}}},
		{name: "CNAME loop", ask: "_acme-challenge.loop.detour.test.",
			wantErr: "CNAME loop: _acme-challenge.loop.detour.test. -> hop.detour.test. -> _acme-challenge.loop.detour.test.; fix the CNAME records"},
		{name: "CNAME chain too long", ask: "c0.detour.test.", wantErr: "CNAME chain longer than 8 names: c0.detour.test. -> c1.detour.test."},
		{name: "no zone", ask: "_acme-challenge.nowhere.invalid.", wantErr: "zone not found: no SOA record for _acme-challenge.nowhere.invalid. or any parent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z, err := c.FindZone(ctx, tt.ask)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("FindZone(%s) = %+v, %v; want error containing %q", tt.ask, z, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("FindZone(%s): %v", tt.ask, err)
			}
			if fmt.Sprint(z) != fmt.Sprint(tt.want) {
				t.Errorf("FindZone(%s) = %+v, want %+v", tt.ask, z, tt.want)
			}
		})
	}
	var ce *dns.CNAMEError
	if _, err := c.FindZone(ctx, "_acme-challenge.loop.detour.test."); !errors.As(err, &ce) || !ce.Loop {
		t.Errorf("a loop is not a *CNAMEError with Loop set: %v", err)
	}
	if _, err := c.FindZone(ctx, "nowhere.invalid."); !errors.Is(err, dns.ErrZoneNotFound) {
		t.Errorf("a missing zone is not ErrZoneNotFound: %v", err)
	}
	// The primary's address comes from the SOA MNAME's A record.
	if got, err := c.PrimaryAddr(ctx, dns.Zone{Name: "auth.test.", Primary: "ns1.detour.test."}, "53"); err != nil || got != "127.0.0.1:53" {
		t.Errorf("PrimaryAddr = %q, %v; want 127.0.0.1:53", got, err)
	}
	if _, err := c.PrimaryAddr(ctx, dns.Zone{Name: "auth.test.", Primary: "nohost.detour.test."}, "53"); err == nil ||
		!strings.Contains(err.Error(), "nohost.detour.test. has no A or AAAA record") {
		t.Errorf("PrimaryAddr of a name without address = %v", err)
	}
}

// txtAt returns the TXT values server addr holds at name.
func txtAt(t *testing.T, addr, name string) []string {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(name, mdns.TypeTXT)
	m.RecursionDesired = false
	r, err := mdns.Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, rr := range r.Answer {
		out = append(out, strings.Join(rr.(*mdns.TXT).Txt, ""))
	}
	return out
}

func testUpdateAndWait(t *testing.T, b *testenv.BIND, c *dns.Client, u *dns.Updater) {
	ctx := t.Context()
	if err := u.Probe(ctx, b.Addr, "detour.test."); err != nil {
		t.Fatalf("Probe with the right key: %v", err)
	}
	// A wildcard and its base name share one owner name: both values must
	// coexist, and removing one leaves the other.
	name := "_acme-challenge.wild.detour.test."
	long := strings.Repeat("x", 300) // more than one character-string
	for _, v := range []string{"value-one", "value-two", long} {
		start := time.Now()
		if err := u.AddTXT(ctx, b.Addr, dns.TXT{Zone: "detour.test.", Name: name, Value: v, TTL: 60}); err != nil {
			t.Fatal(err)
		}
		if err := c.Wait(ctx, name, v, dns.WaitOptions{Timeout: 10 * time.Second}); err != nil {
			t.Fatal(err)
		}
		t.Logf("%.10s… answered by primary and secondary %s after the update was sent", v, time.Since(start))
	}
	if err := u.RemoveTXT(ctx, b.Addr, dns.TXT{Zone: "detour.test.", Name: name, Value: "value-one"}); err != nil {
		t.Fatal(err)
	}
	// Removing a value that is not there is no error.
	if err := u.RemoveTXT(ctx, b.Addr, dns.TXT{Zone: "detour.test.", Name: name, Value: "never-added"}); err != nil {
		t.Fatalf("removing a missing value: %v", err)
	}
	got := strings.Join(txtAt(t, b.Addr, name), ",")
	if got != "value-two,"+long && got != long+",value-two" {
		t.Errorf("after removing value-one the primary holds %q, want value-two and the long value", got)
	}
	// Through the CNAME: Wait follows it when no zone is given.
	if err := u.AddTXT(ctx, b.Addr, dns.TXT{Zone: "auth.test.", Name: "www.auth.test.", Value: "via-cname", TTL: 60}); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(ctx, "_acme-challenge.www.detour.test.", "via-cname", dns.WaitOptions{Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if got := txtAt(t, b.SecondaryAddr, "www.auth.test."); len(got) != 1 || got[0] != "via-cname" {
		t.Errorf("the secondary holds %q after Wait, want via-cname", got)
	}
}

func testUpdateErrors(t *testing.T, b *testenv.BIND) {
	wrong := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	tests := []struct {
		name    string
		key     *dns.TSIGKey
		server  string
		zone    string
		wantErr string
	}{
		{name: "wrong secret", key: &dns.TSIGKey{Name: b.Key, Secret: wrong}, zone: "detour.test",
			wantErr: "the server refused the update: wrong TSIG key name or secret for zone detour.test (NOTAUTH/BADSIG); check tsig_key and tsig_secret against the key in named.conf"},
		{name: "wrong key name", key: &dns.TSIGKey{Name: "other-key", Secret: b.Secret}, zone: "detour.test",
			wantErr: "wrong TSIG key name or secret for zone detour.test (NOTAUTH/BADKEY)"},
		{name: "wrong algorithm", key: &dns.TSIGKey{Name: b.Key, Algorithm: "hmac-sha512", Secret: b.Secret}, zone: "detour.test",
			wantErr: "wrong TSIG key name or secret for zone detour.test (NOTAUTH/BADKEY)"},
		{name: "unsigned", zone: "detour.test",
			wantErr: "refused the unsigned update of zone detour.test (REFUSED); set tsig_key and tsig_secret"},
		{name: "zone not served", key: &dns.TSIGKey{Name: b.Key, Secret: b.Secret}, zone: "elsewhere.test",
			wantErr: "is not the primary of zone elsewhere.test (NOTAUTH)"},
		{name: "secondary", key: &dns.TSIGKey{Name: b.Key, Secret: b.Secret}, zone: "detour.test", server: b.SecondaryAddr,
			wantErr: "wrong TSIG key name or secret for zone detour.test (REFUSED/BADKEY)"},
		{name: "nothing listening", key: &dns.TSIGKey{Name: b.Key, Secret: b.Secret}, zone: "detour.test", server: "127.0.0.1:1",
			wantErr: "sending the update to 127.0.0.1:1: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := dns.NewUpdater(dns.UpdaterOptions{Key: tt.key, Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			server := tt.server
			if server == "" {
				server = b.Addr
			}
			err = u.Probe(t.Context(), server, tt.zone)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Probe = %v\nwant an error containing %q", err, tt.wantErr)
			}
			err = u.AddTXT(t.Context(), server, dns.TXT{Zone: tt.zone, Name: "_acme-challenge." + tt.zone, Value: "x", TTL: 60})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("AddTXT = %v\nwant an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func testWaitLagging(t *testing.T, b *testenv.BIND, c *dns.Client, u *dns.Updater) {
	ctx := t.Context()
	name := "_acme-challenge.stale.test."
	if err := u.AddTXT(ctx, b.Addr, dns.TXT{Zone: "stale.test.", Name: name, Value: "fresh", TTL: 60}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := c.Wait(ctx, name, "fresh", dns.WaitOptions{Timeout: 300 * time.Millisecond})
	var pe *dns.PropagationError
	if !errors.As(err, &pe) {
		t.Fatalf("Wait with a secondary that never hears of the change = %v, want a *PropagationError", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Wait took %s with a 300ms timeout", d)
	}
	want := "ns2.detour.test. (" + b.SecondaryAddr + ") answers NXDOMAIN"
	if len(pe.Pending) != 1 || !strings.Contains(err.Error(), want) || pe.Err != nil {
		t.Errorf("error = %v\nwant only the secondary pending, with %q", err, want)
	}
	// Cancellation is reported as such, with the same detail.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err = c.Wait(cctx, name, "fresh", dns.WaitOptions{Zone: "stale.test."})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with a cancelled context = %v, want context.Canceled", err)
	}
}
