package importer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// jwk is a private JSON Web Key (RFC 7517, RFC 7518 §6), as certbot keeps
// an account key in private_key.json.
type jwk struct {
	Kty string `json:"kty"`
	// RSA (RFC 7518 §6.3).
	N, E, D, P, Q, DP, DQ, QI string
	// EC (RFC 7518 §6.2).
	Crv, X, Y string
}

// parseJWK returns the private key of a JWK document.
func parseJWK(data []byte) (crypto.Signer, error) {
	var k jwk
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key: %w", err)
	}
	num := func(name, v string) (*big.Int, error) {
		if v == "" {
			return nil, fmt.Errorf("member %q is missing", name)
		}
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("member %q is not base64url: %w", name, err)
		}
		return new(big.Int).SetBytes(b), nil
	}
	switch k.Kty {
	case "RSA":
		var key rsa.PrivateKey
		var e *big.Int
		var err error
		for _, f := range []struct {
			name, v string
			to      **big.Int
		}{{"n", k.N, &key.N}, {"e", k.E, &e}, {"d", k.D, &key.D}} {
			if *f.to, err = num(f.name, f.v); err != nil {
				return nil, err
			}
		}
		if !e.IsInt64() || e.Int64() > 1<<31-1 {
			return nil, errors.New("the RSA public exponent is out of range")
		}
		key.E = int(e.Int64())
		if k.P != "" && k.Q != "" {
			p, err := num("p", k.P)
			if err != nil {
				return nil, err
			}
			q, err := num("q", k.Q)
			if err != nil {
				return nil, err
			}
			key.Primes = []*big.Int{p, q}
		}
		if err := key.Validate(); err != nil {
			return nil, fmt.Errorf("invalid RSA key: %w", err)
		}
		key.Precompute()
		return &key, nil
	case "EC":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("unsupported curve %q", k.Crv)
		}
		d, err := num("d", k.D)
		if err != nil {
			return nil, err
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(d.Bytes()) > size {
			return nil, errors.New("the EC private scalar is too long for its curve")
		}
		raw := make([]byte, size)
		d.FillBytes(raw)
		key, err := ecdsa.ParseRawPrivateKey(curve, raw)
		if err != nil {
			return nil, fmt.Errorf("invalid EC key: %w", err)
		}
		if k.X != "" {
			x, err := num("x", k.X)
			if err != nil {
				return nil, err
			}
			pub, _ := key.PublicKey.Bytes()
			if x.Cmp(new(big.Int).SetBytes(pub[1:1+size])) != 0 {
				return nil, errors.New("the public point does not belong to the private key")
			}
		}
		return key, nil
	case "":
		return nil, errors.New(`member "kty" is missing`)
	}
	return nil, fmt.Errorf("unsupported key type %q", k.Kty)
}
