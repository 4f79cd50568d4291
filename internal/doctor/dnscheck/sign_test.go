package dnscheck_test

import (
	"crypto"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// testKey is a DNSSEC key made for a test zone.
type testKey struct {
	key  *mdns.DNSKEY
	priv crypto.Signer
}

// newTestKey makes an ECDSA P-256 key (algorithm 13) with flags 257 (zone
// key, SEP) for zone.
func newTestKey(t testing.TB, zone string) testKey {
	t.Helper()
	k := &mdns.DNSKEY{Hdr: mdns.RR_Header{Name: mdns.Fqdn(zone), Rrtype: mdns.TypeDNSKEY, Class: mdns.ClassINET, Ttl: 60},
		Flags: mdns.ZONE | mdns.SEP, Protocol: 3, Algorithm: mdns.ECDSAP256SHA256}
	priv, err := k.Generate(256)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{key: k, priv: priv.(crypto.Signer)}
}

// sign returns an RRSIG by k over rrset, valid from inception to expiration.
func (k testKey) sign(t testing.TB, rrset []mdns.RR, inception, expiration time.Time) *mdns.RRSIG {
	t.Helper()
	s := &mdns.RRSIG{Hdr: mdns.RR_Header{Ttl: rrset[0].Header().Ttl}, KeyTag: k.key.KeyTag(), SignerName: k.key.Hdr.Name,
		Algorithm: k.key.Algorithm, Inception: uint32(inception.Unix()), Expiration: uint32(expiration.Unix())}
	if err := s.Sign(k.priv, rrset); err != nil {
		t.Fatal(err)
	}
	return s
}

// bindSOA is the SOA record testenv.StartBIND writes for every zone (its
// zoneFile): the signatures the tests make must cover exactly this RDATA.
// A change there makes TestBIND's DNSSEC cases fail on "does not verify",
// not pass silently.
func bindSOA(zone, nsZone string) *mdns.SOA {
	return &mdns.SOA{Hdr: mdns.RR_Header{Name: mdns.Fqdn(zone), Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 60},
		Ns: "ns1." + nsZone + ".", Mbox: "hostmaster." + nsZone + ".", Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 60}
}

// signedZone returns zone-file lines for a zone signed by k: the DNSKEY,
// the NSEC of the apex (BIND serves RRSIGs only from a zone with an NSEC
// or NSEC3 chain) and RRSIGs over the three RRsets, valid for 60 days
// (BIND re-signs, and so changes, a dynamic zone whose signatures expire
// within a quarter of its 30-day sig-validity-interval; it has no private
// key here, so it must find nothing to do).
func signedZone(t testing.TB, k testKey, zone, nsZone string) []string {
	t.Helper()
	from, to := time.Now().Add(-time.Hour), time.Now().Add(60*24*time.Hour)
	apex := mdns.Fqdn(zone)
	nsec := &mdns.NSEC{Hdr: mdns.RR_Header{Name: apex, Rrtype: mdns.TypeNSEC, Class: mdns.ClassINET, Ttl: 60}, NextDomain: apex,
		TypeBitMap: []uint16{mdns.TypeNS, mdns.TypeSOA, mdns.TypeRRSIG, mdns.TypeNSEC, mdns.TypeDNSKEY}}
	out := []string{k.key.String(), nsec.String()}
	for _, set := range [][]mdns.RR{{k.key}, {bindSOA(zone, nsZone)}, {nsec}} {
		out = append(out, k.sign(t, set, from, to).String())
	}
	return out
}
