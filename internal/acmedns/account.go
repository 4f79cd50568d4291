package acmedns

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/detour-acme/detour/internal/store"
)

// Storage layout: one JSON file per account, acme-dns/accounts/<user>.key,
// written atomically (store.Storage.Store) on registration and on every
// update (Modifier.Modify when the Storage has it: a shared one). The name
// ends in ".key" so that store.FS writes it readable by the owner only, and
// etcdstore encrypts it (it holds the password's bcrypt hash and the
// allowfrom list).
// The file also lists the account's TXT values with their expiry; expired
// ones are never loaded and are dropped from the file at the next update.
const (
	accountsPrefix = "acme-dns/accounts/"
	accountSuffix  = ".key"
)

// Credential formats, as acme-dns issues them: the user name and the
// subdomain are random UUIDs (version 4), the password is 40 characters of
// the base64url alphabet (240 bits).
const (
	passwordLen = 40
	txtLen      = 43 // base64url(SHA-256) without padding, RFC 8555 §8.4
	b64url      = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)

// account is one registration as stored: never the password itself, only
// its bcrypt hash.
type account struct {
	Username     string      `json:"username"`
	PasswordHash string      `json:"password_hash"` // bcrypt
	Subdomain    string      `json:"subdomain"`
	AllowFrom    []string    `json:"allowfrom"`
	Created      time.Time   `json:"created"`
	TXT          []txtRecord `json:"txt,omitempty"`

	mu     sync.Mutex     // serialises updates of TXT and their storage
	allow  []netip.Prefix // AllowFrom parsed
	hashed []byte         // PasswordHash as bytes
}

// txtRecord is one TXT value with the time it stops being served.
type txtRecord struct {
	Value   string    `json:"value"`
	Expires time.Time `json:"expires"`
}

func accountKey(username string) string { return accountsPrefix + username + accountSuffix }

// prepare fills the derived fields of a decoded account and checks it.
func (a *account) prepare() error {
	if !validUUID(a.Username) {
		return fmt.Errorf("user name %q is not a UUID", a.Username)
	}
	if !validUUID(a.Subdomain) {
		return fmt.Errorf("subdomain %q is not a UUID", a.Subdomain)
	}
	if !strings.HasPrefix(a.PasswordHash, "$2") {
		return errors.New("password_hash is not a bcrypt hash")
	}
	allow, err := parseAllowFrom(a.AllowFrom)
	if err != nil {
		return err
	}
	a.allow = allow
	a.hashed = []byte(a.PasswordHash)
	return nil
}

// allowed reports whether an update may come from src: any address when the
// account has no allowfrom list, else an address inside one of its ranges.
func (a *account) allowed(src netip.Addr) bool {
	if len(a.allow) == 0 {
		return true
	}
	if !src.IsValid() {
		return false
	}
	src = src.Unmap().WithZone("")
	return slices.ContainsFunc(a.allow, func(p netip.Prefix) bool { return p.Contains(src) })
}

// live returns the TXT values not expired at now.
func (a *account) live(now time.Time) []txtRecord { return liveTXT(a.TXT, now) }

// liveTXT returns the values of txt not expired at now, in a new slice.
func liveTXT(txt []txtRecord, now time.Time) []txtRecord {
	return slices.DeleteFunc(slices.Clone(txt), func(t txtRecord) bool { return !now.Before(t.Expires) })
}

// parseAllowFrom parses allowfrom entries as acme-dns does: CIDR notation,
// IPv6 possibly in brackets ("[2001:db8::]/32"). A bare address is not a
// range and is refused, as acme-dns refuses it.
func parseAllowFrom(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := netip.ParsePrefix(stripBrackets(s))
		if err != nil {
			return nil, fmt.Errorf("allowfrom entry %q is not a CIDR range such as 192.0.2.0/24 or 2001:db8::/32", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func stripBrackets(s string) string {
	return strings.NewReplacer("[", "", "]", "").Replace(strings.TrimSpace(s))
}

// normalAllowFrom returns the entries as they are stored and returned:
// brackets removed, as acme-dns returns them.
func normalAllowFrom(list []string) []string {
	out := make([]string, 0, len(list))
	for _, s := range list {
		out = append(out, stripBrackets(s))
	}
	return out
}

// newUUID returns a random (version 4) UUID in its canonical text form.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hex[c>>4], hex[c&0xf])
	}
	return string(out)
}

// newPassword returns passwordLen random characters of the base64url
// alphabet, drawn without modulo bias.
func newPassword() string {
	out := make([]byte, 0, passwordLen)
	var buf [64]byte
	for len(out) < passwordLen {
		_, _ = rand.Read(buf[:])
		for _, c := range buf {
			// 64 symbols: the low six bits of a uniform byte are uniform.
			out = append(out, b64url[c&63])
			if len(out) == passwordLen {
				break
			}
		}
	}
	return string(out)
}

// validUUID reports whether s is a UUID in canonical form (any version,
// either case), as acme-dns accepts in X-Api-User.
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// onlyB64url reports whether s has exactly n characters, all of the
// base64url alphabet.
func onlyB64url(s string, n int) bool {
	return len(s) == n && strings.Trim(s, b64url) == ""
}

// validTXT reports whether v can be a dns-01 answer: exactly 43 base64url
// characters, the encoding of a SHA-256 digest (the rule acme-dns applies).
func validTXT(v string) bool { return onlyB64url(v, txtLen) }

// validKey reports whether k has the form of an API key acme-dns issues.
func validKey(k string) bool { return onlyB64url(k, passwordLen) }

// loadAccounts reads every stored account.
func loadAccounts(ctx context.Context, st store.Storage) ([]*account, error) {
	keys, err := st.List(ctx, strings.TrimSuffix(accountsPrefix, "/"))
	if err != nil {
		return nil, fmt.Errorf("listing acme-dns accounts: %w", err)
	}
	var out []*account
	for _, k := range keys {
		if !strings.HasSuffix(k, accountSuffix) {
			continue
		}
		raw, err := st.Load(ctx, k)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("loading acme-dns account: %w", err)
		}
		a, err := decodeAccount(k, raw)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// decodeAccount decodes and checks the account stored under key k.
func decodeAccount(k string, raw []byte) (*account, error) {
	a := new(account)
	if err := json.Unmarshal(raw, a); err != nil {
		return nil, fmt.Errorf("reading acme-dns account %s: %w; fix or remove the file", k, err)
	}
	if err := a.prepare(); err != nil {
		return nil, fmt.Errorf("reading acme-dns account %s: %w; fix or remove the file", k, err)
	}
	if accountKey(a.Username) != k {
		return nil, fmt.Errorf("reading acme-dns account %s: it holds user %q; rename the file to %s", k, a.Username, accountKey(a.Username))
	}
	return a, nil
}

// userOfKey returns the user name of an account's storage key, and
// whether key is one.
func userOfKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, accountsPrefix)
	if !ok {
		return "", false
	}
	user, ok := strings.CutSuffix(rest, accountSuffix)
	if !ok || !validUUID(user) {
		return "", false
	}
	return user, true
}

// encode returns the stored form of a.
func (a *account) encode() ([]byte, error) {
	raw, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding acme-dns account: %w", err)
	}
	return append(raw, '\n'), nil
}

// saveLocked writes a to st atomically. The caller holds a.mu (or owns a
// not yet published account).
func (a *account) saveLocked(ctx context.Context, st store.Storage) error {
	raw, err := a.encode()
	if err != nil {
		return err
	}
	if err := st.Store(ctx, accountKey(a.Username), raw); err != nil {
		return fmt.Errorf("saving acme-dns account: %w", err)
	}
	return nil
}
