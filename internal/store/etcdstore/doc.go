// Package etcdstore is the storage backend of fleet mode: N Detour nodes
// behind one load balancer keep their accounts, certificates, records and
// locks in one etcd cluster, so that any node can order, renew and serve.
//
// A Store implements store.Storage, store.Locker and store.Certs (with
// ScanRecords, ArchiveVersions and SetAsideRecord, as store.FS has them) on
// an etcd client the caller dials.
//
// # Key layout
//
// Everything lives under a prefix ("/detour" by default); the fleet's other
// state (members, challenge answers, windows) is under <prefix>/fleet/ and
// is not this package's business.
//
//	<prefix>/id                                  the fleet id that owns the prefix
//	<prefix>/store/kv/<key>                      Storage values (secrets encrypted)
//	<prefix>/store/certs/<name>/versions/<N>     version N of a certificate (JSON, key encrypted)
//	<prefix>/store/certs/<name>/live             "N", the live version
//	<prefix>/store/records/<name>.json           the record of a certificate (JSON)
//	<prefix>/store/records/<name>.json.broken-<UTC time>   a record set aside
//	<prefix>/store/locks/<name>/<lease id>       lock waiters; the oldest holds the lock
//
// Open writes the fleet id under <prefix>/id when nobody has (a transaction
// that creates it only if absent) and refuses a prefix that belongs to
// another fleet, so that two fleets pointed at one prefix by mistake are
// told so instead of overwriting each other's certificates.
//
// # Certificates
//
// A version is one JSON document: name, version, the certificate and chain
// in PEM, the private key encrypted, when and by which call it was stored.
// PutCertificate writes version N and points live at it in one
// transaction, which compares live's revision with the one it read: two
// nodes storing a certificate at once get distinct versions (the loser of a
// race reads again and takes the next number), live never names a missing
// version, and no version is lost. A transaction is never half done, so
// Recover has nothing to do. Old versions are kept, as archive/ keeps them
// on disk; Reencrypt rewrites them, nothing else does.
//
// # Locks
//
// Locks are etcd's concurrency.Mutex on a session: a lease of LockTTL that
// the client keeps alive. A node that dies, or loses etcd, for longer than
// LockTTL loses its locks and another node takes over. The locks of one
// Store share one session; that is safe because the Store lets one
// goroutine at a time hold or wait for a given name (a Mutex of one session
// would otherwise count as held by every goroutine using it). A session
// that ends (its lease expired while etcd was unreachable) is replaced by
// the next Lock; releasing a lock that ended so returns ErrLockLost.
//
// # Encryption at rest
//
// The values of secret keys (Storage keys whose last element ends in ".key"
// or starts with "privkey", as store.Storage defines them) and the private
// key of every certificate version are encrypted with AES-256-GCM (NIST SP
// 800-38D) before they reach etcd. The envelope is
//
//	"DTE" | version 1 | length of key id | key id | 12-byte nonce | ciphertext and tag
//
// and the additional authenticated data binds the envelope's header and the
// etcd key the value is stored under, so a value copied to another key (an
// account key made another account's, a version moved to another
// certificate) fails to decrypt.
//
// The keys come from a key file (LoadKeys), which every node holds:
// lines "ID:BASE64KEY", 32 bytes each; blank lines and lines starting with
// "#" are ignored. The first key encrypts; every key decrypts. NewKeyFile
// (`detour fleet init-key`) writes a fresh one, mode 0600.
//
// A value encrypted with a key this node does not have fails with a
// *KeyMismatchError naming the key id; the Store never overwrites such a
// value (Store of that secret, PutCertificate over such a live version), so
// a node with a stale key file cannot replace the fleet's working
// certificate with one the others cannot read.
//
// Rotating the key:
//
//  1. Make a new key (NewKeyFile to a new file) and put its line first in
//     the key file of every node, keeping the old line below it; restart
//     every node. Nodes now encrypt with the new key and read both.
//  2. On one node, run Reencrypt: it rewrites every secret not under the
//     current key (old certificate versions included) and says how many.
//  3. Remove the old line from every node's key file and restart.
//
// A value that Reencrypt cannot read (encrypted with a key this node lacks)
// is left as it is and reported; run it on a node that has that key.
package etcdstore
