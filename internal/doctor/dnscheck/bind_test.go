package dnscheck_test

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/doctor/check"
	"github.com/detour-acme/detour/internal/doctor/dnscheck"
	"github.com/detour-acme/detour/internal/testenv"
)

const (
	pub1    = "93.184.216.34" // on the test host's interfaces
	pub2    = "93.184.216.35" // on no interface: NAT
	pub6    = "2606:2800:220:1::1"
	issuer  = "pebble.test"
	acct    = "https://ca.test/acme/acct/1"
	acctTwo = "https://ca.test/acme/acct/2"
)

// testBIND starts one BIND primary and secondary serving every zone the
// tests need; deadAddr is a 127.0.0.1 port nothing answers on, where the
// delegated name server of gone.detour.test points.
func testBIND(t *testing.T) (b *testenv.BIND, opts dnscheck.Options) {
	t.Helper()
	okKey := newTestKey(t, "signed.detour.test")
	badKey, otherKey := newTestKey(t, "badds.detour.test"), newTestKey(t, "badds.detour.test")
	zones := []testenv.BINDZone{
		{Name: "detour.test", Records: []string{
			"ok IN A " + pub1,
			"nat IN A " + pub2,
			"priv IN A 10.0.0.5",
			"trap IN A " + pub1,
			"trap IN AAAA " + pub6,
			"alias IN CNAME www.auth.test.",
			// acme-dns delegations: to a live zone, to a delegated zone whose
			// server is down, to a name in no zone.
			"_acme-challenge.live IN CNAME x.auth.test.",
			"_acme-challenge.dead IN CNAME x.gone.detour.test.",
			"_acme-challenge.nowhere IN CNAME x.nowhere.invalid.",
			"gone IN NS ns.gone.detour.test.",
			"ns.gone IN A 127.0.0.1",
			// CAA
			`caa-forbid IN CAA 0 issue "other-ca.example"`,
			"sub.caa-forbid IN A " + pub1,
			"cn.caa-forbid IN CNAME www.auth.test.", // the climb goes on from caa-forbid, not from auth.test
			`caa-acct IN CAA 0 issue "` + issuer + `; accounturi=` + acctTwo + `"`,
			`caa-dns IN CAA 0 issue "` + issuer + `; validationmethods=dns-01"`,
			`caa-crit IN CAA 128 tbs "unknown"`,
			"caa-alias IN CNAME caa-target.auth.test.",
			// dns-persist-01
			`_validation-persist.persist IN TXT "` + issuer + `; accounturi=` + acct + `"`,
			// DNSSEC: delegations with a DS each
			"signed IN NS ns1.detour.test.",
			okKey.key.ToDS(mdns.SHA256).String(),
			"badds IN NS ns1.detour.test.",
			otherKey.key.ToDS(mdns.SHA256).String(), // a key the zone does not serve
		}},
		{Name: "auth.test", Records: []string{
			"www IN A " + pub1,
			"x IN TXT \"token\"",
			`caa-target IN CAA 0 issue "other-ca.example"`,
		}},
		{Name: "signed.detour.test", Records: signedZone(t, okKey, "signed.detour.test", "detour.test")},
		{Name: "badds.detour.test", Records: signedZone(t, badKey, "badds.detour.test", "detour.test")},
	}
	b = testenv.StartBIND(t, testenv.BINDOptions{Zones: zones, Secondary: true})
	ns := map[string]string{"ns.gone.detour.test.": deadAddr(t)}
	for n, a := range b.Nameservers {
		ns[n] = a
	}
	opts = dnscheck.Options{
		Resolver:      b.Addr,
		Nameservers:   ns,
		Timeout:       time.Second,
		Interfaces:    func() ([]netip.Addr, error) { return addrs(pub1, "127.0.0.1", "fe80::1"), nil },
		AccountURIs:   []string{acct},
		IssuerDomains: []string{issuer},
	}
	return b, opts
}

// deadAddr returns a 127.0.0.1 UDP/TCP address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// result returns the result named name, failing the test without one.
func result(t *testing.T, rs []check.Result, name string) check.Result {
	t.Helper()
	for _, r := range rs {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no result %s in %v", name, rs)
	return check.Result{}
}

// want checks a result's status and that its summary, evidence and fix
// together contain each of texts.
func want(t *testing.T, r check.Result, st check.Status, texts ...string) {
	t.Helper()
	all := r.String()
	if r.Status != st {
		t.Errorf("%s status = %s, want %s:\n%s", r.Name, r.Status, st, all)
	}
	for _, s := range texts {
		if !strings.Contains(all, s) {
			t.Errorf("%s does not say %q:\n%s", r.Name, s, all)
		}
	}
	if (st == check.Problem || st == check.Warning) && r.Fix == "" {
		t.Errorf("%s is a %s without a fix:\n%s", r.Name, st, all)
	}
}

// TestBIND runs Check against a real BIND primary and secondary.
func TestBIND(t *testing.T) {
	b, opts := testBIND(t)
	t.Run("Zone", func(t *testing.T) { testZone(t, b, opts) })
	t.Run("Addresses", func(t *testing.T) { testAddresses(t, b, opts) })
	t.Run("RFC2136", func(t *testing.T) { testRFC2136(t, b, opts) })
	t.Run("AcmeDNS", func(t *testing.T) { testAcmeDNS(t, opts) })
	t.Run("CAA", func(t *testing.T) { testCAA(t, opts) })
	t.Run("Persist", func(t *testing.T) { testPersist(t, opts) })
	t.Run("DNSSEC", func(t *testing.T) { testDNSSEC(t, opts) })
}

func testZone(t *testing.T, b *testenv.BIND, opts dnscheck.Options) {
	f, rs := dnscheck.Check(t.Context(), "ok.detour.test", opts)
	if len(rs) != 7 {
		t.Fatalf("%d results, want 7: %v", len(rs), rs)
	}
	for i, n := range []string{dnscheck.CheckZone, dnscheck.CheckAddresses, dnscheck.CheckRFC2136, dnscheck.CheckAcmeDNS,
		dnscheck.CheckPersist, dnscheck.CheckCAA, dnscheck.CheckDNSSEC} {
		if rs[i].Name != n || rs[i].Subject != "ok.detour.test" || rs[i].Evidence == nil {
			t.Errorf("result %d = %s about %q, want %s about ok.detour.test", i, rs[i].Name, rs[i].Subject, n)
		}
	}
	if f.Zone != "detour.test." || f.Primary != "ns1.detour.test." {
		t.Errorf("zone %q primary %q", f.Zone, f.Primary)
	}
	if want := []string{"ns1.detour.test.", "ns2.detour.test."}; !slices.Equal(f.NS, want) {
		t.Errorf("NS = %v, want %v", f.NS, want)
	}
	if want := []string{b.Addr, b.SecondaryAddr}; !slices.Equal(f.NSAddrs, want) {
		t.Errorf("NSAddrs = %v, want %v", f.NSAddrs, want)
	}
	if f.Provider != "" {
		t.Errorf("Provider = %q for a self-hosted zone", f.Provider)
	}
	want(t, rs[0], check.OK, "zone detour.test, primary ns1.detour.test", "no DNS provider recognised", "ns2.detour.test. at "+b.SecondaryAddr)

	_, rs = dnscheck.Check(t.Context(), "x.nowhere.invalid", opts)
	want(t, rs[0], check.Problem, "no DNS zone holds x.nowhere.invalid")
	for _, r := range rs {
		if r.Name == dnscheck.CheckAddresses || r.Name == dnscheck.CheckRFC2136 || r.Name == dnscheck.CheckDNSSEC {
			want(t, r, check.Skipped, "zone of x.nowhere.invalid is unknown")
		}
	}
}

func testAddresses(t *testing.T, b *testenv.BIND, opts dnscheck.Options) {
	tests := []struct {
		name        string
		status      check.Status
		says        []string
		a, aaaa     []netip.Addr
		notLocal    []netip.Addr
		private     []netip.Addr
		interfaces  []netip.Addr
		hostIPv6    bool
		checkServer bool
	}{
		{name: "ok.detour.test", status: check.OK, a: addrs(pub1), says: []string{"A " + pub1 + ", AAAA none, on this host's interfaces"}, checkServer: true},
		{name: "nat.detour.test", status: check.Warning, a: addrs(pub2), notLocal: addrs(pub2),
			says: []string{pub2 + " is on no interface of this host: NAT or a load balancer", "self-check can only test what this host can reach"}},
		{name: "priv.detour.test", status: check.Problem, a: addrs("10.0.0.5"), notLocal: addrs("10.0.0.5"), private: addrs("10.0.0.5"),
			says: []string{"10.0.0.5 is private (RFC 1918), unreachable from the CA"}},
		{name: "trap.detour.test", status: check.Problem, a: addrs(pub1), aaaa: addrs(pub6), notLocal: addrs(pub6),
			says: []string{"the AAAA trap", "Let's Encrypt tries IPv6 first", "remove the AAAA record, or give this host that address"}},
		{name: "trap.detour.test", status: check.OK, a: addrs(pub1), aaaa: addrs(pub6), hostIPv6: true,
			interfaces: addrs(pub1, pub6), says: []string{"on this host's interfaces"}},
		{name: "none.detour.test", status: check.Problem, says: []string{"no A or AAAA record", "only the DNS paths"}},
		{name: "alias.detour.test", status: check.OK, a: addrs(pub1), says: []string{"alias.detour.test. -> www.auth.test."}},
		{name: "*.ok.detour.test", status: check.Info, says: []string{"wildcard"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := opts
			if tc.interfaces != nil {
				o.Interfaces = func() ([]netip.Addr, error) { return tc.interfaces, nil }
			}
			f, rs := dnscheck.Check(t.Context(), tc.name, o)
			r := result(t, rs, dnscheck.CheckAddresses)
			want(t, r, tc.status, tc.says...)
			if !slices.Equal(f.A, tc.a) || !slices.Equal(f.AAAA, tc.aaaa) {
				t.Errorf("A %v AAAA %v, want %v %v", f.A, f.AAAA, tc.a, tc.aaaa)
			}
			if !slices.Equal(f.NotLocal, tc.notLocal) || !slices.Equal(f.Private, tc.private) || f.HostIPv6 != tc.hostIPv6 {
				t.Errorf("NotLocal %v Private %v HostIPv6 %v, want %v %v %v", f.NotLocal, f.Private, f.HostIPv6, tc.notLocal, tc.private, tc.hostIPv6)
			}
			if tc.checkServer {
				// Each authoritative server is asked, and named.
				for _, s := range []string{"ns1.detour.test. (" + b.Addr + "): A " + pub1, "ns2.detour.test. (" + b.SecondaryAddr + "): A " + pub1} {
					if !slices.Contains(r.Evidence, s+"; AAAA none") {
						t.Errorf("evidence lacks %q: %v", s, r.Evidence)
					}
				}
			}
		})
	}
}

// soaSerial returns the zone's SOA serial at the primary.
func soaSerial(t *testing.T, addr, zone string) uint32 {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(zone, mdns.TypeSOA)
	r, err := mdns.Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*mdns.SOA); ok {
			return soa.Serial
		}
	}
	t.Fatalf("no SOA for %s at %s", zone, addr)
	return 0
}

// zoneContent returns the zone's records, by AXFR from addr, sorted.
func zoneContent(t *testing.T, addr, zone string) []string {
	t.Helper()
	m := new(mdns.Msg)
	m.SetAxfr(zone)
	ch, err := new(mdns.Transfer).In(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for env := range ch {
		if env.Error != nil {
			t.Fatal(env.Error)
		}
		for _, rr := range env.RR {
			out = append(out, rr.String())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func testRFC2136(t *testing.T, b *testenv.BIND, opts dnscheck.Options) {
	serial := soaSerial(t, b.Addr, "detour.test.")
	before := zoneContent(t, b.Addr, "detour.test.")
	good := dnscheck.TSIGKey{Name: b.Key, Algorithm: b.Algorithm, Secret: b.Secret, Source: "config path.bind"}
	wrongSecret := good
	wrongSecret.Secret, wrongSecret.Source = "c2VjcmV0IHRoYXQgdGhlIHNlcnZlciBkb2VzIG5vdCBrbm93IQ==", "/etc/old.key"
	wrongName := good
	wrongName.Name, wrongName.Source = "other-key", "/etc/other.key"

	tests := []struct {
		name     string
		keys     []dnscheck.TSIGKey
		status   check.Status
		accepted bool
		says     []string
	}{
		{name: "right key", keys: []dnscheck.TSIGKey{wrongSecret, good}, status: check.OK, accepted: true,
			says: []string{`accepts updates of zone detour.test signed with key "detour-key" (config path.bind)`,
				`key "detour-key" (/etc/old.key): refused (NOTAUTH/BADSIG)`, `key "detour-key" (config path.bind): accepted`}},
		{name: "wrong keys", keys: []dnscheck.TSIGKey{wrongSecret, wrongName}, status: check.Problem,
			says: []string{"accepts none of the 2 TSIG key(s)", "refused (NOTAUTH/BADSIG)", `key "other-key" (/etc/other.key): refused (NOTAUTH/BADKEY)`}},
		{name: "no key", status: check.Info, says: []string{"no TSIG key known; rfc2136 needs one", "unsigned update: refused (REFUSED): the server's policy"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := opts
			o.Keys = tc.keys
			f, rs := dnscheck.Check(t.Context(), "ok.detour.test", o)
			want(t, result(t, rs, dnscheck.CheckRFC2136), tc.status, append(tc.says, "primary (SOA MNAME) ns1.detour.test. at "+b.Addr)...)
			if f.RFC2136.Accepted != tc.accepted || f.RFC2136.Server != b.Addr || len(f.RFC2136.Tried) != max(len(tc.keys), 1) {
				t.Errorf("RFC2136 = %+v", f.RFC2136)
			}
			if tc.accepted && f.RFC2136.Key != good {
				t.Errorf("accepted key = %+v, want %+v", f.RFC2136.Key, good)
			}
		})
	}
	// The probes changed nothing.
	if got := soaSerial(t, b.Addr, "detour.test."); got != serial {
		t.Errorf("SOA serial %d after the probes, was %d", got, serial)
	}
	if after := zoneContent(t, b.Addr, "detour.test."); !slices.Equal(after, before) {
		t.Errorf("zone changed by the probes:\nbefore %v\nafter  %v", before, after)
	}
}

func testAcmeDNS(t *testing.T, opts dnscheck.Options) {
	tests := []struct {
		name   string
		status check.Status
		live   bool
		cname  string
		server string
		says   []string
	}{
		{name: "live.detour.test", status: check.OK, live: true, cname: "x.auth.test.", server: "ns1.detour.test.",
			says: []string{"_acme-challenge.live.detour.test. -> x.auth.test.", `TXT x.auth.test.: NOERROR: TXT "token" (authoritative)`}},
		{name: "dead.detour.test", status: check.Problem, cname: "x.gone.detour.test.", server: "ns.gone.detour.test.",
			says: []string{"referral to ns.gone.detour.test.", "connection refused", "every dns-01 validation of dead.detour.test follows this CNAME and fails"}},
		{name: "nowhere.detour.test", status: check.Problem, cname: "x.nowhere.invalid.",
			says: []string{"zone not found", "does not answer"}},
		{name: "ok.detour.test", status: check.Info, says: []string{"no CNAME at _acme-challenge.ok.detour.test."}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, rs := dnscheck.Check(t.Context(), tc.name, opts)
			want(t, result(t, rs, dnscheck.CheckAcmeDNS), tc.status, tc.says...)
			if f.AcmeDNS.Live != tc.live || f.AcmeDNS.CNAME != tc.cname || f.AcmeDNS.Server != tc.server {
				t.Errorf("AcmeDNS = %+v, want live %v CNAME %q server %q", f.AcmeDNS, tc.live, tc.cname, tc.server)
			}
		})
	}
}

func testCAA(t *testing.T, opts dnscheck.Options) {
	tests := []struct {
		name     string
		accounts []string
		status   check.Status
		at       string
		allows   bool
		methods  map[string]bool // method -> AllowsMethod for acct
		says     []string
	}{
		{name: "ok.detour.test", status: check.OK, allows: true, says: []string{"no CAA record at ok.detour.test or its parents",
			"CAA test.: REFUSED (above zone detour.test.: taken as no CAA)"}},
		{name: "caa-forbid.detour.test", status: check.Problem, at: "caa-forbid.detour.test.",
			says: []string{"allows only other-ca.example, not pebble.test", `caa-forbid.detour.test. CAA 0 issue "pebble.test"`}},
		{name: "sub.caa-forbid.detour.test", status: check.Problem, at: "caa-forbid.detour.test.",
			says: []string{"CAA sub.caa-forbid.detour.test.: none", "allows only other-ca.example"}},
		{name: "cn.caa-forbid.detour.test", status: check.Problem, at: "caa-forbid.detour.test.",
			says: []string{"CAA cn.caa-forbid.detour.test. -> www.auth.test.: none", "allows only other-ca.example"}},
		{name: "caa-alias.detour.test", status: check.Problem, at: "caa-alias.detour.test.",
			says: []string{"CAA caa-alias.detour.test. -> caa-target.auth.test.: 1 record(s)", "allows only other-ca.example"}},
		{name: "caa-acct.detour.test", status: check.Problem, at: "caa-acct.detour.test.", allows: true,
			methods: map[string]bool{"http-01": false, "dns-01": false},
			says:    []string{"only for account " + acctTwo + ", not for this host's account", "accounturi=" + acct}},
		{name: "caa-acct.detour.test", accounts: []string{acctTwo}, status: check.OK, at: "caa-acct.detour.test.", allows: true,
			says: []string{"for account " + acctTwo}},
		{name: "caa-dns.detour.test", status: check.OK, at: "caa-dns.detour.test.", allows: true,
			methods: map[string]bool{"http-01": false, "tls-alpn-01": false, "dns-01": true, "dns-persist-01": false},
			says:    []string{"allows pebble.test with dns-01 only", "refused http-01, tls-alpn-01, dns-account-01, dns-persist-01"}},
		{name: "caa-crit.detour.test", status: check.Problem, at: "caa-crit.detour.test.", says: []string{`critical property the CA does not know (128 tbs "unknown")`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := opts
			if tc.accounts != nil {
				o.AccountURIs = tc.accounts
			}
			f, rs := dnscheck.Check(t.Context(), tc.name, o)
			want(t, result(t, rs, dnscheck.CheckCAA), tc.status, tc.says...)
			if f.CAA.At != tc.at || f.CAA.AllowsIssuer != tc.allows {
				t.Errorf("CAA = %+v, want at %q allows %v", f.CAA, tc.at, tc.allows)
			}
			for m, ok := range tc.methods {
				if got := f.CAA.AllowsMethod(m, acct); got != ok {
					t.Errorf("AllowsMethod(%s, %s) = %v, want %v", m, acct, got, ok)
				}
			}
		})
	}
}

func testPersist(t *testing.T, opts dnscheck.Options) {
	f, rs := dnscheck.Check(t.Context(), "persist.detour.test", opts)
	want(t, result(t, rs, dnscheck.CheckPersist), check.OK, "authorizes account "+acct+" at "+issuer,
		"ns2.detour.test. ("+opts.Nameservers["ns2.detour.test."]+"): TXT _validation-persist.persist.detour.test.")
	if !f.Persist.Found || !f.Persist.MatchesAccount || f.Persist.AccountURI != acct || f.Persist.Issuer != issuer {
		t.Errorf("Persist = %+v", f.Persist)
	}
	o := opts
	o.AccountURIs = []string{acctTwo}
	f, rs = dnscheck.Check(t.Context(), "persist.detour.test", o)
	want(t, result(t, rs, dnscheck.CheckPersist), check.Warning, "for another account (accounturi="+acct+")", "detour persist-record persist.detour.test")
	if !f.Persist.Found || f.Persist.MatchesAccount {
		t.Errorf("Persist = %+v", f.Persist)
	}
	o.IssuerDomains = []string{"letsencrypt.org"}
	o.AccountURIs = []string{acct}
	_, rs = dnscheck.Check(t.Context(), "persist.detour.test", o)
	want(t, result(t, rs, dnscheck.CheckPersist), check.Warning, "for another CA (issuer pebble.test")
	f, rs = dnscheck.Check(t.Context(), "ok.detour.test", opts)
	want(t, result(t, rs, dnscheck.CheckPersist), check.Info, "no dns-persist-01 record")
	if f.Persist.Found {
		t.Errorf("Persist = %+v", f.Persist)
	}
}

func testDNSSEC(t *testing.T, opts dnscheck.Options) {
	tests := []struct {
		name           string
		status         check.Status
		signed, broken bool
		says           []string
	}{
		{name: "ok.detour.test", status: check.OK, says: []string{"not signed"}},
		{name: "signed.detour.test", status: check.OK, signed: true,
			says: []string{"signed and its DS, DNSKEY and SOA signatures verify", "DNSKEY 1 record(s), 1 RRSIG(s)", "without the AD bit",
				"not checked here: the chain above the parent zone"}},
		{name: "badds.detour.test", status: check.Problem, signed: true, broken: true,
			says: []string{"no DNSKEY of badds.detour.test. matches the DS at the parent", "every DNS path and the CA's CAA lookup fail", "publish at the registrar the DS"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, rs := dnscheck.Check(t.Context(), tc.name, opts)
			want(t, result(t, rs, dnscheck.CheckDNSSEC), tc.status, tc.says...)
			if f.DNSSEC.Signed != tc.signed || f.DNSSEC.Broken != tc.broken {
				t.Errorf("DNSSEC = %+v", f.DNSSEC)
			}
		})
	}
}

// TestNoResolver checks the verdicts when the resolver itself is down or
// misconfigured.
func TestNoResolver(t *testing.T) {
	o := dnscheck.Options{Resolver: deadAddr(t), Timeout: 300 * time.Millisecond,
		Interfaces: func() ([]netip.Addr, error) { return nil, nil }}
	_, rs := dnscheck.Check(t.Context(), "example.test", o)
	want(t, rs[0], check.Skipped, "resolver did not answer", "connection refused")
	for _, r := range rs[1:] {
		if r.Status != check.Skipped {
			t.Errorf("%s is %s without a resolver, want skipped:\n%s", r.Name, r.Status, r)
		}
	}
	_, rs = dnscheck.Check(t.Context(), "example.test", dnscheck.Options{Resolver: "no-port"})
	want(t, rs[0], check.Skipped, "not host:port")
}
