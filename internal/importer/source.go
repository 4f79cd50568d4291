package importer

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/detour-acme/detour/internal/store"
)

// Clients whose state is read.
const (
	Certbot = "certbot"
	Lego    = "lego"
)

// Source is what another ACME client keeps: its accounts, its
// certificates, and how it renews each. Reading it changes nothing.
type Source struct {
	// Client is Certbot or Lego; Dir is the directory read (absolute).
	Client, Dir string
	// Accounts are the accounts found, in the order read.
	Accounts []*Account
	// Certificates are the certificates found, sorted by name; one that
	// cannot be read has Err set and the others are still read.
	Certificates []*Certificate
	// Skipped lists what was found and is left out, with the reason (an
	// account or certificate of another CA, a file that is not one).
	Skipped []string
}

// Account is an ACME account (RFC 8555 §7.1.2) of the source.
type Account struct {
	// ID is the source's name for it: certbot's account id, lego's
	// e-mail directory.
	ID string
	// Directory is the CA's directory URL, URL the account's URL.
	Directory, URL string
	// Email is the account's contact, when the source keeps it.
	Email string
	// Key is the account key; File where it was read.
	Key  crypto.Signer
	File string
	// Err says why the account cannot be used (its key or URL cannot be
	// read); its certificates are then not imported.
	Err error
}

// Certificate is one certificate of the source, with every version kept.
type Certificate struct {
	// Name is the source's name: certbot's lineage, lego's file name.
	Name string
	// File is where its renewal settings are (certbot's renewal
	// configuration, lego's .json).
	File string
	// Directory is the URL of the CA directory it was obtained from.
	Directory string
	// AccountID names the Account it was obtained with.
	AccountID string
	// Versions are the versions found, ascending; Live is the number (N)
	// of the one the source serves.
	Versions []Version
	Live     int
	// Settings are the renewal settings, in the order read.
	Settings []Setting
	// Err is why the certificate cannot be imported at all (a renewal
	// configuration with a bad line, a live version that does not read).
	Err error
}

// Version is one version of a certificate.
type Version struct {
	// N is the source's number for it (certbot's certN.pem; 1 for lego).
	N      int
	Bundle store.Bundle
	Leaf   *x509.Certificate
	// File is its certificate file.
	File string
	// Err is why it cannot be read; such a version is left out.
	Err error
}

// LiveVersion returns the live version, or nil.
func (c *Certificate) LiveVersion() *Version {
	for i := range c.Versions {
		if c.Versions[i].N == c.Live {
			return &c.Versions[i]
		}
	}
	return nil
}

// Setting returns the last setting called key in section, if any.
func (c *Certificate) Setting(section, key string) (Setting, bool) {
	for i := len(c.Settings) - 1; i >= 0; i-- {
		if s := c.Settings[i]; s.Section == section && s.Key == key {
			return s, true
		}
	}
	return Setting{}, false
}

// account returns the source's account id at directory, or nil.
func (s *Source) account(directory, id string) *Account {
	for _, a := range s.Accounts {
		if a.ID == id && a.Directory == directory {
			return a
		}
	}
	return nil
}

// readVersion reads one version from its files: the leaf (certFile, whose
// first block is the leaf; further blocks are the chain when chainFile is
// ""), the chain and the key. It verifies that the key is the leaf's.
func readVersion(n int, certFile, chainFile, keyFile string) Version {
	v := Version{N: n, File: certFile}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		v.Err = err
		return v
	}
	leaf, rest := pem.Decode(certPEM)
	if leaf == nil || leaf.Type != "CERTIFICATE" {
		v.Err = fmt.Errorf("%s holds no PEM CERTIFICATE block", certFile)
		return v
	}
	v.Bundle.CertPEM = pem.EncodeToMemory(leaf)
	if chainFile != "" {
		if v.Bundle.ChainPEM, err = os.ReadFile(chainFile); err != nil {
			v.Err = err
			return v
		}
	} else {
		v.Bundle.ChainPEM = onlyCertificates(rest)
	}
	if v.Bundle.KeyPEM, err = os.ReadFile(keyFile); err != nil {
		v.Err = err
		return v
	}
	if err := v.Bundle.Verify(); err != nil {
		v.Err = fmt.Errorf("%s with %s: %w", certFile, keyFile, err)
		return v
	}
	if v.Leaf, err = v.Bundle.Leaf(); err != nil {
		v.Err = fmt.Errorf("%s: %w", certFile, err)
	}
	return v
}

// onlyCertificates returns the CERTIFICATE blocks of data, re-encoded.
func onlyCertificates(data []byte) []byte {
	var out []byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if b.Type == "CERTIFICATE" {
			out = append(out, pem.EncodeToMemory(b)...)
		}
	}
}

// emailOf returns the first mailto: contact.
func emailOf(contacts []string) string {
	for _, c := range contacts {
		if e, ok := strings.CutPrefix(c, "mailto:"); ok {
			return e
		}
	}
	return ""
}

// checkAccountURL requires an absolute https URL (http for loopback).
func checkAccountURL(u string) error {
	if u == "" {
		return errors.New("the account URL is missing")
	}
	p, err := url.Parse(u)
	if err != nil || p.Host == "" || (p.Scheme != "https" && p.Scheme != "http") {
		return fmt.Errorf("%q is not an account URL", u)
	}
	return nil
}
