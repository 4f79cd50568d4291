package store

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
)

// Leaf parses and returns the leaf certificate, the first CERTIFICATE block
// of b.CertPEM.
func (b Bundle) Leaf() (*x509.Certificate, error) {
	block, _ := pem.Decode(b.CertPEM)
	if block == nil {
		return nil, errors.New("parsing leaf certificate: no PEM data in the certificate")
	}
	if block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("parsing leaf certificate: PEM block is %q, want CERTIFICATE", block.Type)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing leaf certificate: %w", err)
	}
	return leaf, nil
}

// LiveSum identifies the files a web server reads, cert.pem and
// privkey.pem, as stored for b: hex SHA-256 of the certificate's PEM, a
// zero byte and the key's PEM. A record keeps it so that checking an
// unchanged live pair needs no parsing.
func (b Bundle) LiveSum() string { return liveSum(b.CertPEM, b.KeyPEM) }

func liveSum(certPEM, keyPEM []byte) string {
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)
	return hex.EncodeToString(h.Sum(nil))
}

// Verify checks that b is usable as a server certificate: the leaf parses,
// every block of the chain is a certificate that parses, and the private key
// parses and is the key of the leaf. It does not check validity dates or
// trust, which are the CA's and the client's business.
func (b Bundle) Verify() error {
	leaf, err := b.Leaf()
	if err != nil {
		return err
	}
	rest := b.ChainPEM
	for i := 1; ; i++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("parsing chain: block %d is %q, want CERTIFICATE", i, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("parsing chain certificate %d: %w", i, err)
		}
	}
	key, err := parsePrivateKey(b.KeyPEM)
	if err != nil {
		return err
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return errors.New("private key does not match the certificate's public key; store the key the certificate was issued for")
	}
	return nil
}

// parsePrivateKey parses the first PEM block of keyPEM as a PKCS#8, SEC 1
// (EC PRIVATE KEY) or PKCS#1 (RSA PRIVATE KEY) private key.
func parsePrivateKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("parsing private key: no PEM data in the key")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("parsing private key: PEM block is %q, want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing private key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("parsing private key: unsupported key type %T", key)
	}
	return signer, nil
}
