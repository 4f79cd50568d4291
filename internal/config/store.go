package config

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Store is the [store] table: where the state is kept. Without it, or
// with kind = "fs", it is the state directory of this host. With
// kind = "etcd", the nodes of a fleet (servers behind one load balancer)
// share accounts, records, certificates and locks in an etcd cluster;
// each node still writes its own live/ in the state directory for its
// web server.
type Store struct {
	// Kind is StoreFS or StoreEtcd.
	Kind string
	// Endpoints are the etcd members' client URLs.
	Endpoints []string
	// CAFile, CertFile and KeyFile are the TLS material for etcd: the CA
	// that signed the members' certificates, and this node's client
	// certificate and key.
	CAFile, CertFile, KeyFile string
	// Prefix is the etcd key prefix of the fleet's state (default
	// DefaultStorePrefix).
	Prefix string
	// EncryptionKeyFile holds the keys the private keys are encrypted
	// with in etcd; every node holds the same file.
	EncryptionKeyFile string
	// Fleet names the fleet; a prefix holding another fleet's state is
	// refused.
	Fleet string
	// Node names this node in the fleet (default: the host name).
	Node string
	// LockTTL is how long a certificate's lock outlives a node that died
	// holding it (or lost etcd): then another node takes the renewal over.
	// Default DefaultLockTTL.
	LockTTL time.Duration
	// Line is where the table starts (0 when the file has none).
	Line int
}

// Store kinds.
const (
	StoreFS   = "fs"
	StoreEtcd = "etcd"
)

// DefaultLockTTL is the lock TTL unless the file says; MinLockTTL is the
// least it may be (a shorter one ends locks on a slow etcd round trip).
const (
	DefaultLockTTL = 30 * time.Second
	MinLockTTL     = 5 * time.Second
)

// DefaultStorePrefix is the etcd key prefix unless the file says.
const DefaultStorePrefix = "/detour"

// IsFleet reports whether the state is shared through etcd.
func (s Store) IsFleet() bool { return s.Kind == StoreEtcd }

const (
	keyStoreTable        = "store"
	keyStoreKind         = "kind"
	keyEndpoints         = "endpoints"
	keyCAFile            = "ca_file"
	keyCertFile          = "cert_file"
	keyKeyFile           = "key_file"
	keyPrefix            = "prefix"
	keyEncryptionKeyFile = "encryption_key_file"
	keyFleet             = "fleet"
	keyNode              = "node"
	keyLockTTL           = "lock_ttl"
)

// etcdOnly are the keys that mean something with kind = "etcd" only.
var etcdOnly = []string{keyEndpoints, keyCAFile, keyCertFile, keyKeyFile, keyPrefix, keyEncryptionKeyFile, keyFleet, keyNode, keyLockTTL}

// fleetName is the syntax of fleet and node names: a DNS label.
var fleetName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// decodeStore decodes the [store] table.
func decodeStore(l *errList, f *file, path string, v any) {
	m, ok := v.(map[string]any)
	if !ok {
		l.typeErr(path, "expected a [store] table, got %s", describe(v))
		return
	}
	s := &f.Store
	s.Line = l.idx.line(path)
	f.storeHas = l.table(path, m, []field{
		str(keyStoreKind, &s.Kind),
		strList(keyEndpoints, &s.Endpoints),
		str(keyCAFile, &s.CAFile),
		str(keyCertFile, &s.CertFile),
		str(keyKeyFile, &s.KeyFile),
		str(keyPrefix, &s.Prefix),
		str(keyEncryptionKeyFile, &s.EncryptionKeyFile),
		str(keyFleet, &s.Fleet),
		str(keyNode, &s.Node),
		duration(keyLockTTL, &s.LockTTL),
	})
}

// validateStore checks the [store] table and applies its defaults; has
// holds the keys the table set.
func validateStore(l *errList, s *Store, has map[string]bool) {
	key := func(k string) string { return join(keyStoreTable, k) }
	switch s.Kind {
	case "", StoreFS:
		s.Kind = StoreFS
		for _, k := range etcdOnly {
			if has[k] {
				l.add(key(k), "%s is for a fleet sharing its state in etcd; set kind = \"etcd\" in [store], or remove %s", k, k)
			}
		}
		return
	case StoreEtcd:
	default:
		l.add(key(keyStoreKind), "%q is not a store kind; use \"fs\" (the state directory, the default) or \"etcd\" (a fleet sharing its state)", s.Kind)
		return
	}
	if len(s.Endpoints) == 0 {
		l.add(key(keyStoreTable), "endpoints is missing: list the etcd members' client URLs, e.g. endpoints = [\"https://10.0.0.1:2379\", \"https://10.0.0.2:2379\", \"https://10.0.0.3:2379\"]")
	}
	plain := ""
	for i, e := range s.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			l.addAt(key(keyEndpoints), elem(key(keyEndpoints), i), "%q is not an etcd client URL; write e.g. \"https://10.0.0.1:2379\"", e)
			continue
		}
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			l.addAt(key(keyEndpoints), elem(key(keyEndpoints), i), "%q has no port; etcd's client port is normally 2379: \"%s://%s:2379\"", e, u.Scheme, u.Host)
			continue
		}
		if u.Scheme == "http" && beyondLoopback(u.Hostname()) != "" && plain == "" {
			plain = e
		}
	}
	if plain != "" {
		l.warn(key(keyEndpoints), "%q is plain HTTP: private keys are encrypted before they reach etcd, but accounts, records and certificates travel and rest in clear, "+
			"and anyone who reaches etcd can change them; use https:// endpoints with ca_file, cert_file and key_file", plain)
	}
	for _, k := range []struct {
		name string
		v    string
	}{{keyCAFile, s.CAFile}, {keyCertFile, s.CertFile}, {keyKeyFile, s.KeyFile}, {keyEncryptionKeyFile, s.EncryptionKeyFile}} {
		if k.v != "" && !filepath.IsAbs(k.v) {
			l.add(key(k.name), "%q is a relative path; use an absolute file name", k.v)
		}
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		l.add(key(keyStoreTable), "cert_file and key_file go together: this node's client certificate and its key; set both or neither")
	}
	if s.EncryptionKeyFile == "" {
		l.add(key(keyStoreTable), "encryption_key_file is missing: the private keys are encrypted in etcd with a key every node holds; "+
			"create one with `detour fleet init-key /etc/detour/fleet.key`, copy it to every node, and set encryption_key_file = \"/etc/detour/fleet.key\"")
	}
	switch {
	case s.Fleet == "":
		l.add(key(keyStoreTable), "fleet is missing: name the fleet, e.g. fleet = \"web-prod\"; every node of it uses the same name, and another fleet sharing the prefix is refused")
	case !fleetName.MatchString(s.Fleet):
		l.add(key(keyFleet), "%q is not a valid fleet name: use lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit", s.Fleet)
	}
	if s.Prefix == "" {
		s.Prefix = DefaultStorePrefix
	} else if !strings.HasPrefix(s.Prefix, "/") || strings.HasSuffix(s.Prefix, "/") || strings.Contains(s.Prefix, "//") {
		l.add(key(keyPrefix), "%q: write the prefix as an absolute key path without a trailing slash, e.g. prefix = %q", s.Prefix, DefaultStorePrefix)
	}
	switch {
	case !has[keyLockTTL]:
		s.LockTTL = DefaultLockTTL
	case s.LockTTL < MinLockTTL:
		l.add(key(keyLockTTL), "%s is too short: a lock ends when its holder misses etcd for this long, so a slow round trip would hand a renewal to a second node; use at least %s (default %s)", s.LockTTL, MinLockTTL, DefaultLockTTL)
	}
	if s.Node == "" {
		s.Node = defaultNode()
	}
	if !fleetName.MatchString(s.Node) {
		where := "node"
		if !has[keyNode] {
			where = "this host's name"
		}
		l.add(key(keyNode), "%q (%s) is not a valid node name: use lower-case letters, digits and '-', at most 63; set node = \"web1\" in [store]", s.Node, where)
	}
}

// defaultNode is the node name when the file gives none: the host name's
// first label, in lower case.
func defaultNode() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	h, _, _ = strings.Cut(h, ".")
	return strings.ToLower(h)
}
