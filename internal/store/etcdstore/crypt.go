package etcdstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/store"
)

// keySize is the length of an AES-256 key.
const keySize = 32

// Envelope layout: magic, version, key id length, key id, nonce, sealed.
const (
	envMagic   = "DTE"
	envVersion = 1
	maxKeyID   = 32
)

// Keys are the fleet's encryption keys, from a key file (LoadKeys): the
// first encrypts, every one decrypts. The zero Keys holds none.
type Keys struct {
	list []aeadKey
}

type aeadKey struct {
	id   string
	aead cipher.AEAD
}

// Current returns the id of the key that encrypts ("" when there is none).
func (k Keys) Current() string {
	if len(k.list) == 0 {
		return ""
	}
	return k.list[0].id
}

// IDs returns the ids of every key, the current one first.
func (k Keys) IDs() []string {
	ids := make([]string, len(k.list))
	for i, e := range k.list {
		ids[i] = e.id
	}
	return ids
}

func (k Keys) find(id string) cipher.AEAD {
	for _, e := range k.list {
		if e.id == id {
			return e.aead
		}
	}
	return nil
}

// validKeyID checks a key id: 1-32 of A-Z a-z 0-9 . _ -.
func validKeyID(id string) error {
	if id == "" || len(id) > maxKeyID {
		return fmt.Errorf("key id %q must be 1-%d characters", id, maxKeyID)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("key id %q: use only letters, digits, '.', '-' and '_'", id)
		}
	}
	return nil
}

// LoadKeys reads a key file: one key per line as "ID:BASE64KEY" (standard
// base64 of 32 random bytes); blank lines and lines starting with "#" are
// ignored. The first key encrypts; all of them decrypt. The file must be
// readable by its owner only: a file group or others can read (or write)
// is refused with the chmod that fixes it. Errors name the file and line
// and never show key material.
func LoadKeys(file string) (Keys, error) {
	fh, err := os.Open(file)
	if err != nil {
		return Keys{}, fmt.Errorf("reading key file: %w", err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return Keys{}, fmt.Errorf("reading key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Keys{}, fmt.Errorf("key file %s is not a regular file", file)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return Keys{}, fmt.Errorf("key file %s has mode %04o: group or others can read or write it, and it holds the key to every node's private keys; run: chmod 600 %s",
			file, perm, file)
	}
	var keys Keys
	lineOf := map[string]int{}
	sc := bufio.NewScanner(fh)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("key file %s, line %d: %s", file, n, fmt.Sprintf(format, args...))
		}
		id, b64, ok := strings.Cut(line, ":")
		if !ok {
			return Keys{}, bad("want ID:BASE64KEY (make a key with `detour fleet init-key`)")
		}
		id, b64 = strings.TrimSpace(id), strings.TrimSpace(b64)
		if err := validKeyID(id); err != nil {
			return Keys{}, bad("%v", err)
		}
		if prev, dup := lineOf[id]; dup {
			return Keys{}, bad("key id %q is also on line %d; give each key its own id", id, prev)
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return Keys{}, bad("key %q is not valid base64 (standard alphabet, padded): %v", id, err)
		}
		if len(raw) != keySize {
			return Keys{}, bad("key %q is %d bytes long; AES-256 needs %d (make a key with `detour fleet init-key`)", id, len(raw), keySize)
		}
		aead, err := newAEAD(raw)
		if err != nil {
			return Keys{}, bad("key %q: %v", id, err)
		}
		lineOf[id] = n
		keys.list = append(keys.list, aeadKey{id: id, aead: aead})
	}
	if err := sc.Err(); err != nil {
		return Keys{}, fmt.Errorf("reading key file %s: %w", file, err)
	}
	if len(keys.list) == 0 {
		return Keys{}, fmt.Errorf("key file %s holds no key; make one with `detour fleet init-key`", file)
	}
	return keys, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// NewKeyFile creates file, which must not exist, holding one fresh random
// key (id "k<date>-<random>") with mode 0600. It never overwrites a file:
// an existing one may hold the key the fleet's secrets are encrypted with.
// To rotate, make a new file and copy its key line to the top of every
// node's key file (see the package documentation).
func NewKeyFile(file string) error {
	var raw [keySize]byte
	var tag [3]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return fmt.Errorf("generating a key: %w", err)
	}
	if _, err := rand.Read(tag[:]); err != nil {
		return fmt.Errorf("generating a key id: %w", err)
	}
	id := "k" + time.Now().UTC().Format("20060102") + "-" + hex.EncodeToString(tag[:])
	content := "# Detour fleet encryption keys: ID:BASE64KEY, one per line. The first encrypts,\n" +
		"# every one decrypts. Every node needs the same file, mode 0600.\n" +
		id + ":" + base64.StdEncoding.EncodeToString(raw[:]) + "\n"
	fh, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating key file %s: it exists, and may hold the key the fleet's secrets are encrypted with, so it is never overwritten; move it away first or choose another file", file)
	}
	if err != nil {
		return fmt.Errorf("creating key file: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = fh.Close()
			_ = os.Remove(file)
		}
	}()
	if err := fh.Chmod(0o600); err != nil { // the umask may have taken bits off, never added
		return fmt.Errorf("setting the mode of key file %s: %w", file, err)
	}
	if _, err := fh.WriteString(content); err != nil {
		return fmt.Errorf("writing key file %s: %w", file, err)
	}
	if err := fh.Sync(); err != nil {
		return fmt.Errorf("syncing key file %s: %w", file, err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("closing key file %s: %w", file, err)
	}
	ok = true
	return nil
}

// KeyMismatchError is a value encrypted with a key this node does not
// have. Callers must not replace what they could not read (a working
// certificate in particular); the Store itself never overwrites it.
type KeyMismatchError struct {
	// Key is the etcd key of the value.
	Key string
	// KeyID is the id of the key it is encrypted with, the one needed.
	KeyID string
	// Have are the ids of the keys this node has.
	Have []string
}

func (e *KeyMismatchError) Error() string {
	return fmt.Sprintf("%s is encrypted with key %q, which this node does not have (its key file holds %s): "+
		"copy the line of key %q from another node's key file into this node's and restart; "+
		"Detour never overwrites a value it cannot decrypt", e.Key, e.KeyID, strings.Join(quoteAll(e.Have), ", "), e.KeyID)
}

// LogValue implements slog.LogValuer.
func (e *KeyMismatchError) LogValue() slog.Value {
	return slog.GroupValue(slog.String("key", e.Key), slog.String("key_id", e.KeyID),
		slog.String("have", strings.Join(e.Have, ",")))
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// additionalData binds a sealed value to its header and its etcd key.
func additionalData(etcdKey string, header []byte) []byte {
	ad := make([]byte, 0, len("detour-etcdstore\x00")+len(etcdKey)+1+len(header))
	ad = append(ad, "detour-etcdstore\x00"...)
	ad = append(ad, etcdKey...)
	ad = append(ad, 0)
	return append(ad, header...)
}

// seal encrypts plain with the current key for storage under etcdKey.
func (k Keys) seal(etcdKey string, plain []byte) ([]byte, error) {
	if len(k.list) == 0 {
		return nil, errors.New("encrypting: no encryption key")
	}
	cur := k.list[0]
	header := make([]byte, 0, len(envMagic)+2+len(cur.id))
	header = append(header, envMagic...)
	header = append(header, envVersion, byte(len(cur.id)))
	header = append(header, cur.id...)
	nonce := make([]byte, cur.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("encrypting: generating a nonce: %w", err)
	}
	out := make([]byte, 0, len(header)+len(nonce)+len(plain)+cur.aead.Overhead())
	out = append(out, header...)
	out = append(out, nonce...)
	return cur.aead.Seal(out, nonce, plain, additionalData(etcdKey, header)), nil
}

// parseEnvelope splits an envelope into its header, key id and the rest
// (nonce and ciphertext).
func parseEnvelope(etcdKey string, env []byte) (header []byte, id string, rest []byte, err error) {
	if !bytes.HasPrefix(env, []byte(envMagic)) || len(env) < len(envMagic)+2 {
		return nil, "", nil, fmt.Errorf("decrypting %s: the value is not encrypted by Detour (no envelope); store it again through Detour", etcdKey)
	}
	if v := env[len(envMagic)]; v != envVersion {
		return nil, "", nil, fmt.Errorf("decrypting %s: envelope version %d, this Detour reads version %d; upgrade this node", etcdKey, v, envVersion)
	}
	n := int(env[len(envMagic)+1])
	end := len(envMagic) + 2 + n
	if n == 0 || len(env) < end {
		return nil, "", nil, fmt.Errorf("decrypting %s: the envelope is truncated", etcdKey)
	}
	return env[:end], string(env[len(envMagic)+2 : end]), env[end:], nil
}

// open decrypts a value stored under etcdKey.
func (k Keys) open(etcdKey string, env []byte) ([]byte, error) {
	header, id, rest, err := parseEnvelope(etcdKey, env)
	if err != nil {
		return nil, err
	}
	aead := k.find(id)
	if aead == nil {
		return nil, &KeyMismatchError{Key: etcdKey, KeyID: id, Have: k.IDs()}
	}
	if len(rest) < aead.NonceSize() {
		return nil, fmt.Errorf("decrypting %s: the envelope is truncated", etcdKey)
	}
	plain, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], additionalData(etcdKey, header))
	if err != nil {
		return nil, fmt.Errorf("decrypting %s with key %q: %w: the value was altered, or copied from another etcd key; restore it or store it again", etcdKey, id, err)
	}
	return plain, nil
}

// readable returns a *KeyMismatchError when env is an envelope under a key
// this node lacks, and nil otherwise (a value that is not an envelope at
// all may be overwritten: there is nothing in it this node could lose).
func (k Keys) readable(etcdKey string, env []byte) error {
	_, id, _, err := parseEnvelope(etcdKey, env)
	if err == nil && k.find(id) == nil {
		return &KeyMismatchError{Key: etcdKey, KeyID: id, Have: k.IDs()}
	}
	return nil
}

// stale reports whether env is an envelope under another key than the
// current one.
func (k Keys) stale(etcdKey string, env []byte) bool {
	_, id, _, err := parseEnvelope(etcdKey, env)
	return err == nil && id != k.Current()
}

// Reencrypt rewrites every secret that is not encrypted with the current
// key (Keys.Current) under it: the secret Storage values and the private
// key of every certificate version, old ones included. Each is rewritten
// by a transaction that compares its revision, so a concurrent write is
// never undone. It returns how many values it rewrote; running it again
// rewrites none. A value encrypted with a key this node lacks is left as it
// is and reported in the error (a *KeyMismatchError each, joined); the
// others are still rewritten.
func (s *Store) Reencrypt(ctx context.Context) (n int, err error) {
	var errs []error
	kvs, err := s.rangePrefix(ctx, s.kvRoot(), false)
	if err != nil {
		return 0, s.fail(err, "re-encrypting: listing secrets")
	}
	for _, kv := range kvs {
		if !store.IsSecret(strings.TrimPrefix(string(kv.Key), s.kvRoot())) {
			continue
		}
		done, err := s.reencryptOne(ctx, kv, s.reencryptValue)
		if done {
			n++
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	kvs, err = s.rangePrefix(ctx, s.certsRoot(), false)
	if err != nil {
		return n, errors.Join(append(errs, s.fail(err, "re-encrypting: listing certificate versions"))...)
	}
	for _, kv := range kvs {
		if !strings.Contains(strings.TrimPrefix(string(kv.Key), s.certsRoot()), "/versions/") {
			continue
		}
		done, err := s.reencryptOne(ctx, kv, s.reencryptVersion)
		if done {
			n++
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if n > 0 {
		s.log.Info("re-encrypted secrets with the current key", "count", n, "key_id", s.keys.Current())
	}
	return n, errors.Join(errs...)
}

// reencryptOne rewrites one pair with rewrite (which returns nil when the
// value needs no rewriting), retrying when it changed under the write.
func (s *Store) reencryptOne(ctx context.Context, kv *mvccpb.KeyValue, rewrite func(key string, v []byte) ([]byte, error)) (bool, error) {
	key := string(kv.Key)
	for attempt := 0; ; attempt++ {
		nv, err := rewrite(key, kv.Value)
		if err != nil || nv == nil {
			return false, err
		}
		var resp *clientv3.TxnResponse
		err = s.do(ctx, func(ctx context.Context) (err error) {
			resp, err = s.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
				Then(clientv3.OpPut(key, string(nv))).
				Commit()
			return err
		})
		if err != nil {
			return false, s.fail(err, "re-encrypting %s", key)
		}
		if resp.Succeeded {
			return true, nil
		}
		if attempt >= maxConflicts {
			return false, fmt.Errorf("re-encrypting %s: it kept changing; run Reencrypt again", key)
		}
		if kv, err = s.get(ctx, key); err != nil {
			return false, s.fail(err, "re-encrypting %s", key)
		}
		if kv == nil {
			return false, nil // deleted meanwhile
		}
	}
}

// reencryptValue returns a secret value sealed with the current key, or
// nil when it already is.
func (s *Store) reencryptValue(key string, v []byte) ([]byte, error) {
	if !s.keys.stale(key, v) {
		return nil, nil
	}
	plain, err := s.keys.open(key, v)
	if err != nil {
		return nil, err
	}
	return s.keys.seal(key, plain)
}

// reencryptVersion returns a version document whose private key is sealed
// with the current key, or nil when it already is.
func (s *Store) reencryptVersion(key string, v []byte) ([]byte, error) {
	var doc versionDoc
	if err := json.Unmarshal(v, &doc); err != nil {
		return nil, fmt.Errorf("re-encrypting %s: decoding the version: %w", key, err)
	}
	nk, err := s.reencryptValue(key, doc.Key)
	if err != nil || nk == nil {
		return nil, err
	}
	doc.Key = nk
	return json.Marshal(doc)
}
