package solve_test

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/mholt/acmez/v3/acme"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

func dnsID(v string) ident.Identifier { return ident.Identifier{Type: ident.TypeDNS, Value: v} }
func ipID(v string) ident.Identifier  { return ident.Identifier{Type: ident.TypeIP, Value: v} }

// exampleAccount is the account URL of the example in
// draft-ietf-acme-dns-account-label §3.2, whose record for example.org is
// _ujmmovf2vn55tgye._acme-challenge.example.org.
const (
	exampleAccount      = "https://example.com/acme/acct/ExampleAccount"
	exampleAccountLabel = "ujmmovf2vn55tgye"
)

// accountURLs are account URLs as CAs hand them out, for comparisons with
// other implementations.
var accountURLs = []string{
	exampleAccount,
	"https://localhost:14000/my-account/1", // Pebble
	"https://acme-v02.api.letsencrypt.org/acme/acct/123456789", // Let's Encrypt
	"https://acme.example/acct/ünïcödé?x=1#frag",
	"",
}

// draftLabel computes the account label of draft-ietf-acme-dns-account-label
// §3.2 without encoding/base32: the first 10 bytes (80 bits) of
// SHA-256(account URL), in the RFC 4648 §6 base32 alphabet lower-cased, 5
// bits per character, so exactly 16 characters and no padding.
func draftLabel(accountURL string) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	sum := sha256.Sum256([]byte(accountURL))
	var b strings.Builder
	var buf uint64
	bits := 0
	for _, c := range sum[:10] {
		buf = buf<<8 | uint64(c)
		bits += 8
		for bits >= 5 {
			bits -= 5
			b.WriteByte(alphabet[(buf>>bits)&31])
		}
	}
	return b.String()
}

// pebbleLabel is the label as Pebble's VA computes it
// (github.com/letsencrypt/pebble/v2 va/va.go, validateDNSAccount01):
//
//	acctHash := sha256.Sum256([]byte(task.AccountURL))
//	acctLabel := strings.ToLower(base32.StdEncoding.EncodeToString(acctHash[0:10]))
func pebbleLabel(accountURL string) string {
	acctHash := sha256.Sum256([]byte(accountURL))
	return strings.ToLower(base32.StdEncoding.EncodeToString(acctHash[0:10]))
}

func TestAccountLabel(t *testing.T) {
	if got := solve.AccountLabel(exampleAccount); got != exampleAccountLabel {
		t.Errorf("AccountLabel(%q) = %q, want %q (the draft's example)", exampleAccount, got, exampleAccountLabel)
	}
	for _, u := range accountURLs {
		got := solve.AccountLabel(u)
		if want := draftLabel(u); got != want {
			t.Errorf("AccountLabel(%q) = %q, want %q (draft §3.2)", u, got, want)
		}
		if want := pebbleLabel(u); got != want {
			t.Errorf("AccountLabel(%q) = %q, Pebble's VA looks up %q", u, got, want)
		}
		if len(got) != 16 || strings.Trim(got, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Errorf("AccountLabel(%q) = %q, want 16 characters of the lower-case base32 alphabet", u, got)
		}
	}
	if solve.AccountLabel("https://ca.example/acct/1") == solve.AccountLabel("https://ca.example/acct/2") {
		t.Error("two accounts share a label")
	}
}

// TestTXTNameMatchesAcmez compares the dns-account-01 owner names with
// those of github.com/mholt/acmez/v3/acme (which has no trailing dot).
func TestTXTNameMatchesAcmez(t *testing.T) {
	for _, u := range accountURLs[:3] {
		for _, name := range []string{"example.org", "www.example.com"} {
			got, err := solve.TXTName(solve.DNSAccount01, dnsID(name), u)
			if err != nil {
				t.Fatalf("TXTName(%s, %s, %q): %v", solve.DNSAccount01, name, u, err)
			}
			ch := acme.Challenge{Type: acme.ChallengeTypeDNSAccount01, Identifier: acme.Identifier{Type: "dns", Value: name}}
			if want := ch.DNSAccount01TXTRecordName(acme.Account{Location: u}) + "."; got != want {
				t.Errorf("TXTName(%s, %s, %q) = %q, acmez says %q", solve.DNSAccount01, name, u, got, want)
			}
			ch.Type = acme.ChallengeTypeDNS01
			got, err = solve.TXTName(solve.DNS01, dnsID(name), u)
			if want := ch.DNS01TXTRecordName() + "."; err != nil || got != want {
				t.Errorf("TXTName(%s, %s) = %q, %v; acmez says %q", solve.DNS01, name, got, err, want)
			}
		}
	}
}

func TestTXTName(t *testing.T) {
	label := "_" + exampleAccountLabel
	tests := []struct {
		name      string
		typ       string
		id        ident.Identifier
		account   string
		want      string
		wantErr   string // substring; "" for success
		notApplic bool   // the error wraps ErrNotApplicable
	}{
		{name: "dns-01", typ: solve.DNS01, id: dnsID("example.com"), want: "_acme-challenge.example.com."},
		{name: "dns-01 wildcard shares the name", typ: solve.DNS01, id: dnsID("*.example.com"), want: "_acme-challenge.example.com."},
		{name: "dns-01 subdomain", typ: solve.DNS01, id: dnsID("a.b.example.com"), want: "_acme-challenge.a.b.example.com."},
		{name: "dns-01 ignores the account", typ: solve.DNS01, id: dnsID("example.com"), account: exampleAccount, want: "_acme-challenge.example.com."},
		{name: "dns-account-01", typ: solve.DNSAccount01, id: dnsID("example.org"), account: exampleAccount,
			want: label + "._acme-challenge.example.org."},
		{name: "dns-account-01 wildcard shares the name", typ: solve.DNSAccount01, id: dnsID("*.example.org"), account: exampleAccount,
			want: label + "._acme-challenge.example.org."},
		{name: "dns-01 IPv4 refused", typ: solve.DNS01, id: ipID("192.0.2.1"), wantErr: "cannot validate the IP address 192.0.2.1", notApplic: true},
		{name: "dns-01 IPv6 refused", typ: solve.DNS01, id: ipID("2001:db8::1"), wantErr: "RFC 8738", notApplic: true},
		{name: "dns-account-01 IP refused", typ: solve.DNSAccount01, id: ipID("192.0.2.1"), account: exampleAccount,
			wantErr: "dns-account-01 cannot validate the IP address", notApplic: true},
		{name: "dns-account-01 without the account", typ: solve.DNSAccount01, id: dnsID("example.org"),
			wantErr: "named after the ACME account"},
		{name: "http-01 is no TXT challenge", typ: solve.HTTP01, id: dnsID("example.com"), wantErr: "is not answered by a TXT record"},
		{name: "tls-alpn-01 is no TXT challenge", typ: solve.TLSALPN01, id: dnsID("example.com"), wantErr: "is not answered by a TXT record"},
		{name: "dns-persist-01 has no TXT value", typ: solve.DNSPersist01, id: dnsID("example.com"), wantErr: "is not answered by a TXT record"},
		{name: "unknown type", typ: "dns-02", id: dnsID("example.com"), wantErr: "use one of [dns-01 dns-account-01]"},
		{name: "empty type", typ: "", id: dnsID("example.com"), wantErr: "is not answered by a TXT record"},
		{name: "types are case-sensitive", typ: "DNS-01", id: dnsID("example.com"), wantErr: "is not answered by a TXT record"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := solve.TXTName(tt.typ, tt.id, tt.account)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("TXTName = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("TXTName = %q, %v; want an error containing %q", got, err, tt.wantErr)
			}
			if got != "" {
				t.Errorf("TXTName returned the name %q with an error", got)
			}
			if got := errors.Is(err, solve.ErrNotApplicable); got != tt.notApplic {
				t.Errorf("errors.Is(%v, ErrNotApplicable) = %v, want %v", err, got, tt.notApplic)
			}
		})
	}
}

func TestTXTValue(t *testing.T) {
	tests := []struct {
		keyAuth, want string
	}{
		// lego's dns01 test vector (challenge/dns01 TestGetChallengeInfo).
		{"123", "pmWkWSBCL51Bfkhn79xPuKBKHz__H6B-mY6G9_eieuM"},
		// SHA-256 of nothing, e3b0c442…b855, in base64url.
		{"", "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"},
		// token "." thumbprint, RFC 8555 §8.1; computed independently
		// (Python hashlib and base64.urlsafe_b64encode, padding removed).
		{"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ",
			"NGwKoXBgCT8JhEa0bK7AwfSqHyu_ZWeugV07fLGIVq0"},
	}
	for _, tt := range tests {
		got := solve.TXTValue(tt.keyAuth)
		if got != tt.want {
			t.Errorf("TXTValue(%q) = %q, want %q", tt.keyAuth, got, tt.want)
		}
		// RFC 8555 §8.4: base64url (no padding) of the 32-byte digest.
		if len(got) != 43 || strings.ContainsAny(got, "=+/") {
			t.Errorf("TXTValue(%q) = %q, want 43 characters of unpadded base64url", tt.keyAuth, got)
		}
		if sum := sha256.Sum256([]byte(tt.keyAuth)); got != base64.RawURLEncoding.EncodeToString(sum[:]) {
			t.Errorf("TXTValue(%q) = %q is not base64url(SHA-256(key authorization))", tt.keyAuth, got)
		}
		if want := (acme.Challenge{KeyAuthorization: tt.keyAuth}).DNS01KeyAuthorization(); got != want {
			t.Errorf("TXTValue(%q) = %q, acmez says %q", tt.keyAuth, got, want)
		}
	}
}

func TestIsDNSAndNeedsAccount(t *testing.T) {
	tests := []struct {
		typ                 string
		isDNS, needsAccount bool
	}{
		{solve.HTTP01, false, false},
		{solve.TLSALPN01, false, false},
		{solve.DNS01, true, false},
		{solve.DNSAccount01, true, true},
		{solve.DNSPersist01, true, false},
		{"", false, false},
		{"DNS-01", false, false},
		{"dns-02", false, false},
	}
	for _, tt := range tests {
		if got := solve.IsDNS(tt.typ); got != tt.isDNS {
			t.Errorf("IsDNS(%q) = %v, want %v", tt.typ, got, tt.isDNS)
		}
		if got := solve.NeedsAccount(tt.typ); got != tt.needsAccount {
			t.Errorf("NeedsAccount(%q) = %v, want %v", tt.typ, got, tt.needsAccount)
		}
	}
}

func TestTypes(t *testing.T) {
	all := []string{solve.HTTP01, solve.TLSALPN01, solve.DNS01, solve.DNSAccount01, solve.DNSPersist01}
	got := solve.Types()
	if len(got) != len(all) {
		t.Fatalf("Types() = %v, want %v in some order", got, all)
	}
	for _, typ := range all {
		if !slices.Contains(got, typ) {
			t.Errorf("Types() = %v lacks %s", got, typ)
		}
	}
	got[0] = "mangled"
	if slices.Contains(solve.Types(), "mangled") {
		t.Error("Types() shares its slice between calls")
	}
}

func TestTXTChallenges(t *testing.T) {
	got := solve.TXTChallenges()
	if want := []string{solve.DNS01, solve.DNSAccount01}; !slices.Equal(got, want) {
		t.Fatalf("TXTChallenges() = %v, want %v (dns-01 first: the default)", got, want)
	}
	for _, typ := range got {
		if !solve.IsDNS(typ) || !slices.Contains(solve.Types(), typ) {
			t.Errorf("TXT challenge %s is not a DNS type of Types()", typ)
		}
	}
	got[0] = "mangled"
	if solve.TXTChallenges()[0] != solve.DNS01 {
		t.Error("TXTChallenges() shares its slice between calls")
	}
}

func TestApplicable(t *testing.T) {
	ids := []ident.Identifier{dnsID("example.com"), dnsID("*.example.com"), ipID("192.0.2.1"), ipID("2001:db8::1")}
	// want[type] lists, for each of ids, whether the type can validate it.
	want := map[string][]bool{
		solve.HTTP01:       {true, false, true, true},
		solve.TLSALPN01:    {true, false, true, true},
		solve.DNS01:        {true, true, false, false},
		solve.DNSAccount01: {true, true, false, false},
		solve.DNSPersist01: {true, true, false, false},
	}
	if len(want) != len(solve.Types()) {
		t.Fatalf("the table covers %d types, Types() has %d", len(want), len(solve.Types()))
	}
	for typ, row := range want {
		for i, id := range ids {
			if got := solve.Applicable(typ, id); got != row[i] {
				t.Errorf("Applicable(%s, %s) = %v, want %v", typ, id.Value, got, row[i])
			}
		}
	}
}

func TestNotApplicableReason(t *testing.T) {
	kinds := []string{"rfc2136", "dns-embedded", "acme-dns"}
	dnsTypes := []string{solve.DNS01, solve.DNSAccount01, solve.DNSPersist01}
	tests := []struct {
		name   string
		typ    string
		id     ident.Identifier
		kinds  []string
		want   []string // each appears in the reason
		absent []string // none does
	}{
		{name: "wildcard over http-01", typ: solve.HTTP01, id: dnsID("*.example.com"), kinds: kinds,
			want:   append([]string{"wildcard", "a path of kind rfc2136, dns-embedded or acme-dns"}, dnsTypes...),
			absent: []string{solve.HTTP01, solve.TLSALPN01}},
		{name: "wildcard, one kind", typ: solve.TLSALPN01, id: dnsID("*.example.com"), kinds: []string{"rfc2136"},
			want:   append([]string{"wildcard", "a path of kind rfc2136"}, dnsTypes...),
			absent: []string{solve.HTTP01, solve.TLSALPN01}},
		{name: "wildcard, no kinds given", typ: solve.HTTP01, id: dnsID("*.example.com"),
			want:   append([]string{"wildcard", "detour paths"}, dnsTypes...),
			absent: []string{"a path of kind"}},
		{name: "IPv4 over dns-01", typ: solve.DNS01, id: ipID("192.0.2.1"), kinds: kinds,
			want: []string{"an IP address cannot be validated through DNS (RFC 8738)", "http-01 or tls-alpn-01"}},
		{name: "IPv6 over dns-account-01", typ: solve.DNSAccount01, id: ipID("2001:db8::1"), kinds: kinds,
			want: []string{"RFC 8738", "http-01 or tls-alpn-01"}},
		{name: "IP over dns-persist-01", typ: solve.DNSPersist01, id: ipID("192.0.2.1"),
			want: []string{"RFC 8738", "http-01 or tls-alpn-01"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if solve.Applicable(tt.typ, tt.id) {
				t.Fatalf("Applicable(%s, %s) = true; the case is meant not to be", tt.typ, tt.id.Value)
			}
			got := solve.NotApplicableReason(tt.typ, tt.id, tt.kinds)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("NotApplicableReason = %q, want it to contain %q", got, w)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(got, a) {
					t.Errorf("NotApplicableReason = %q, want it not to contain %q", got, a)
				}
			}
		})
	}
}

func TestChallengeTXT(t *testing.T) {
	const keyAuth = "123"
	const value = "pmWkWSBCL51Bfkhn79xPuKBKHz__H6B-mY6G9_eieuM"
	tests := []struct {
		name     string
		ch       solve.Challenge
		wantName string
		wantErr  bool
	}{
		{name: "dns-01", ch: solve.Challenge{Type: solve.DNS01, Identifier: dnsID("example.com"), KeyAuthorization: keyAuth},
			wantName: "_acme-challenge.example.com."},
		{name: "dns-01 wildcard", ch: solve.Challenge{Type: solve.DNS01, Identifier: dnsID("*.example.com"), KeyAuthorization: keyAuth},
			wantName: "_acme-challenge.example.com."},
		{name: "dns-account-01", ch: solve.Challenge{Type: solve.DNSAccount01, Identifier: dnsID("example.org"),
			KeyAuthorization: keyAuth, AccountURL: exampleAccount},
			wantName: "_" + exampleAccountLabel + "._acme-challenge.example.org."},
		{name: "dns-account-01 without account", ch: solve.Challenge{Type: solve.DNSAccount01, Identifier: dnsID("example.org"),
			KeyAuthorization: keyAuth}, wantErr: true},
		{name: "http-01", ch: solve.Challenge{Type: solve.HTTP01, Identifier: dnsID("example.com"), KeyAuthorization: keyAuth}, wantErr: true},
		{name: "IP", ch: solve.Challenge{Type: solve.DNS01, Identifier: ipID("192.0.2.1"), KeyAuthorization: keyAuth}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, val, err := tt.ch.TXT()
			if tt.wantErr {
				if err == nil {
					t.Fatalf("TXT() = %q, %q, nil; want an error", name, val)
				}
				return
			}
			if err != nil || name != tt.wantName || val != value {
				t.Fatalf("TXT() = %q, %q, %v; want %q, %q", name, val, err, tt.wantName, value)
			}
		})
	}
}

func TestChallengeDNS01(t *testing.T) {
	for _, id := range []string{"example.com", "*.example.com"} {
		ch := solve.Challenge{Type: solve.DNS01, Identifier: dnsID(id), Token: "tok", KeyAuthorization: "tok.thumb"}
		if got, want := ch.DNS01Name(), "_acme-challenge.example.com."; got != want {
			t.Errorf("DNS01Name() of %s = %q, want %q", id, got, want)
		}
		if got, want := ch.DNS01Value(), solve.TXTValue("tok.thumb"); got != want {
			t.Errorf("DNS01Value() of %s = %q, want %q", id, got, want)
		}
		name, value, err := ch.TXT()
		if err != nil || name != ch.DNS01Name() || value != ch.DNS01Value() {
			t.Errorf("TXT() = %q, %q, %v; DNS01Name/DNS01Value say %q, %q", name, value, err, ch.DNS01Name(), ch.DNS01Value())
		}
	}
}

func TestHTTP01Path(t *testing.T) {
	ch := solve.Challenge{Type: solve.HTTP01, Token: "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"}
	if got, want := ch.HTTP01Path(), "/.well-known/acme-challenge/evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"; got != want {
		t.Errorf("HTTP01Path() = %q, want %q", got, want)
	}
}
