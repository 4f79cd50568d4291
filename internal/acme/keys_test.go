package acme_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/acme"
)

func TestParseKeyType(t *testing.T) {
	tests := []struct {
		in   string
		want acme.KeyType
	}{
		{"", acme.ECDSAP256},
		{"ecdsa-p256", acme.ECDSAP256},
		{"ECDSA-P256", acme.ECDSAP256},
		{"  ecdsa-p256 ", acme.ECDSAP256},
		{"ecdsa", acme.ECDSAP256},
		{"ec256", acme.ECDSAP256},
		{"EC256", acme.ECDSAP256},
		{"p256", acme.ECDSAP256},
		{"P-256", acme.ECDSAP256},
		{"secp256r1", acme.ECDSAP256},
		{"ecdsa-p384", acme.ECDSAP384},
		{"ec384", acme.ECDSAP384},
		{"p384", acme.ECDSAP384},
		{"p-384", acme.ECDSAP384},
		{"secp384r1", acme.ECDSAP384},
		{"rsa", acme.RSA2048},
		{"rsa2048", acme.RSA2048},
		{"RSA-2048", acme.RSA2048},
		{"rsa3072", acme.RSA3072},
		{"rsa-3072", acme.RSA3072},
		{"rsa4096", acme.RSA4096},
		{"Rsa-4096", acme.RSA4096},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := acme.ParseKeyType(tt.in)
			if err != nil || got != tt.want {
				t.Errorf("ParseKeyType(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
	// Every listed type parses as itself.
	for _, k := range acme.KeyTypes {
		if got, err := acme.ParseKeyType(string(k)); err != nil || got != k {
			t.Errorf("ParseKeyType(%q) = %q, %v", k, got, err)
		}
	}
	if acme.KeyTypes[0] != acme.ECDSAP256 {
		t.Errorf("KeyTypes[0] = %q; the default must come first", acme.KeyTypes[0])
	}
	for _, bad := range []string{"ed25519", "rsa1024", "ecdsa-p521", "p-521", "rsa 2048", "ecdsa_p256"} {
		t.Run("reject "+bad, func(t *testing.T) {
			k, err := acme.ParseKeyType(bad)
			if err == nil {
				t.Fatalf("ParseKeyType(%q) = %q, want an error", bad, k)
			}
			if k != "" {
				t.Errorf("ParseKeyType(%q) returned %q alongside an error", bad, k)
			}
			msg := err.Error()
			if !strings.Contains(msg, "unknown key type") {
				t.Errorf("error %q does not say the key type is unknown", msg)
			}
			for _, k := range acme.KeyTypes {
				if !strings.Contains(msg, string(k)) {
					t.Errorf("error %q does not list %q", msg, k)
				}
			}
		})
	}
}

func TestGenerateRoundTrip(t *testing.T) {
	// RSA 4096 generation is too slow for a unit test; ParseKeyType covers
	// the name, and KeyTypeOf is checked below with a synthetic modulus.
	for _, k := range []acme.KeyType{acme.ECDSAP256, acme.ECDSAP384, acme.RSA2048, acme.RSA3072, ""} {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			key, err := k.Generate()
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			want := k
			if want == "" {
				want = acme.ECDSAP256
			}
			got, err := acme.KeyTypeOf(key.Public())
			if err != nil || got != want {
				t.Fatalf("KeyTypeOf(generated %q) = %q, %v", k, got, err)
			}
			// The key signs, and PKCS#8 PEM round-trips it.
			digest := make([]byte, 32)
			opts := crypto.SignerOpts(crypto.SHA256)
			if _, err := key.Sign(rand.Reader, digest, opts); err != nil {
				t.Errorf("Sign: %v", err)
			}
			pemBytes, err := acme.EncodeKey(key)
			if err != nil {
				t.Fatalf("EncodeKey: %v", err)
			}
			if b, _ := pem.Decode(pemBytes); b == nil || b.Type != "PRIVATE KEY" {
				t.Fatalf("EncodeKey wrote %q, want a PRIVATE KEY PEM block", pemBytes)
			}
			back, err := acme.DecodeKey(pemBytes)
			if err != nil {
				t.Fatalf("DecodeKey: %v", err)
			}
			if !keysEqual(back, key) {
				t.Error("DecodeKey(EncodeKey(k)) differs from k")
			}
		})
	}
	if _, err := acme.KeyType("dsa").Generate(); err == nil || !strings.Contains(err.Error(), `"dsa"`) {
		t.Errorf(`KeyType("dsa").Generate() error = %v, want one naming the type`, err)
	}
}

func keysEqual(a, b crypto.Signer) bool {
	e, ok := a.(interface{ Equal(crypto.PrivateKey) bool })
	return ok && e.Equal(b)
}

func TestKeyTypeOf(t *testing.T) {
	rsaOf := func(bits int) *rsa.PublicKey {
		return &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), uint(bits-1)), E: 65537}
	}
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		key  crypto.PublicKey
		want acme.KeyType // "": error
	}{
		{"rsa 2048", rsaOf(2048), acme.RSA2048},
		{"rsa 3072", rsaOf(3072), acme.RSA3072},
		{"rsa 4096", rsaOf(4096), acme.RSA4096},
		{"rsa 1024", rsaOf(1024), ""},
		{"rsa 2047", rsaOf(2047), ""},
		{"ecdsa p521", p521.Public(), ""},
		{"ed25519", edPub, ""},
		{"private key instead of public", p521, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := acme.KeyTypeOf(tt.key)
			if tt.want == "" {
				if err == nil {
					t.Errorf("KeyTypeOf = %q, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("KeyTypeOf = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestDecodeKeyFormats(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ec384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block := func(typ string, der []byte) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	}
	sec1 := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	ecParams := block("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07})
	certBlock := block("CERTIFICATE", []byte("not parsed"))
	tests := []struct {
		name string
		data []byte
		want crypto.Signer
	}{
		{"PKCS#8 EC", block("PRIVATE KEY", pkcs8(ec)), ec},
		{"PKCS#8 RSA", block("PRIVATE KEY", pkcs8(rsaKey)), rsaKey},
		{"PKCS#8 Ed25519", block("PRIVATE KEY", pkcs8(edKey)), edKey},
		{"SEC 1 P-256", block("EC PRIVATE KEY", sec1(ec)), ec},
		{"SEC 1 P-384", block("EC PRIVATE KEY", sec1(ec384)), ec384},
		{"SEC 1 after EC PARAMETERS (openssl ecparam -genkey)", append(bytes.Clone(ecParams), block("EC PRIVATE KEY", sec1(ec))...), ec},
		{"PKCS#1", block("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), rsaKey},
		{"key after a certificate", append(bytes.Clone(certBlock), block("PRIVATE KEY", pkcs8(ec))...), ec},
		{"text around the block", append([]byte("Bag Attributes\n"), block("EC PRIVATE KEY", sec1(ec))...), ec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := acme.DecodeKey(tt.data)
			if err != nil {
				t.Fatalf("DecodeKey: %v", err)
			}
			if !keysEqual(got, tt.want) {
				t.Error("decoded key differs from the original")
			}
			// Whatever came in goes out as PKCS#8 and back unchanged.
			out, err := acme.EncodeKey(got)
			if err != nil {
				t.Fatalf("EncodeKey: %v", err)
			}
			again, err := acme.DecodeKey(out)
			if err != nil || !keysEqual(again, tt.want) {
				t.Errorf("PKCS#8 round trip: %v", err)
			}
		})
	}

	bad := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no private key PEM block"},
		{"not PEM", []byte("-----BEGIN nonsense"), "no private key PEM block"},
		{"only a certificate", certBlock, "no private key PEM block"},
		{"public key", block("PUBLIC KEY", []byte{1, 2, 3}), "no private key PEM block"},
		{"corrupt PKCS#8", block("PRIVATE KEY", []byte{1, 2, 3}), "parsing PKCS#8 key"},
		{"corrupt SEC 1", block("EC PRIVATE KEY", []byte{1, 2, 3}), ""},
		{"corrupt PKCS#1", block("RSA PRIVATE KEY", []byte{1, 2, 3}), ""},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			k, err := acme.DecodeKey(tt.data)
			if err == nil {
				t.Fatalf("DecodeKey = %T, want an error", k)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// opaqueSigner is a crypto.Signer that x509 cannot marshal.
type opaqueSigner struct{ pub crypto.PublicKey }

func (s opaqueSigner) Public() crypto.PublicKey { return s.pub }
func (s opaqueSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, nil
}

func TestEncodeKeyUnsupported(t *testing.T) {
	_, err := acme.EncodeKey(opaqueSigner{})
	if err == nil || !strings.Contains(err.Error(), "encoding private key") {
		t.Errorf("EncodeKey(opaque signer) error = %v, want one saying encoding failed", err)
	}
}

func TestParseReason(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"unspecified", 0},
		{"Unspecified", 0},
		{"keyCompromise", 1},
		{"key-compromise", 1},
		{"KEY_COMPROMISE", 1},
		{"key compromise", 1},
		{"affiliationChanged", 3},
		{"affiliation-changed", 3},
		{"superseded", 4},
		{"SUPERSEDED", 4},
		{"cessationOfOperation", 5},
		{"cessation_of_operation", 5},
		// Numeric codes (RFC 5280 §5.3.1) of the accepted reasons.
		{"0", 0},
		{"1", 1},
		{"3", 3},
		{"4", 4},
		{"5", 5},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := acme.ParseReason(tt.in)
			if err != nil || got != tt.want {
				t.Errorf("ParseReason(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "compromised", "cACompromise", "2", "6", "-1", "99", "key.compromise"} {
		t.Run("reject "+bad, func(t *testing.T) {
			got, err := acme.ParseReason(bad)
			if err == nil {
				t.Fatalf("ParseReason(%q) = %d, want an error", bad, got)
			}
			for _, name := range []string{"unknown revocation reason", "keycompromise", "superseded", "cessationofoperation", "affiliationchanged", "unspecified"} {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("error %q does not contain %q", err, name)
				}
			}
		})
	}
}
