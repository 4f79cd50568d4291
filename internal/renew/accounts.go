package renew

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/acme"
)

// accountMeta is what Detour keeps next to an account key.
type accountMeta struct {
	URL       string    `json:"url"`
	Directory string    `json:"directory"`
	Email     string    `json:"email,omitempty"`
	Created   time.Time `json:"created"`
	// Thumbprint is the RFC 7638 thumbprint of the account's key, so that
	// a key that went missing or was replaced is noticed before anything
	// is signed with it.
	Thumbprint string `json:"thumbprint,omitempty"`
	// Replaced is the URL of the account this one replaced after its key
	// was lost.
	Replaced string `json:"replaced,omitempty"`
}

// AccountKeyPrefix returns the storage prefix of the account for email at the
// CA whose directory host is host.
func AccountKeyPrefix(host, email string) string {
	label := "default"
	if email != "" {
		label = strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("@.+_-", r):
				return r
			}
			return '_'
		}, email)
	}
	host = strings.ReplaceAll(host, ":", "_")
	return "accounts/" + host + "/" + label
}

// accountLockName names the lock of the account stored under prefix. It
// is upper case, which no certificate name (hence no certificate lock) is.
func accountLockName(prefix string) string {
	name := "ACCOUNT_" + strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, strings.TrimPrefix(prefix, "accounts/"))
	if len(name) > 128 {
		name = name[:128]
	}
	return name
}

// Account loads the account for ca from storage, or registers one (creating
// its key) and stores it. The key is stored before registration, so a crash
// never leaves an account at the CA whose key is lost.
func (m *Manager) Account(ctx context.Context, ca CA) (acme.Account, error) {
	return m.account(ctx, ca, false)
}

// account is Account; fresh forces a lookup at the CA even when the account
// URL is known.
func (m *Manager) account(ctx context.Context, ca CA, fresh bool) (acme.Account, error) {
	acct, _, err := m.accountNew(ctx, ca, fresh)
	return acct, err
}

// accountNew is account, also reporting whether the account was
// registered now (rather than loaded, or found again at the CA).
func (m *Manager) accountNew(ctx context.Context, ca CA, fresh bool) (acme.Account, bool, error) {
	prefix := AccountKeyPrefix(ca.Client.Host(), ca.Email)
	// Renewals running at once (the agent) must not each create a key and
	// register: the last key stored would not be the account's.
	unlock, err := m.store.Lock(ctx, accountLockName(prefix))
	if err != nil {
		return acme.Account{}, false, fmt.Errorf("locking the account: %w", err)
	}
	defer unlock()
	keyPEM, err := m.store.Load(ctx, prefix+"/account.key")
	keyLost := false
	switch {
	case errors.Is(err, fs.ErrNotExist):
		keyLost = true
		key, gerr := acme.ECDSAP256.Generate()
		if gerr != nil {
			return acme.Account{}, false, gerr
		}
		if keyPEM, err = acme.EncodeKey(key); err != nil {
			return acme.Account{}, false, err
		}
		if err := m.store.Store(ctx, prefix+"/account.key", keyPEM); err != nil {
			return acme.Account{}, false, fmt.Errorf("storing account key: %w", err)
		}
	case err != nil:
		return acme.Account{}, false, fmt.Errorf("loading account key: %w", err)
	}
	key, err := acme.DecodeKey(keyPEM)
	if err != nil {
		return acme.Account{}, false, fmt.Errorf("account key %s/account.key: %w", prefix, err)
	}
	tp, err := acme.Thumbprint(acme.Account{PrivateKey: key})
	if err != nil {
		return acme.Account{}, false, err
	}
	var meta accountMeta
	if data, err := m.store.Load(ctx, prefix+"/account.json"); err == nil {
		if err := json.Unmarshal(data, &meta); err != nil {
			return acme.Account{}, false, fmt.Errorf("account record %s/account.json is corrupt: %w", prefix, err)
		}
	}
	lost := ""
	switch {
	case meta.URL != "" && keyLost:
		lost = prefix + "/account.key was missing"
	case meta.URL != "" && meta.Thumbprint != "" && meta.Thumbprint != tp:
		lost = prefix + "/account.key is not the key of the account (its thumbprint differs from the one recorded)"
	}
	if lost != "" {
		// Orders signed with this key under the old account URL would
		// fail ("JWS verification error") forever: the key is not that
		// account's. The account cannot be recovered without its key.
		m.log.ErrorContext(ctx, "the ACME account key was lost; registering a new account with a new key",
			"ca", ca.Client.DirectoryURL(), "account", meta.URL, "cause", lost,
			"consequences", "certificates stay valid; renewals go on under the new account; a dns-persist-01 record and a stateless snippet name the account: publish them again (detour persist-record, detour snippet stateless)")
		meta = accountMeta{Replaced: meta.URL}
		fresh = true
	}
	if meta.URL != "" && meta.Directory == ca.Client.DirectoryURL() && !fresh {
		// Known account: no request needed. If the CA has since forgotten
		// it, Obtain calls again with fresh set.
		return acme.Account{Location: meta.URL, PrivateKey: key, Status: "valid"}, false, nil
	}
	acct, err := ca.Client.Register(ctx, acme.RegisterRequest{Key: key, Email: ca.Email, AgreeTOS: ca.AgreeTOS, EAB: ca.EAB})
	if err != nil {
		return acme.Account{}, false, err
	}
	registered := meta.URL != acct.Location
	if registered || meta.Thumbprint != tp {
		meta = accountMeta{URL: acct.Location, Directory: ca.Client.DirectoryURL(), Email: ca.Email, Created: m.now(), Thumbprint: tp, Replaced: meta.Replaced}
		data, _ := json.MarshalIndent(meta, "", "  ")
		if err := m.store.Store(ctx, prefix+"/account.json", data); err != nil {
			return acme.Account{}, false, fmt.Errorf("storing account record: %w", err)
		}
		m.log.InfoContext(ctx, "ACME account ready", "ca", ca.Client.DirectoryURL(), "account", acct.Location)
	}
	return acct, registered, nil
}

// RolloverAccount replaces the account key of ca's account (RFC 8555 §7.3.5):
// the new key is stored beside the old one first, then the CA is told, then
// the new key becomes the account's key.
func (m *Manager) RolloverAccount(ctx context.Context, ca CA) (acme.Account, error) {
	acct, err := m.account(ctx, ca, true)
	if err != nil {
		return acct, err
	}
	prefix := AccountKeyPrefix(ca.Client.Host(), ca.Email)
	newKey, err := acme.ECDSAP256.Generate()
	if err != nil {
		return acct, err
	}
	newPEM, err := acme.EncodeKey(newKey)
	if err != nil {
		return acct, err
	}
	if err := m.store.Store(ctx, prefix+"/account.next.key", newPEM); err != nil {
		return acct, fmt.Errorf("storing new account key: %w", err)
	}
	out, err := ca.Client.Rollover(ctx, acct, newKey)
	if err != nil {
		_ = m.store.Delete(context.WithoutCancel(ctx), prefix+"/account.next.key")
		return acct, err
	}
	oldPEM, _ := acme.EncodeKey(acct.PrivateKey)
	if err := m.store.Store(ctx, prefix+"/account.previous.key", oldPEM); err != nil {
		return out, fmt.Errorf("keeping the old account key: %w", err)
	}
	if err := m.store.Store(ctx, prefix+"/account.key", newPEM); err != nil {
		return out, fmt.Errorf("storing the new account key (it is in %s/account.next.key; move it to account.key): %w", prefix, err)
	}
	_ = m.store.Delete(ctx, prefix+"/account.next.key")
	m.warnPersistRecords(ctx, ca)
	return out, nil
}

// DeactivateAccount deactivates ca's account at the CA and removes its key.
func (m *Manager) DeactivateAccount(ctx context.Context, ca CA) error {
	acct, err := m.account(ctx, ca, true)
	if err != nil {
		return err
	}
	if _, err := ca.Client.Deactivate(ctx, acct); err != nil {
		return err
	}
	prefix := AccountKeyPrefix(ca.Client.Host(), ca.Email)
	keyPEM, _ := acme.EncodeKey(acct.PrivateKey)
	_ = m.store.Store(ctx, prefix+"/deactivated.key", keyPEM)
	_ = m.store.Delete(ctx, prefix+"/account.json")
	return m.store.Delete(ctx, prefix+"/account.key")
}
