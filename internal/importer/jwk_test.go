package importer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"
)

func TestImportJWK(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, key := range map[string]crypto.Signer{"RSA": rsaKey, "P-256": p256, "P-384": p384} {
		doc := ecJWKOrRSA(key)
		got, err := parseJWK([]byte(doc))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if pub, ok := got.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
			t.Errorf("%s: parsed another key", name)
		}
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	mixed := strings.Replace(ecJWK(p256), `"d":"`, `"d":"x`, 1)
	for doc, want := range map[string]string{
		`{"n": "AQAB"}`:                            `"kty" is missing`,
		`{"kty": "oct", "k": "AAAA"}`:              `unsupported key type "oct"`,
		`{"kty": "EC", "crv": "P-256", "d": "*"}`:  `"d" is not base64url`,
		`{"kty": "RSA", "n": "AQAB", "e": "AQAB"}`: `"d" is missing`,
		mixed: "",
		// The private scalar of one key with the public point of another.
		strings.Replace(ecJWK(other), `"d":"`+jwkMember(ecJWK(other), "d"), `"d":"`+jwkMember(ecJWK(p256), "d"), 1): "does not belong",
		`not json`: "not a JSON Web Key",
	} {
		_, err := parseJWK([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseJWK(%.40s) = %v, want an error mentioning %q", doc, err, want)
		}
	}
}

// ecJWKOrRSA encodes key as certbot would.
func ecJWKOrRSA(key crypto.Signer) string {
	if k, ok := key.(*rsa.PrivateKey); ok {
		return rsaJWK(k)
	}
	return ecJWK(key.(*ecdsa.PrivateKey))
}

// jwkMember returns the value of member name of a compact JWK document.
func jwkMember(doc, name string) string {
	_, rest, _ := strings.Cut(doc, `"`+name+`":"`)
	v, _, _ := strings.Cut(rest, `"`)
	return v
}
