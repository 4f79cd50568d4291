// Package store keeps Detour's state: ACME accounts, certificates and the
// record of how each certificate was obtained.
//
// Storage is the key/value contract (after certmagic's Storage and autocert's
// Cache); FS implements it on a local directory and adds the certbot-compatible
// certificate layout:
//
//	archive/<name>/{cert,chain,fullchain,privkey}N.pem   every version, kept
//	archive/<name>/.vN/{cert,chain,fullchain,privkey}.pem -> ../{cert,...}N.pem
//	live/<name> -> ../archive/<name>/.vN                  the live version
//	renewal/<name>.json                                   how it was obtained
//	accounts/<ca-host>/<account-id>/...                   ACME accounts
//	locks/<name>.lock                                     per-certificate locks
//
// Servers are pointed at live/<name>/{cert,chain,fullchain,privkey}.pem as
// with certbot; each resolves, through symbolic links, to archive/<name>/
// {cert,chain,fullchain,privkey}N.pem. The live version changes by one
// rename(2): a new symlink live/.tmp-<name>-<random> pointing at the fully
// written and fsynced version directory .vN replaces live/<name>, then live/
// is fsynced. A process killed at any moment therefore leaves live/<name>
// wholly the old version or wholly the new one, with nothing to repair;
// Recover only removes leftovers (temporary links, and .vN directories newer
// than the live version, which never went live; their archive files stay).
//
// State written by earlier Detour versions, or imported from certbot, has a
// real directory live/<name>/ holding four symlinks straight into archive/.
// LoadCertificate reads it as it is (finishing first a swap of those links
// that an earlier version recorded in live/<name>/.detour-swap and did not
// complete). The next PutCertificate converts it: on Linux the directory and
// the new live/<name> symlink are exchanged atomically (renameat2
// RENAME_EXCHANGE), so the conversion is one atomic switch as well. Where the
// filesystem cannot exchange, the directory is renamed aside and the symlink
// renamed into place; a crash between those two renames leaves live/<name>
// missing (never mixed) until the next PutCertificate, LoadCertificate or
// Recover of that name renames the directory back.
package store

import (
	"context"
	"io/fs"
	"time"
)

// Storage is a key/value store with path-like keys ("accounts/x/key.pem").
//
// Implementations MUST be safe for concurrent use, MUST return an error
// wrapping fs.ErrNotExist for a missing key, and MUST make Store atomic: a
// reader sees the old value or the new one, never a mix. Keys use "/" as the
// separator and never start with "/" or contain "..".
type Storage interface {
	// Load returns the value stored under key.
	Load(ctx context.Context, key string) ([]byte, error)
	// Store writes value under key, replacing any previous value. Keys whose
	// last element ends in ".key" or starts with "privkey" are secrets and
	// MUST be stored readable by the owner only.
	Store(ctx context.Context, key string, value []byte) error
	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List returns the keys directly or indirectly under prefix, sorted.
	List(ctx context.Context, prefix string) ([]string, error)
}

// Locker serialises work on one name across processes (and, for a shared
// backend, across machines).
type Locker interface {
	// Lock blocks until the lock for name is held or ctx is done. The
	// returned function releases it. A lock held by a process that died
	// MUST be released by the backend (flock, lease expiry).
	Lock(ctx context.Context, name string) (unlock func() error, err error)
	// TryLock is Lock without waiting; it returns ErrLocked when another
	// holder has it.
	TryLock(ctx context.Context, name string) (unlock func() error, err error)
}

// ErrNotExist is fs.ErrNotExist, repeated here for callers' convenience.
var ErrNotExist = fs.ErrNotExist

// Bundle is one issued certificate with its key, all PEM encoded.
type Bundle struct {
	CertPEM  []byte // the leaf
	ChainPEM []byte // the intermediates, leaf excluded
	KeyPEM   []byte // the private key (PKCS#8 or EC/RSA PRIVATE KEY)
}

// FullchainPEM returns the leaf followed by the chain.
func (b Bundle) FullchainPEM() []byte {
	out := make([]byte, 0, len(b.CertPEM)+len(b.ChainPEM))
	out = append(out, b.CertPEM...)
	return append(out, b.ChainPEM...)
}

// Record says how a certificate was obtained, so that renewing needs no
// flags, and what happened the last time Detour tried. It is stored as JSON.
type Record struct {
	Name           string    `json:"name"`
	Identifiers    []string  `json:"identifiers"`
	CA             string    `json:"ca"`      // directory URL
	CAName         string    `json:"ca_name"` // shortcut or config name, if any
	RootBundle     string    `json:"root_bundle,omitempty"`
	Account        string    `json:"account"` // account URL
	Email          string    `json:"email,omitempty"`
	KeyType        string    `json:"key_type"`
	Profile        string    `json:"profile,omitempty"`
	PreferredChain string    `json:"preferred_chain,omitempty"`
	Paths          []PathRef `json:"paths"`
	DeployHook     string    `json:"deploy_hook,omitempty"`
	NoSelfCheck    bool      `json:"no_self_check,omitempty"`

	Version int    `json:"version"` // archive version live/ points at
	Serial  string `json:"serial,omitempty"`
	ARIID   string `json:"ari_id,omitempty"` // RFC 9773 unique identifier
	// LiveSum is Bundle.LiveSum of the version stored: what CheckLive
	// expects in live/ without parsing it again.
	LiveSum   string    `json:"live_sum,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Issued    time.Time `json:"issued"`

	// Revoked is when `detour revoke` revoked this certificate: it is to
	// be replaced at once.
	Revoked time.Time `json:"revoked,omitzero"`

	ARI  *ARIWindow `json:"ari,omitempty"`
	Last *Attempt   `json:"last,omitempty"`
}

// PathRef names one validation path and its settings, enough to rebuild it.
type PathRef struct {
	Name     string            `json:"name"`
	Kind     string            `json:"kind"` // e.g. "standalone", "dns-embedded"
	Settings map[string]string `json:"settings,omitempty"`
}

// ARIWindow is the CA's suggested renewal window (RFC 9773 §4.2).
type ARIWindow struct {
	Start          time.Time `json:"start"`
	End            time.Time `json:"end"`
	ExplanationURL string    `json:"explanation_url,omitempty"`
	RetryAfter     time.Time `json:"retry_after,omitempty"` // do not poll before
	Fetched        time.Time `json:"fetched"`
}

// Attempt is the outcome of the last issuance or renewal attempt.
type Attempt struct {
	Time       time.Time `json:"time"`
	OK         bool      `json:"ok"`
	Error      string    `json:"error,omitempty"`
	Path       string    `json:"path,omitempty"`
	CA         string    `json:"ca,omitempty"`       // the CA asked (a name, or its directory URL)
	Failures   int       `json:"failures,omitempty"` // consecutive
	RetryAfter time.Time `json:"retry_after,omitempty"`
}

// Certs is the certificate-level API. FS implements it in the certbot layout;
// other backends implement it on top of their own keys.
type Certs interface {
	// PutCertificate stores b as the next version of certificate name and
	// makes it the live one. Either the whole new version becomes live or,
	// after a crash, the previous version stays live (or the swap is
	// completed by the next call touching name); never a mix.
	PutCertificate(ctx context.Context, name string, b Bundle) (version int, err error)
	// LoadCertificate returns the live version of name.
	LoadCertificate(ctx context.Context, name string) (b Bundle, version int, err error)
	// LoadRecord returns the record of name; fs.ErrNotExist when there is none.
	LoadRecord(ctx context.Context, name string) (Record, error)
	// SaveRecord stores r under r.Name atomically.
	SaveRecord(ctx context.Context, r Record) error
	// ListRecords returns every record, sorted by name.
	ListRecords(ctx context.Context) ([]Record, error)
	// Recover finishes, or rolls back, a PutCertificate of name that was
	// interrupted by a crash. Callers hold name's lock.
	Recover(ctx context.Context, name string) error
}
