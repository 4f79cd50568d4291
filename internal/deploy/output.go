package deploy

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"software.sslmate.com/src/go-pkcs12"
)

// Output formats (see Output.Format).
const (
	FormatCert      = "cert"      // the leaf
	FormatChain     = "chain"     // the intermediates
	FormatFullchain = "fullchain" // leaf then intermediates
	FormatPrivkey   = "privkey"   // the private key
	// FormatCombined is leaf, intermediates and private key in one PEM
	// file, as HAProxy's crt wants it.
	FormatCombined = "combined"
	// FormatPKCS12 is a PKCS#12 file (RFC 7292) with the key, the leaf and
	// the intermediates, encrypted with AES-256 and PBKDF2 (for Java and
	// Windows).
	FormatPKCS12 = "pkcs12"
)

// Output is a copy of the live certificate written somewhere else, in a
// format, owned by a user and group, with a mode: for a service that runs
// as another user or wants another layout.
type Output struct {
	Path   string
	Format string
	// Owner and Group are user and group names or numeric ids; empty
	// leaves the file owned by Detour's user.
	Owner, Group string
	// Mode is the permission bits; 0 means 0600 for formats holding the
	// private key and 0644 for the others.
	Mode fs.FileMode
	// Password encrypts a PKCS#12 output ("" is allowed).
	Password string
}

// tmpMarker is part of the name of the temporary file an output is written
// to before it is renamed into place; leftovers of a crash carry it.
const tmpMarker = ".detour-tmp-"

// holdsKey reports whether format f contains the private key.
func holdsKey(f string) bool {
	return f == FormatPrivkey || f == FormatCombined || f == FormatPKCS12
}

// Write renders the live files of i in o.Format and replaces o.Path
// atomically (a temporary file in the same directory, fsynced, then
// renamed). Temporary files a killed earlier write left are removed first.
func (o Output) Write(i Info) error {
	data, err := o.render(i)
	if err != nil {
		return fmt.Errorf("output %s: %w", o.Path, err)
	}
	uid, gid, err := o.ids()
	if err != nil {
		return fmt.Errorf("output %s: %w", o.Path, err)
	}
	mode := o.Mode
	if mode == 0 {
		mode = 0o644
		if holdsKey(o.Format) {
			mode = 0o600
		}
	}
	dir, base := filepath.Split(o.Path)
	sweepTemps(dir, base)
	f, err := os.CreateTemp(dir, "."+base+tmpMarker+"*")
	if err != nil {
		return fmt.Errorf("output %s: creating the file: %w; check that the directory exists and Detour may write to it", o.Path, err)
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// Restrict before any secret is written, then widen to mode.
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("output %s: %w", o.Path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("output %s: writing: %w", o.Path, err)
	}
	if uid >= 0 || gid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return fmt.Errorf("output %s: setting owner %q group %q: %w (changing the owner needs root or CAP_CHOWN)", o.Path, o.Owner, o.Group, err)
		}
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("output %s: setting mode %o: %w", o.Path, mode, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("output %s: syncing: %w", o.Path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("output %s: closing: %w", o.Path, err)
	}
	if err := os.Rename(tmp, o.Path); err != nil {
		return fmt.Errorf("output %s: renaming into place: %w", o.Path, err)
	}
	done = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// sweepTemps removes temporary files of earlier, interrupted writes of base.
func sweepTemps(dir, base string) {
	m, _ := filepath.Glob(filepath.Join(dir, "."+base+tmpMarker+"*"))
	for _, p := range m {
		_ = os.Remove(p)
	}
}

// ids resolves Owner and Group; -1 leaves one unchanged.
func (o Output) ids() (uid, gid int, err error) {
	uid, gid = -1, -1
	if o.Owner != "" {
		if uid, err = strconv.Atoi(o.Owner); err != nil {
			u, lerr := user.Lookup(o.Owner)
			if lerr != nil {
				return 0, 0, fmt.Errorf("owner %q: %w; name an existing user", o.Owner, lerr)
			}
			uid, _ = strconv.Atoi(u.Uid)
		}
	}
	if o.Group != "" {
		if gid, err = strconv.Atoi(o.Group); err != nil {
			g, lerr := user.LookupGroup(o.Group)
			if lerr != nil {
				return 0, 0, fmt.Errorf("group %q: %w; name an existing group", o.Group, lerr)
			}
			gid, _ = strconv.Atoi(g.Gid)
		}
	}
	return uid, gid, nil
}

// render reads the live files of i and produces the bytes of o.Format.
func (o Output) render(i Info) ([]byte, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(i.LiveDir, name))
		if err != nil {
			return nil, fmt.Errorf("reading the live certificate: %w", err)
		}
		return b, nil
	}
	switch o.Format {
	case FormatCert, FormatChain, FormatFullchain, FormatPrivkey:
		return read(o.Format + ".pem")
	case FormatCombined:
		full, err := read("fullchain.pem")
		if err != nil {
			return nil, err
		}
		key, err := read("privkey.pem")
		if err != nil {
			return nil, err
		}
		out := bytes.TrimRight(full, "\n")
		out = append(out, '\n')
		return append(out, key...), nil
	case FormatPKCS12:
		full, err := read("fullchain.pem")
		if err != nil {
			return nil, err
		}
		keyPEM, err := read("privkey.pem")
		if err != nil {
			return nil, err
		}
		return encodePKCS12(full, keyPEM, o.Password)
	}
	return nil, fmt.Errorf("unknown format %q; use cert, chain, fullchain, privkey, combined or pkcs12", o.Format)
}

// encodePKCS12 bundles the leaf (first certificate of fullchain), the rest
// of the chain and the key.
func encodePKCS12(fullchain, keyPEM []byte, password string) ([]byte, error) {
	var certs []*x509.Certificate
	for rest := fullchain; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing the live chain: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("the live fullchain.pem holds no certificate")
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	data, err := pkcs12.Modern.Encode(key, certs[0], certs[1:], password)
	if err != nil {
		return nil, fmt.Errorf("encoding PKCS#12: %w", err)
	}
	return data, nil
}

// parseKey reads a PKCS#8, EC or PKCS#1 private key PEM.
func parseKey(p []byte) (crypto.PrivateKey, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil, errors.New("the live privkey.pem holds no PEM block")
	}
	switch {
	case b.Type == "PRIVATE KEY":
		return x509.ParsePKCS8PrivateKey(b.Bytes)
	case b.Type == "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(b.Bytes)
	case b.Type == "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(b.Bytes)
	}
	return nil, fmt.Errorf("the live privkey.pem holds a %q block, not a private key", strings.ToLower(b.Type))
}
