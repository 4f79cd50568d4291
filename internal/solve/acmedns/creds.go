package acmedns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/detour-acme/detour/internal/store"
)

// Account is one acme-dns registration: the credentials that update the TXT
// record at Fulldomain. The JSON form is that of acme-dns's /register
// response and of the credential files lego, certbot-dns-acmedns and
// goacmedns keep, so such a file can be used as Options.CredentialsFile.
type Account struct {
	Username   string   `json:"username"`
	Password   string   `json:"password"`
	Fulldomain string   `json:"fulldomain"`
	Subdomain  string   `json:"subdomain"`
	AllowFrom  []string `json:"allowfrom"`
	ServerURL  string   `json:"server_url,omitempty"`
}

// CNAMERecord returns the record the owner of domain must create once for
// dns-01, in zone-file form: "_acme-challenge.<domain>. CNAME <fulldomain>.".
func (a Account) CNAMERecord(domain string) string {
	return a.CNAMERecordAt(challengeName(domain))
}

// CNAMERecordAt returns the record that points the owner name name (e.g.
// solve.TXTName's for another challenge type) at the account, in zone-file
// form: "<name>. CNAME <fulldomain>.".
func (a Account) CNAMERecordAt(name string) string {
	return fqdn(name) + " CNAME " + fqdn(a.Fulldomain)
}

func (a Account) complete() error {
	var missing []string
	for k, v := range map[string]string{"username": a.Username, "password": a.Password, "fulldomain": a.Fulldomain, "subdomain": a.Subdomain} {
		if v == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// credStore keeps accounts by domain: in the state store (one secret key per
// server and domain), or in a credentials file shared with other clients.
type credStore struct {
	st     store.Storage
	file   string
	server string // host[:port] of the API, separating accounts of different servers in st

	mu sync.Mutex // serialises read-modify-write of file
}

// key returns the storage key of domain's account: a secret (".key"), so
// that store.FS writes it readable by the owner only.
func (c *credStore) key(domain string) string {
	return "acme-dns/client/" + c.server + "/" + domain + ".key"
}

// where describes where domain's credentials are kept, for messages.
func (c *credStore) where(domain string) string {
	if c.file != "" {
		return fmt.Sprintf("the entry %q of %s", domain, c.file)
	}
	if f, ok := c.st.(interface{ Dir() string }); ok {
		return filepath.Join(f.Dir(), filepath.FromSlash(c.key(domain)))
	}
	return "the state store key " + c.key(domain)
}

// load returns domain's account, or an error wrapping fs.ErrNotExist.
func (c *credStore) load(ctx context.Context, domain string) (Account, error) {
	var a Account
	if c.file != "" {
		c.mu.Lock()
		all, err := c.readFile()
		c.mu.Unlock()
		if err != nil {
			return Account{}, err
		}
		var ok bool
		if a, ok = all[domain]; !ok {
			return Account{}, fmt.Errorf("no acme-dns account for %s in %s: %w", domain, c.file, fs.ErrNotExist)
		}
	} else {
		raw, err := c.st.Load(ctx, c.key(domain))
		if err != nil {
			return Account{}, fmt.Errorf("loading the acme-dns account of %s: %w", domain, err)
		}
		if err := json.Unmarshal(raw, &a); err != nil {
			return Account{}, fmt.Errorf("reading %s: %w; remove it to register again", c.where(domain), err)
		}
	}
	if err := a.complete(); err != nil {
		return Account{}, fmt.Errorf("reading %s: %w; fix it, or remove it to register again", c.where(domain), err)
	}
	return a, nil
}

// save stores domain's account.
func (c *credStore) save(ctx context.Context, domain string, a Account) error {
	raw, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the acme-dns account: %w", err)
	}
	if c.file == "" {
		if err := c.st.Store(ctx, c.key(domain), append(raw, '\n')); err != nil {
			return fmt.Errorf("saving the acme-dns account of %s: %w", domain, err)
		}
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	all, err := c.readFile()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if all == nil {
		all = map[string]Account{}
	}
	all[domain] = a
	if raw, err = json.MarshalIndent(all, "", "  "); err != nil {
		return fmt.Errorf("encoding %s: %w", c.file, err)
	}
	return writeSecretFile(c.file, append(raw, '\n'))
}

// readFile reads the credentials file: a JSON object of accounts by domain.
// A missing file is an empty one.
func (c *credStore) readFile() (map[string]Account, error) {
	raw, err := os.ReadFile(c.file)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]Account{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the acme-dns credentials file: %w", err)
	}
	all := map[string]Account{}
	if err := json.Unmarshal(raw, &all); err != nil {
		return nil, fmt.Errorf("reading the acme-dns credentials file %s: %w; it must be a JSON object of accounts by domain, "+
			"as lego and certbot-dns-acmedns write it", c.file, err)
	}
	return all, nil
}

// writeSecretFile replaces path atomically with data, readable by the owner
// only.
func writeSecretFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the directory of %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// serverKey returns the part of the API URL that names the server in
// storage keys: host and port, with the path (if any) folded in.
func serverKey(u *url.URL) string {
	k := u.Host
	if p := strings.Trim(u.Path, "/"); p != "" {
		k += "_" + strings.ReplaceAll(p, "/", "_")
	}
	return strings.ToLower(strings.NewReplacer(":", "_", "[", "", "]", "").Replace(k))
}

// Registered returns the API URL of the acme-dns account Detour holds for
// domain in st ("" when none), looking at every server's accounts.
func Registered(ctx context.Context, st store.Storage, domain string) string {
	keys, err := st.List(ctx, "acme-dns/client/")
	if err != nil {
		return ""
	}
	for _, k := range keys {
		if !strings.HasSuffix(k, "/"+domain+".key") {
			continue
		}
		raw, err := st.Load(ctx, k)
		if err != nil {
			continue
		}
		var a Account
		if json.Unmarshal(raw, &a) != nil || a.complete() != nil {
			continue
		}
		if a.ServerURL != "" {
			return a.ServerURL
		}
		server := strings.TrimSuffix(strings.TrimPrefix(k, "acme-dns/client/"), "/"+domain+".key")
		return "https://" + server
	}
	return ""
}
