package dnscheck_test

import (
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/doctor/dnscheck"
)

func TestEvaluateDNSSEC(t *testing.T) {
	const zone = "example.com."
	now := time.Now()
	ksk, zsk, other := newTestKey(t, zone), newTestKey(t, zone), newTestKey(t, zone)
	zsk.key.Flags = mdns.ZONE // a ZSK: no SEP
	soa := []mdns.RR{bindSOA(zone, "example.com")}
	keys := []*mdns.DNSKEY{ksk.key, zsk.key}
	keyRRs := []mdns.RR{ksk.key, zsk.key}
	valid := func(k testKey, set []mdns.RR) *mdns.RRSIG {
		return k.sign(t, set, now.Add(-time.Hour), now.Add(time.Hour))
	}
	expired := ksk.sign(t, keyRRs, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	future := zsk.sign(t, soa, now.Add(time.Hour), now.Add(48*time.Hour))
	badSig := valid(zsk, soa)
	badSig.Signature = valid(zsk, []mdns.RR{bindSOA(zone, "other.example")}).Signature // a signature over other data
	ds := ksk.key.ToDS(mdns.SHA256)
	dsSHA1 := ksk.key.ToDS(mdns.SHA1)
	dsOther := other.key.ToDS(mdns.SHA256)
	dsWrongDigest := *ds
	dsWrongDigest.Digest = strings.Repeat("00", 32)
	dsUnknownDigest := *ds
	dsUnknownDigest.DigestType = 99
	good := dnscheck.DNSSECInputs{Zone: zone, DS: []*mdns.DS{ds}, Keys: keys, KeySigs: []*mdns.RRSIG{valid(ksk, keyRRs)}, SOA: soa,
		SOASigs: []*mdns.RRSIG{valid(zsk, soa)}, Now: now}
	with := func(f func(*dnscheck.DNSSECInputs)) dnscheck.DNSSECInputs {
		in := good
		f(&in)
		return in
	}

	tests := []struct {
		name                               string
		in                                 dnscheck.DNSSECInputs
		signed, secure, broken, unverified bool
		says                               string
	}{
		{name: "unsigned", in: dnscheck.DNSSECInputs{Zone: zone, SOA: soa, Now: now}, says: "unsigned"},
		{name: "signed and verified", in: good, signed: true, secure: true, says: "the SOA is signed by a zone key: verified"},
		{name: "SHA-1 DS", in: with(func(in *dnscheck.DNSSECInputs) { in.DS = []*mdns.DS{dsSHA1} }), signed: true, secure: true, says: "DS matches DNSKEY"},
		{name: "one of two DS matches (a rollover)", in: with(func(in *dnscheck.DNSSECInputs) { in.DS = []*mdns.DS{dsOther, ds} }), signed: true, secure: true,
			says: "verified"},
		{name: "island: no DS", in: with(func(in *dnscheck.DNSSECInputs) { in.DS = nil }), signed: true, says: "island of security"},
		{name: "DS without DNSKEY", in: with(func(in *dnscheck.DNSSECInputs) { in.Keys, in.KeySigs, in.SOASigs = nil, nil, nil }), signed: true, broken: true,
			says: "the zone serves no DNSKEY"},
		{name: "DS of another key", in: with(func(in *dnscheck.DNSSECInputs) { in.DS = []*mdns.DS{dsOther} }), signed: true, secure: true, broken: true,
			says: "no DNSKEY of example.com. matches the DS"},
		{name: "DS with a wrong digest", in: with(func(in *dnscheck.DNSSECInputs) { in.DS = []*mdns.DS{&dsWrongDigest} }), signed: true, secure: true, broken: true,
			says: "matches the DS"},
		{name: "DS digest type unknown here", in: with(func(in *dnscheck.DNSSECInputs) { in.DS = []*mdns.DS{&dsUnknownDigest} }), signed: true, secure: true,
			unverified: true, says: "digest type 99"},
		{name: "DNSKEY RRset signed only by the ZSK", in: with(func(in *dnscheck.DNSSECInputs) { in.KeySigs = []*mdns.RRSIG{valid(zsk, keyRRs)} }),
			signed: true, secure: true, broken: true, says: "not validly signed by the key the DS names: no RRSIG by such a key"},
		{name: "DNSKEY RRSIG expired", in: with(func(in *dnscheck.DNSSECInputs) { in.KeySigs = []*mdns.RRSIG{expired} }), signed: true, secure: true, broken: true,
			says: "the RRSIG expired at"},
		{name: "expired and valid RRSIG", in: with(func(in *dnscheck.DNSSECInputs) { in.KeySigs = []*mdns.RRSIG{expired, valid(ksk, keyRRs)} }),
			signed: true, secure: true, says: "verified"},
		{name: "SOA RRSIG missing", in: with(func(in *dnscheck.DNSSECInputs) { in.SOASigs = nil }), signed: true, secure: true, broken: true,
			says: "the SOA of example.com. is not validly signed: no RRSIG"},
		{name: "SOA RRSIG not valid yet", in: with(func(in *dnscheck.DNSSECInputs) { in.SOASigs = []*mdns.RRSIG{future} }), signed: true, secure: true, broken: true,
			says: "not valid yet"},
		{name: "SOA RRSIG does not verify", in: with(func(in *dnscheck.DNSSECInputs) { in.SOASigs = []*mdns.RRSIG{badSig} }), signed: true, secure: true, broken: true,
			says: "does not verify"},
		{name: "SOA RRSIG by a key not in the zone", in: with(func(in *dnscheck.DNSSECInputs) { in.SOASigs = []*mdns.RRSIG{valid(other, soa)} }),
			signed: true, secure: true, broken: true, says: "no RRSIG by such a key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := dnscheck.EvaluateDNSSEC(tc.in)
			all := v.Reason + "\n" + strings.Join(v.Lines, "\n")
			if v.Signed != tc.signed || v.Secure != tc.secure || v.Broken != tc.broken || v.Unverified != tc.unverified {
				t.Errorf("signed %v secure %v broken %v unverified %v, want %v %v %v %v:\n%s", v.Signed, v.Secure, v.Broken, v.Unverified,
					tc.signed, tc.secure, tc.broken, tc.unverified, all)
			}
			if !strings.Contains(all, tc.says) {
				t.Errorf("does not say %q:\n%s", tc.says, all)
			}
			if v.Broken != (v.Reason != "") {
				t.Errorf("broken %v with reason %q", v.Broken, v.Reason)
			}
		})
	}
}
