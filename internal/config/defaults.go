package config

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"slices"
	"strings"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/store"
)

// applyDefaults fills every value the file left out. It never reports
// errors: a value it cannot default from (an invalid domain, an unknown
// kind) is left for validation.
func applyDefaults(f *file, filename string) {
	if f.StateDir == "" {
		f.StateDir = DefaultStateDir
	}
	if f.CA == "" {
		f.CA = DefaultCA
	}
	if f.KeyType == "" {
		f.KeyType = string(acme.ECDSAP256)
	}
	base := filepath.Dir(filename)
	for _, t := range f.CAs {
		if s, ok := shortcuts[t.name]; ok {
			if t.Directory == "" {
				t.Directory = s.directory
			}
			if t.Staging == "" && t.Directory == s.directory {
				t.Staging = s.staging
			}
		}
		if t.Email == "" {
			t.Email = f.Email
		}
		t.RootBundle = relativeTo(base, t.RootBundle)
		t.EABHMACKeyFile = relativeTo(base, t.EABHMACKeyFile)
	}
	for _, t := range f.Certs {
		c := &t.cert
		if c.CA == "" {
			c.CA = f.CA
		}
		if c.KeyType == "" {
			c.KeyType = f.KeyType
		}
		if !t.has[keyPaths] {
			c.Paths = slices.Clone(DefaultPaths)
		}
		if !t.has[keyName] && len(c.Domains) > 0 {
			if id, err := ident.Parse(c.Domains[0]); err == nil {
				c.Name = DefaultName(id)
			}
		}
	}
}

// DefaultName is the name of a certificate that does not set one, the one
// rule for config entries and one-off certificates alike. It is the first
// identifier, with a leading "*." spelled "wildcard.", and an IPv6 address
// written with "-" for ":" ("2001:db8::1" is "2001-db8--1"); an address
// that starts with "::" gets its first zero group written out ("::1" is
// "0--1", from the equivalent "0::1"), as a name may not start with "-".
// The result is always accepted by store.ValidName: a name longer than
// store.MaxNameLen (a DNS name may have 253 characters) keeps its start and
// ends in "-" and the first hex digits of its SHA-256, so that it stays
// recognisable, distinct and the same on every run.
func DefaultName(first ident.Identifier) string {
	n := first.Value
	if first.IsWildcard() {
		n = "wildcard." + first.Base()
	}
	if first.Type == ident.TypeIP && strings.HasPrefix(n, "::") {
		// The canonical text (RFC 5952) never starts with "0::", so the
		// names of distinct addresses stay distinct.
		n = "0" + n
	}
	n = strings.ReplaceAll(n, ":", "-")
	if len(n) <= store.MaxNameLen {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	suffix := "-" + hex.EncodeToString(sum[:])[:shortHashLen]
	return strings.TrimRight(n[:store.MaxNameLen-len(suffix)], ".-") + suffix
}

// shortHashLen is how many hex digits of SHA-256 tell shortened default
// names apart: 40 bits, and config validation reports any clash anyway.
const shortHashLen = 10

// relativeTo resolves a file named in the configuration against the
// configuration file's directory.
func relativeTo(base, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(base, p)
}
