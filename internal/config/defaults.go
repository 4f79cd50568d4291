package config

import (
	"path/filepath"
	"slices"
	"strings"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/ident"
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

// DefaultName is the name of a certificate that does not set one: its first
// identifier, with a leading "*." spelled "wildcard." and the colons of an
// IPv6 address replaced by "-".
func DefaultName(first ident.Identifier) string {
	n := first.Value
	if first.IsWildcard() {
		n = "wildcard." + first.Base()
	}
	return strings.ReplaceAll(n, ":", "-")
}

// relativeTo resolves a file named in the configuration against the
// configuration file's directory.
func relativeTo(base, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(base, p)
}
