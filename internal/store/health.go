package store

import (
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// LiveError says what is wrong with a certificate's live pair: what a web
// server reading live/<name>/ would get is missing, unreadable, mismatched,
// expired, or not the certificate the record describes.
type LiveError struct {
	Name string
	// Problem says what is wrong, naming the file.
	Problem string
	// Err is the underlying error, if any.
	Err error
	// Expired reports that the pair is sound but its certificate has
	// expired.
	Expired bool
}

func (e *LiveError) Error() string {
	return "the live certificate of " + e.Name + " is broken: " + e.Problem
}
func (e *LiveError) Unwrap() error { return e.Err }

// CheckLive verifies the live pair of name, as a web server would read it,
// against rec, its record: live/<name> resolves, cert.pem holds a
// certificate and privkey.pem its key, the certificate has not expired at
// now and has the serial the record names. It reads the two files of one
// version (the one live/<name> points at when checked), takes no lock and
// changes nothing. The error is a *LiveError.
func (f *FS) CheckLive(name string, rec Record, now time.Time) error {
	if err := ValidName(name); err != nil {
		return err
	}
	broken := func(err error, format string, args ...any) error {
		return &LiveError{Name: name, Problem: fmt.Sprintf(format, args...), Err: err}
	}
	dir := f.liveDir(name)
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return broken(err, "%s does not exist", dir)
	}
	if err != nil {
		return broken(err, "reading %s: %v", dir, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(dir)
		if err != nil {
			return broken(err, "reading the link %s: %v", dir, err)
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(dir), target)
		}
		dir = target // both files from this one version
	}
	link := dir != f.liveDir(name)
	read := func(file string) ([]byte, error) {
		data, err := os.ReadFile(filepath.Join(dir, file))
		if link && errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(dir); serr != nil {
				return nil, fmt.Errorf("%s points at %s, which does not exist", f.liveDir(name), dir)
			}
		}
		return data, err
	}
	certPEM, err := read("cert.pem")
	if err != nil {
		return broken(err, "reading %s: %v", f.LivePath(name, "cert.pem"), err)
	}
	keyPEM, err := read("privkey.pem")
	if err != nil {
		return broken(err, "reading %s: %v", f.LivePath(name, "privkey.pem"), err)
	}
	if rec.LiveSum != "" && liveSum(certPEM, keyPEM) == rec.LiveSum {
		// The pair Detour stored (and verified) for this record.
		if !now.Before(rec.NotAfter) {
			return &LiveError{Name: name, Expired: true, Problem: fmt.Sprintf("the certificate expired at %s", rec.NotAfter.UTC().Format(time.RFC3339))}
		}
		return nil
	}
	leaf, err := Bundle{CertPEM: certPEM}.Leaf()
	if err != nil {
		return broken(err, "%s does not hold a certificate (%v)", f.LivePath(name, "cert.pem"), err)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return broken(err, "%s does not hold a private key (%v)", f.LivePath(name, "privkey.pem"), err)
	}
	if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return broken(nil, "%s is not the key of %s", f.LivePath(name, "privkey.pem"), f.LivePath(name, "cert.pem"))
	}
	if !now.Before(leaf.NotAfter) {
		return &LiveError{Name: name, Expired: true, Problem: fmt.Sprintf("the certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))}
	}
	if serial := leaf.SerialNumber.Text(16); rec.Serial != "" && serial != rec.Serial {
		return broken(nil, "%s has serial %s, but the record names %s", f.LivePath(name, "cert.pem"), serial, rec.Serial)
	}
	return nil
}
