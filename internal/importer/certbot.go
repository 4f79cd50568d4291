package importer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// CertbotDir is certbot's default configuration directory.
const CertbotDir = "/etc/letsencrypt"

// certbotDefaultServer is the directory certbot uses without --server.
const certbotDefaultServer = "https://acme-v02.api.letsencrypt.org/directory"

// The sections of a certbot renewal configuration.
const (
	sectionParams     = "renewalparams"
	sectionWebrootMap = "renewalparams/webroot_map"
)

// certbotCertRE matches an archive certificate file and captures N.
var certbotCertRE = regexp.MustCompile(`^cert([0-9]+)\.pem$`)

// ReadCertbot reads certbot's configuration directory dir (CertbotDir by
// default, certbot's --config-dir): every lineage of renewal/<name>.conf
// with the versions kept in archive/<name>/ (certN.pem, chainN.pem,
// privkeyN.pem; the live one is the one live/<name>/cert.pem links to), and
// the accounts the lineages use, from accounts/<server>/<id>/
// (private_key.json, a JWK, and regr.json, which holds the account URL).
// A lineage that cannot be read is returned with Err set, naming the file
// (and line); the others are read. Nothing under dir is written.
func ReadCertbot(dir string) (Source, error) {
	if dir == "" {
		dir = CertbotDir
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Source{}, fmt.Errorf("reading certbot's directory %q: %w", dir, err)
	}
	src := Source{Client: Certbot, Dir: abs}
	ents, err := os.ReadDir(filepath.Join(abs, "renewal"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return src, fmt.Errorf("%s is not certbot's configuration directory: it has no renewal/ (give the directory certbot's --config-dir names, %s by default): %w", abs, CertbotDir, err)
		}
		return src, fmt.Errorf("reading certbot's renewal configurations: %w", err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".conf")
		if !ok || e.IsDir() {
			src.Skipped = append(src.Skipped, filepath.Join(abs, "renewal", e.Name())+": not a renewal configuration (*.conf)")
			continue
		}
		src.Certificates = append(src.Certificates, src.readLineage(name))
	}
	slices.SortFunc(src.Certificates, func(a, b *Certificate) int { return strings.Compare(a.Name, b.Name) })
	src.skipUnusedAccounts()
	return src, nil
}

// readLineage reads the lineage name: its renewal configuration, its
// account, its versions.
func (s *Source) readLineage(name string) *Certificate {
	c := &Certificate{Name: name, File: filepath.Join(s.Dir, "renewal", name+".conf")}
	data, err := os.ReadFile(c.File)
	if err != nil {
		c.Err = err
		return c
	}
	if c.Settings, err = parseConf(c.File, data); err != nil {
		c.Err = err
		return c
	}
	c.Directory = certbotDefaultServer
	if st, ok := c.Setting(sectionParams, "server"); ok && st.Value != "" {
		c.Directory = st.Value
	}
	st, ok := c.Setting(sectionParams, "account")
	if !ok || st.Value == "" {
		c.Err = fmt.Errorf("%s: [renewalparams] names no account; certbot would pick one at renewal, the import cannot", c.File)
		return c
	}
	c.AccountID = st.Value
	acct, err := s.certbotAccount(c.Directory, c.AccountID)
	if err != nil {
		c.Err = fmt.Errorf("%s (account = %s at %s): %w", st.Where(), c.AccountID, c.Directory, err)
		return c
	}
	if acct.Err != nil {
		c.Err = fmt.Errorf("account %s, named at %s: %w", c.AccountID, st.Where(), acct.Err)
		return c
	}
	c.Err = s.readCertbotVersions(c)
	return c
}

// readCertbotVersions reads every version in the lineage's archive and
// finds the live one.
func (s *Source) readCertbotVersions(c *Certificate) error {
	archive := filepath.Join(s.Dir, "archive", c.Name)
	if _, err := os.Stat(archive); err != nil {
		// A lineage moved with certbot's own archive_dir setting.
		if st, ok := c.Setting("", "archive_dir"); ok && st.Value != "" {
			archive = st.Value
		}
	}
	ents, err := os.ReadDir(archive)
	if err != nil {
		return fmt.Errorf("reading the versions of %s: %w", c.Name, err)
	}
	var ns []int
	for _, e := range ents {
		if m := certbotCertRE.FindStringSubmatch(e.Name()); m != nil {
			if n, err := strconv.Atoi(m[1]); err == nil && n > 0 {
				ns = append(ns, n)
			}
		}
	}
	slices.Sort(ns)
	if len(ns) == 0 {
		return fmt.Errorf("%s holds no certificate (certN.pem)", archive)
	}
	for _, n := range ns {
		file := func(kind string) string { return filepath.Join(archive, kind+strconv.Itoa(n)+".pem") }
		c.Versions = append(c.Versions, readVersion(n, file("cert"), file("chain"), file("privkey")))
	}
	c.Live = ns[len(ns)-1]
	liveCert := filepath.Join(s.Dir, "live", c.Name, "cert.pem")
	if target, err := os.Readlink(liveCert); err == nil {
		if m := certbotCertRE.FindStringSubmatch(filepath.Base(target)); m != nil {
			c.Live, _ = strconv.Atoi(m[1])
		}
	}
	live := c.LiveVersion()
	switch {
	case live == nil:
		return fmt.Errorf("%s links to version %d, which %s does not hold", liveCert, c.Live, archive)
	case live.Err != nil:
		return fmt.Errorf("the live version %d cannot be read: %w", c.Live, live.Err)
	}
	return nil
}

// certbotAccount returns (reading it the first time) the account id of
// the CA at directory, from accounts/<host[:port]/path>/<id>/.
func (s *Source) certbotAccount(directory, id string) (*Account, error) {
	if a := s.account(directory, id); a != nil {
		return a, nil
	}
	u, err := url.Parse(directory)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("server %q is not a URL", directory)
	}
	if strings.ContainsAny(id, `/\`) || id == "." || id == ".." {
		return nil, fmt.Errorf("account id %q is not a certbot account id", id)
	}
	dir := filepath.Join(s.Dir, "accounts", filepath.FromSlash(u.Host+u.Path), id)
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("the account is missing: %w", err)
	}
	a := &Account{ID: id, Directory: directory, File: filepath.Join(dir, "private_key.json")}
	s.Accounts = append(s.Accounts, a)
	keyJSON, err := os.ReadFile(a.File)
	if err != nil {
		a.Err = err
		return a, nil
	}
	if a.Key, err = parseJWK(keyJSON); err != nil {
		a.Err = fmt.Errorf("%s: %w", a.File, err)
		return a, nil
	}
	regrFile := filepath.Join(dir, "regr.json")
	raw, err := os.ReadFile(regrFile)
	if err != nil {
		a.Err = err
		return a, nil
	}
	var regr struct {
		Body struct {
			Contact []string `json:"contact"`
		} `json:"body"`
		URI string `json:"uri"`
	}
	if err := json.Unmarshal(raw, &regr); err != nil {
		a.Err = fmt.Errorf("%s: %w", regrFile, err)
		return a, nil
	}
	if err := checkAccountURL(regr.URI); err != nil {
		a.Err = fmt.Errorf("%s: uri: %w", regrFile, err)
		return a, nil
	}
	a.URL, a.Email = regr.URI, emailOf(regr.Body.Contact)
	return a, nil
}

// skipUnusedAccounts lists, as skipped, the account directories no
// lineage uses.
func (s *Source) skipUnusedAccounts() {
	root := filepath.Join(s.Dir, "accounts")
	used := map[string]bool{}
	for _, a := range s.Accounts {
		if p, err := filepath.EvalSymlinks(filepath.Dir(a.File)); err == nil {
			used[p] = true
		}
	}
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "regr.json" {
			return nil
		}
		dir := filepath.Dir(p)
		if real, err := filepath.EvalSymlinks(dir); err == nil && !used[real] {
			s.Skipped = append(s.Skipped, dir+": an account no renewal configuration names; not imported")
		}
		return nil
	})
}
