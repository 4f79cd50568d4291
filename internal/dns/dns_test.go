package dns_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/dns"
)

func TestTSIGKeyValidate(t *testing.T) {
	tests := []struct {
		name string
		key  dns.TSIGKey
		want string // "" for valid
	}{
		{"valid default algorithm", dns.TSIGKey{Name: "detour-key", Secret: "c2VjcmV0"}, ""},
		{"valid sha512 any case", dns.TSIGKey{Name: "k.example.", Algorithm: "HMAC-SHA512.", Secret: "c2VjcmV0"}, ""},
		{"no name", dns.TSIGKey{Secret: "c2VjcmV0"}, "has no name"},
		{"md5", dns.TSIGKey{Name: "k", Algorithm: "hmac-md5", Secret: "c2VjcmV0"}, `"hmac-md5" is not supported; use hmac-sha256, hmac-sha384 or hmac-sha512`},
		{"empty secret", dns.TSIGKey{Name: "k"}, "the TSIG secret is empty"},
		{"secret not base64", dns.TSIGKey{Name: "k", Secret: "c2Vjc!!"}, "not valid base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.key.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.want)
			}
			if _, err := dns.NewUpdater(dns.UpdaterOptions{Key: &tt.key}); err == nil {
				t.Error("NewUpdater accepted the key Validate refuses")
			}
		})
	}
}

func TestNewOptions(t *testing.T) {
	tests := []struct {
		name string
		opts dns.Options
		want string
	}{
		{"resolver without port", dns.Options{Resolver: "192.0.2.1"}, "is not host:port"},
		{"port out of range", dns.Options{Resolver: "192.0.2.1:53", Port: 70000}, "out of range"},
		{"nameserver address without port", dns.Options{Resolver: "192.0.2.1:53", Nameservers: map[string]string{"ns1.example.": "192.0.2.2"}}, "is not host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := dns.New(tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// fakeAuth is an in-process DNS server for zone example.test.: it answers
// the resolver's questions (NS, A) and, per listener, TXT in one of several
// ways a real server might.
type fakeAuth struct {
	mode string // "good", "lame", "refused", "stale"
}

func (f fakeAuth) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	m := new(mdns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	q := r.Question[0]
	rr := func(s string) mdns.RR {
		x, err := mdns.NewRR(s)
		if err != nil {
			panic(err)
		}
		return x
	}
	switch {
	case q.Qtype == mdns.TypeNS && q.Name == "example.test.":
		m.Answer = []mdns.RR{rr("example.test. 60 IN NS good.example.test."), rr("example.test. 60 IN NS lame.example.test."),
			rr("example.test. 60 IN NS refused.example.test."), rr("example.test. 60 IN NS stale.example.test.")}
	case q.Qtype == mdns.TypeA && strings.HasSuffix(q.Name, ".example.test."):
		m.Answer = []mdns.RR{rr(q.Name + " 60 IN A 127.0.0.1")}
	case q.Qtype == mdns.TypeTXT:
		switch f.mode {
		case "good":
			m.Answer = []mdns.RR{rr(q.Name + ` 60 IN TXT "old" "er"`), rr(q.Name + ` 60 IN TXT "want"`)}
		case "lame":
			m.Authoritative = false
		case "refused":
			m.Rcode = mdns.RcodeRefused
		case "stale":
			m.Answer = []mdns.RR{rr(q.Name + ` 60 IN TXT "old" "er"`)}
		}
	}
	w.WriteMsg(m)
}

// serveFake starts a fakeAuth on 127.0.0.1:0 (UDP) and returns its address.
func serveFake(t *testing.T, mode string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &mdns.Server{PacketConn: pc, Handler: fakeAuth{mode}, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// TestWaitReportsEachServer: the error names every server that does not
// answer the value and what it answers instead.
func TestWaitReportsEachServer(t *testing.T) {
	addrs := map[string]string{}
	for _, mode := range []string{"good", "lame", "refused", "stale"} {
		addrs[mode+".example.test."] = serveFake(t, mode)
	}
	c, err := dns.New(dns.Options{Resolver: addrs["good.example.test."], Nameservers: addrs})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = c.Wait(t.Context(), "_acme-challenge.example.test.", "want", dns.WaitOptions{Zone: "example.test.", Timeout: 150 * time.Millisecond})
	var pe *dns.PropagationError
	if !errors.As(err, &pe) {
		t.Fatalf("Wait = %v, want a *PropagationError", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > time.Second {
		t.Errorf("Wait returned after %s with a 150ms timeout", d)
	}
	for _, want := range []string{
		"lame.example.test. (" + addrs["lame.example.test."] + ") answers without the AA bit",
		"refused.example.test. (" + addrs["refused.example.test."] + ") answers REFUSED",
		"stale.example.test. (" + addrs["stale.example.test."] + `) answers "older"`,
		"raise propagation_timeout",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error = %v\nwant it to contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "good.example.test.") || len(pe.Pending) != 3 {
		t.Errorf("the server that answers the value is listed: %v", err)
	}
}

func TestSystemResolver(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, path, want, wantErr string
	}{
		{name: "first nameserver", path: write("two", "search example.com\nnameserver 192.0.2.1\nnameserver 192.0.2.2\n"), want: "192.0.2.1:53"},
		{name: "IPv6", path: write("v6", "nameserver 2001:db8::1\n"), want: "[2001:db8::1]:53"},
		{name: "no nameserver", path: write("none", "search example.com\n"), wantErr: "lists no nameserver; set a resolver"},
		{name: "missing file", path: filepath.Join(dir, "missing"), wantErr: "reading the system resolver from"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dns.New(dns.Options{ResolvConf: tt.path})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Resolver() != tt.want {
				t.Errorf("resolver = %q, want %q", c.Resolver(), tt.want)
			}
		})
	}
}
