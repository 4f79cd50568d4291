package importer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/detour-acme/detour/internal/acme"
)

// LegoDir is lego's default --path, relative to the working directory.
const LegoDir = ".lego"

// LegoDefaultServer is lego's default --server.
const LegoDefaultServer = "https://acme-v02.api.letsencrypt.org/directory"

// LegoOptions are the lego flags `detour import lego` takes: lego's state
// records neither the directory URL (only its host) nor which account
// obtained a certificate nor how it was validated, so the user repeats the
// flags lego was run with. The names are lego's.
type LegoOptions struct {
	// Server is lego's --server (LegoDefaultServer when empty).
	Server string
	// Email is lego's --email: the account. Empty: the only account
	// lego keeps for Server.
	Email string
	// HTTP (--http) answers http-01 with lego's own server on HTTPPort
	// (--http.port, ":80" when empty), or by writing into HTTPWebroot
	// (--http.webroot).
	HTTP        bool
	HTTPPort    string
	HTTPWebroot string
	// TLS (--tls) answers tls-alpn-01 on TLSPort (--tls.port, ":443").
	TLS     bool
	TLSPort string
	// DNS (--dns) is the lego DNS provider that answers dns-01.
	DNS string
	// CredentialsFile is the Detour credentials file (key = value lines)
	// for DNS: lego takes its provider's credentials from environment
	// variables, which are not copied.
	CredentialsFile string
}

// Keys of the settings ReadLego records from LegoOptions: lego's flags.
const (
	legoHTTP        = "--http"
	legoHTTPPort    = "--http.port"
	legoHTTPWebroot = "--http.webroot"
	legoTLS         = "--tls"
	legoTLSPort     = "--tls.port"
	legoDNS         = "--dns"
	legoCredentials = "--credentials-file"
)

// settings returns the options as the settings of every certificate.
func (o LegoOptions) settings() []Setting {
	var out []Setting
	add := func(k, v string) { out = append(out, Setting{Key: k, Value: v}) }
	if o.HTTP || o.HTTPWebroot != "" {
		add(legoHTTP, "true")
		if o.HTTPWebroot != "" {
			add(legoHTTPWebroot, absPath(o.HTTPWebroot))
		} else {
			add(legoHTTPPort, cmpStr(o.HTTPPort, ":80"))
		}
	}
	if o.TLS {
		add(legoTLS, "true")
		add(legoTLSPort, cmpStr(o.TLSPort, ":443"))
	}
	if o.DNS != "" {
		add(legoDNS, o.DNS)
		if o.CredentialsFile != "" {
			add(legoCredentials, absPath(o.CredentialsFile))
		}
	}
	return out
}

// absPath makes a file name given on the command line absolute, as the
// paths that use it need.
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// ReadLego reads lego's --path directory dir (LegoDir by default) as lego
// 4 keeps it: the account of opts.Server and opts.Email under
// accounts/<host>/<email>/ (account.json with the account URL, and
// keys/<email>.key), and every certificate of certificates/ (<name>.crt,
// the leaf and its chain; <name>.issuer.crt; <name>.key; <name>.json,
// which says where the CA keeps it). Certificates another CA issued are
// skipped. lego keeps one version of each. Nothing under dir is written.
func ReadLego(dir string, opts LegoOptions) (Source, error) {
	if dir == "" {
		dir = LegoDir
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Source{}, fmt.Errorf("reading lego's directory %q: %w", dir, err)
	}
	src := Source{Client: Lego, Dir: abs}
	opts.Server = cmpStr(opts.Server, LegoDefaultServer)
	u, err := url.Parse(opts.Server)
	if err != nil || u.Host == "" {
		return src, fmt.Errorf("--server %q is not a directory URL", opts.Server)
	}
	hostDir := strings.ReplaceAll(u.Host, ":", "_")
	acct, err := src.legoAccount(hostDir, opts)
	if err != nil {
		return src, err
	}
	certDir := filepath.Join(abs, "certificates")
	ents, err := os.ReadDir(certDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return src, fmt.Errorf("%s has no certificates/ directory: give lego's --path: %w", abs, err)
		}
		return src, fmt.Errorf("reading lego's certificates: %w", err)
	}
	for _, e := range ents {
		stem, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		c, skip := readLegoCertificate(certDir, stem, u.Host)
		if skip != "" {
			src.Skipped = append(src.Skipped, skip)
			continue
		}
		c.Directory, c.AccountID = opts.Server, acct.ID
		c.Settings = opts.settings()
		src.Certificates = append(src.Certificates, c)
	}
	slices.SortFunc(src.Certificates, func(a, b *Certificate) int { return strings.Compare(a.Name, b.Name) })
	return src, nil
}

// legoAccount reads the account of opts at the CA whose host directory is
// hostDir.
func (s *Source) legoAccount(hostDir string, opts LegoOptions) (*Account, error) {
	root := filepath.Join(s.Dir, "accounts", hostDir)
	email := opts.Email
	if email == "" {
		ents, err := os.ReadDir(root)
		if err != nil {
			return nil, fmt.Errorf("lego keeps no account for %s in %s (give lego's --path, and its --server): %w", opts.Server, root, err)
		}
		var found []string
		for _, e := range ents {
			if e.IsDir() {
				found = append(found, e.Name())
			}
		}
		switch len(found) {
		case 0:
			return nil, fmt.Errorf("lego keeps no account for %s in %s", opts.Server, root)
		case 1:
			email = found[0]
		default:
			return nil, fmt.Errorf("lego keeps %d accounts for %s (%s): give the one to import with --email", len(found), opts.Server, strings.Join(found, ", "))
		}
	}
	if strings.ContainsAny(email, `/\`) || email == "." || email == ".." {
		return nil, fmt.Errorf("--email %q is not an account of lego", email)
	}
	dir := filepath.Join(root, email)
	a := &Account{ID: email, Directory: opts.Server, File: filepath.Join(dir, "keys", email+".key")}
	s.Accounts = append(s.Accounts, a)
	file := filepath.Join(dir, "account.json")
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading lego's account: %w", err)
	}
	var acct struct {
		Email        string `json:"email"`
		Registration *struct {
			Body struct {
				Contact []string `json:"contact"`
			} `json:"body"`
			URI string `json:"uri"`
		} `json:"registration"`
	}
	if err := json.Unmarshal(raw, &acct); err != nil {
		return nil, fmt.Errorf("reading lego's account %s: %w", file, err)
	}
	if acct.Registration == nil {
		return nil, fmt.Errorf("%s: the account was never registered (no registration)", file)
	}
	if err := checkAccountURL(acct.Registration.URI); err != nil {
		return nil, fmt.Errorf("%s: registration.uri: %w", file, err)
	}
	a.URL = acct.Registration.URI
	a.Email = cmpStr(emailOf(acct.Registration.Body.Contact), acct.Email)
	keyPEM, err := os.ReadFile(a.File)
	if err != nil {
		return nil, fmt.Errorf("reading lego's account key: %w", err)
	}
	if a.Key, err = acme.DecodeKey(keyPEM); err != nil {
		return nil, fmt.Errorf("reading lego's account key %s: %w", a.File, err)
	}
	return a, nil
}

// readLegoCertificate reads certificates/<stem>.*; skip is set, with the
// reason, for a certificate another CA (host) issued.
func readLegoCertificate(dir, stem, host string) (c *Certificate, skip string) {
	c = &Certificate{Name: stem, File: filepath.Join(dir, stem+".json"), Live: 1}
	raw, err := os.ReadFile(c.File)
	if err != nil {
		c.Err = err
		return c, ""
	}
	var res struct {
		Domain  string `json:"domain"`
		CertURL string `json:"certUrl"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		c.Err = fmt.Errorf("%s: %w", c.File, err)
		return c, ""
	}
	if u, err := url.Parse(res.CertURL); err == nil && u.Host != "" && u.Host != host {
		return nil, fmt.Sprintf("%s: issued by %s, not the --server given; run the import again with that CA's --server", c.File, u.Host)
	}
	file := func(ext string) string { return filepath.Join(dir, stem+ext) }
	v := readVersion(1, file(".crt"), "", file(".key"))
	if v.Err == nil && len(v.Bundle.ChainPEM) == 0 {
		// lego run --no-bundle: the chain is in .issuer.crt only.
		if chain, err := os.ReadFile(file(".issuer.crt")); err == nil {
			v.Bundle.ChainPEM = onlyCertificates(chain)
		}
	}
	c.Versions = []Version{v}
	if v.Err != nil {
		c.Err = fmt.Errorf("the certificate cannot be read: %w", v.Err)
	}
	return c, ""
}
