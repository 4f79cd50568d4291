package etcdstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/store/storetest"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// TestStore runs, on one three-member cluster, the backends' contract
// suite and the etcd-specific tests that leave the cluster running. Each
// store gets a prefix of its own.
func TestStore(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t, etcdtest.Options{})
	t.Run("Contract", func(t *testing.T) {
		storetest.Run(t, storetest.Harness{
			New: func(t *testing.T) storetest.Backend { return open(t, c, Options{}) },
			Peer: func(t *testing.T, b storetest.Backend) storetest.Backend {
				return open(t, c, Options{Prefix: b.(*Store).Prefix()})
			},
			PutRawRecord: func(t *testing.T, b storetest.Backend, file string, raw []byte) string {
				s := b.(*Store)
				key := s.recordsRoot() + file
				if _, err := s.cli.Put(context.Background(), key, string(raw)); err != nil {
					t.Fatal(err)
				}
				return key
			},
		})
	})
	t.Run("FleetID", func(t *testing.T) { testFleetID(t, c) })
	t.Run("OpenOptions", func(t *testing.T) { testOpenOptions(t, c) })
	t.Run("PutCertificateRace", func(t *testing.T) { testPutCertificateRace(t, c) })
	t.Run("LostCommitAnswer", func(t *testing.T) { testLostCommitAnswer(t, c) })
	t.Run("EncryptedAtRest", func(t *testing.T) { testEncryptedAtRest(t, c) })
	t.Run("CopiedValue", func(t *testing.T) { testCopiedValue(t, c) })
	t.Run("KeyRotation", func(t *testing.T) { testKeyRotation(t, c) })
	t.Run("Paging", func(t *testing.T) { testPaging(t, c) })
	t.Run("LockTakeover", func(t *testing.T) { testLockTakeover(t, c) })
	t.Run("LockSessionLost", func(t *testing.T) { testLockSessionLost(t, c) })
	t.Run("LockPartition", func(t *testing.T) { testLockPartition(t, c) })
	t.Run("LiveMissingVersion", func(t *testing.T) { testLiveMissingVersion(t, c) })
	t.Run("LockHolders", func(t *testing.T) { testLockHolders(t, c) })
}

// testLockHolders: LockHolders names the holder of each lock (the first
// in its queue, not a waiter), and forgets it once released.
func testLockHolders(t *testing.T, c *etcdtest.Cluster) {
	a := open(t, c, Options{Holder: "node-a"})
	b := open(t, c, Options{Holder: "node-b", Prefix: a.Prefix()})
	ctx := context.Background()
	unlockA, err := a.Lock(ctx, "www")
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan func() error, 1)
	go func() {
		u, err := b.Lock(ctx, "www")
		if err != nil {
			t.Error(err)
		}
		waiting <- u
	}()
	unlockB2, err := b.Lock(ctx, "api")
	if err != nil {
		t.Fatal(err)
	}
	// b's waiter is queued (its key exists) once a's holding is listed
	// with it; poll until the queue has two keys.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := a.cli.Get(ctx, a.lockPrefix("www"), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if r.Count == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b never queued for the lock")
		}
		time.Sleep(10 * time.Millisecond) // polling etcd: the waiter's key appears asynchronously
	}
	h, err := b.LockHolders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h["www"].Holder != "node-a" || h["api"].Holder != "node-b" || h["www"].PID == 0 || h["www"].Since.IsZero() {
		t.Fatalf("holders = %+v, want www held by node-a, api by node-b", h)
	}
	if err := unlockA(); err != nil {
		t.Fatal(err)
	}
	unlockB := <-waiting
	h, err = a.LockHolders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h["www"].Holder != "node-b" {
		t.Errorf("after a released it, www held by %+v, want node-b", h["www"])
	}
	for _, u := range []func() error{unlockB, unlockB2} {
		if err := u(); err != nil {
			t.Fatal(err)
		}
	}
	if h, err := a.LockHolders(ctx); err != nil || len(h) != 0 {
		t.Errorf("after every release: holders %+v, %v", h, err)
	}
}

// testFleetID: the first node writes the fleet id; nodes of the same fleet
// open the prefix; a node of another fleet is refused, told which fleet
// owns it and what to change; two fleets racing for a new prefix cannot
// both get it.
func testFleetID(t *testing.T, c *etcdtest.Cluster) {
	ctx := context.Background()
	cli := newClient(t, c.Endpoints())
	prefix := freshPrefix()
	a := open(t, c, Options{Client: cli, Prefix: prefix + "/", FleetID: "alpha"})
	if a.Prefix() != prefix {
		t.Errorf("Prefix = %q, want %q (normalised)", a.Prefix(), prefix)
	}
	if got := rawRange(t, cli, prefix+"/id"); string(got[prefix+"/id"]) != "alpha" {
		t.Errorf("%s/id = %q, want alpha", prefix, got[prefix+"/id"])
	}
	open(t, c, Options{Prefix: strings.TrimPrefix(prefix, "/"), FleetID: "alpha"})

	_, err := Open(ctx, Options{Client: cli, Prefix: prefix, FleetID: "beta", Keys: sharedKeys})
	if err == nil {
		t.Fatal("Open of another fleet's prefix succeeded")
	}
	for _, want := range []string{prefix, `fleet "alpha"`, `configured for fleet "beta"`, "prefix", "fleet name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if got := rawRange(t, cli, prefix+"/id"); string(got[prefix+"/id"]) != "alpha" {
		t.Errorf("the refused node changed the fleet id to %q", got[prefix+"/id"])
	}

	// Two fleets opening a new prefix at once: one of them owns it.
	race := freshPrefix()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, fleet := range []string{"one", "two"} {
		wg.Go(func() {
			s, err := Open(ctx, Options{Client: newClient(t, c.Endpoints()), Prefix: race, FleetID: fleet, Keys: sharedKeys})
			if err == nil {
				t.Cleanup(func() { _ = s.Close() })
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Errorf("two fleets opening one new prefix: errors %v and %v; want exactly one refused", errs[0], errs[1])
	}
}

// testOpenOptions: what Open refuses before asking etcd.
func testOpenOptions(t *testing.T, c *etcdtest.Cluster) {
	cli := newClient(t, c.Endpoints())
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no client", Options{FleetID: "f", Keys: sharedKeys}, "no etcd client"},
		{"no fleet", Options{Client: cli, Keys: sharedKeys}, "invalid fleet id"},
		{"bad fleet", Options{Client: cli, FleetID: "a b", Keys: sharedKeys}, "invalid fleet id"},
		{"no keys", Options{Client: cli, FleetID: "f"}, "init-key"},
		{"bad prefix", Options{Client: cli, FleetID: "f", Keys: sharedKeys, Prefix: "/a/../b"}, "invalid etcd prefix"},
	}
	for _, tt := range tests {
		_, err := Open(context.Background(), tt.opts)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

// TestOpenUnreachable: a cluster nobody answers for is reported within
// the timeout, naming the endpoint and what to check, not as a bare gRPC
// error.
func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cli := newClient(t, []string{"http://" + addr})
	start := time.Now()
	_, err = Open(context.Background(), Options{Client: cli, FleetID: "f", Keys: sharedKeys, Timeout: 300 * time.Millisecond})
	if err == nil {
		t.Fatal("Open succeeded with nobody listening")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Open took %v with a 300ms timeout", took)
	}
	for _, want := range []string{addr, "did not answer", "addresses", "TLS material", "etcd runs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// testPutCertificateRace: two nodes storing versions of one certificate
// at once never lose a version and never leave live pointing at a missing
// one: every call gets its own number, the numbers are 1..N, each stored
// version holds the bundle of the call that got its number, and live is
// the last.
func testPutCertificateRace(t *testing.T, c *etcdtest.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := open(t, c, Options{})
	b := open(t, c, Options{Prefix: a.Prefix()})
	const name, per = "race.example", 8
	type put struct {
		bundle  store.Bundle
		version int
	}
	puts := make([]put, 2*per)
	for i := range puts {
		puts[i].bundle = storetest.NewBundle(t, name)
	}
	var wg sync.WaitGroup
	for i := range puts {
		wg.Go(func() {
			v, err := []*Store{a, b}[i%2].PutCertificate(ctx, name, puts[i].bundle)
			if err != nil {
				t.Error(err)
			}
			puts[i].version = v
		})
	}
	wg.Wait()
	var got []int
	for _, p := range puts {
		got = append(got, p.version)
	}
	slices.Sort(got)
	want := make([]int, 2*per)
	for i := range want {
		want[i] = i + 1
	}
	if !slices.Equal(got, want) {
		t.Fatalf("versions returned = %v, want 1..%d once each", got, 2*per)
	}
	if vs, err := a.ArchiveVersions(ctx, name); err != nil || !slices.Equal(vs, want) {
		t.Errorf("ArchiveVersions = %v, %v; want 1..%d", vs, err, 2*per)
	}
	for _, p := range puts {
		doc, key, err := a.loadVersion(ctx, name, p.version)
		if err != nil {
			t.Fatal(err)
		}
		keyPEM, err := a.keys.open(key, doc.Key)
		if err != nil || doc.Cert != string(p.bundle.CertPEM) || !bytes.Equal(keyPEM, p.bundle.KeyPEM) {
			t.Errorf("version %d does not hold the bundle of the call that got it (%v)", p.version, err)
		}
	}
	bd, v, err := b.LoadCertificate(ctx, name)
	if err != nil || v != 2*per {
		t.Fatalf("live = version %d, %v; want %d", v, err, 2*per)
	}
	storetest.SameBundle(t, bd, puts[slices.IndexFunc(puts, func(p put) bool { return p.version == 2*per })].bundle)
}

// testLostCommitAnswer: when PutCertificate's commit went through but its
// answer was lost (a transient error, as when the leader fails right after
// applying it), the retry recognises its own version, even with another
// node's version stored on top meanwhile, and stores no second copy.
func testLostCommitAnswer(t *testing.T, c *etcdtest.Cluster) {
	ctx := context.Background()
	s := open(t, c, Options{})
	peer := open(t, c, Options{Prefix: s.Prefix()})
	const name = "lost.example"
	var hook func() // runs inside the lost answer
	lose := 0
	s.afterCommit = func(err error) error {
		if err != nil || lose == 0 {
			return err
		}
		lose--
		if hook != nil {
			hook()
		}
		return rpctypes.ErrTimeoutDueToLeaderFail
	}
	lose = 1
	if v, err := s.PutCertificate(ctx, name, storetest.NewBundle(t, name)); err != nil || v != 1 {
		t.Fatalf("PutCertificate with its answer lost = %d, %v; want 1", v, err)
	}
	mine := storetest.NewBundle(t, name)
	lose, hook = 1, func() {
		if v, err := peer.PutCertificate(ctx, name, storetest.NewBundle(t, name)); err != nil || v != 3 {
			t.Errorf("the peer's PutCertificate = %d, %v; want 3", v, err)
		}
	}
	if v, err := s.PutCertificate(ctx, name, mine); err != nil || v != 2 {
		t.Fatalf("PutCertificate with its answer lost and a peer's version on top = %d, %v; want 2", v, err)
	}
	if vs, err := s.ArchiveVersions(ctx, name); err != nil || !slices.Equal(vs, []int{1, 2, 3}) {
		t.Errorf("ArchiveVersions = %v, %v; want [1 2 3], no copy stored twice", vs, err)
	}
	if _, v, err := s.LoadCertificate(ctx, name); err != nil || v != 3 {
		t.Errorf("live = %d, %v; want the peer's 3", v, err)
	}
}

// testEncryptedAtRest: no private key reaches etcd in clear, neither a
// secret Storage value nor a certificate's key; other values are stored as
// they are.
func testEncryptedAtRest(t *testing.T, c *etcdtest.Cluster) {
	ctx := context.Background()
	s := open(t, c, Options{})
	bd := storetest.NewBundle(t, "secret.example")
	if err := s.Store(ctx, "accounts/ca/acct/account.key", bd.KeyPEM); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, "accounts/ca/acct/privkey.pem", bd.KeyPEM); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, "accounts/ca/acct/meta.json", []byte(`{"plain":true}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutCertificate(ctx, "secret.example", bd); err != nil {
		t.Fatal(err)
	}
	raw := rawRange(t, s.cli, s.Prefix()+"/")
	body := strings.TrimSuffix(strings.TrimPrefix(string(bd.KeyPEM), "-----BEGIN PRIVATE KEY-----\n"), "-----END PRIVATE KEY-----\n")
	der := strings.ReplaceAll(body, "\n", "")
	for k, v := range raw {
		if bytes.Contains(v, []byte("PRIVATE KEY")) || bytes.Contains(v, []byte(der[:40])) {
			t.Errorf("%s holds the private key in clear", k)
		}
	}
	if v := raw[s.kvKey("accounts/ca/acct/meta.json")]; string(v) != `{"plain":true}` {
		t.Errorf("a value that is not a secret is stored as %q", v)
	}
	for _, k := range []string{s.kvKey("accounts/ca/acct/account.key"), s.kvKey("accounts/ca/acct/privkey.pem")} {
		if !bytes.HasPrefix(raw[k], []byte(envMagic)) {
			t.Errorf("%s is not an envelope: %q", k, raw[k][:min(len(raw[k]), 16)])
		}
	}
	var doc versionDoc
	if err := json.Unmarshal(raw[s.versionKey("secret.example", 1)], &doc); err != nil || !bytes.HasPrefix(doc.Key, []byte(envMagic)) {
		t.Errorf("the version's key is not an envelope (%v)", err)
	}
	if doc.Cert != string(bd.CertPEM) {
		t.Error("the version does not hold the certificate in clear")
	}
	if got, err := s.Load(ctx, "accounts/ca/acct/account.key"); err != nil || !bytes.Equal(got, bd.KeyPEM) {
		t.Errorf("Load of the secret = %v; want the key back", err)
	}
}

// testCopiedValue: an encrypted value copied to another etcd key does not
// decrypt there: a secret Storage value, and a version made another
// certificate's (even with its name and number edited to match).
func testCopiedValue(t *testing.T, c *etcdtest.Cluster) {
	ctx := context.Background()
	s := open(t, c, Options{})
	if err := s.Store(ctx, "accounts/a/account.key", []byte("key of a")); err != nil {
		t.Fatal(err)
	}
	raw := rawRange(t, s.cli, s.kvKey("accounts/a/account.key"))
	if _, err := s.cli.Put(ctx, s.kvKey("accounts/b/account.key"), string(raw[s.kvKey("accounts/a/account.key")])); err != nil {
		t.Fatal(err)
	}
	_, err := s.Load(ctx, "accounts/b/account.key")
	var km *KeyMismatchError
	if err == nil || errors.As(err, &km) || !strings.Contains(err.Error(), "copied from another etcd key") {
		t.Errorf("Load of a copied value: err = %v, want an authentication failure saying it was copied", err)
	}

	if _, err := s.PutCertificate(ctx, "a.example", storetest.NewBundle(t, "a.example")); err != nil {
		t.Fatal(err)
	}
	var doc versionDoc
	if err := json.Unmarshal(rawRange(t, s.cli, s.versionKey("a.example", 1))[s.versionKey("a.example", 1)], &doc); err != nil {
		t.Fatal(err)
	}
	doc.Name = "b.example"
	moved, _ := json.Marshal(doc)
	if _, err := s.cli.Txn(ctx).Then(clientv3.OpPut(s.versionKey("b.example", 1), string(moved)), clientv3.OpPut(s.liveKey("b.example"), "1")).Commit(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.LoadCertificate(ctx, "b.example"); err == nil || !strings.Contains(err.Error(), "message authentication failed") {
		t.Errorf("LoadCertificate of a moved version: err = %v, want an authentication failure", err)
	}
}

// testKeyRotation: a node lacking the key a value is encrypted with gets a
// *KeyMismatchError naming that key, and never overwrites the value;
// Reencrypt on a node holding both keys rewrites every secret under the
// new one, after which a node with only the new key reads everything.
func testKeyRotation(t *testing.T, c *etcdtest.Cluster) {
	ctx := context.Background()
	oldLine, newLine := keyLine("old"), keyLine("new")
	oldNode := open(t, c, Options{Keys: mustKeys(t, oldLine)})
	prefix := oldNode.Prefix()
	newNode := open(t, c, Options{Prefix: prefix, Keys: mustKeys(t, newLine)})
	both := open(t, c, Options{Prefix: prefix, Keys: mustKeys(t, newLine, oldLine)})

	bd := storetest.NewBundle(t, "rot.example")
	if err := oldNode.Store(ctx, "accounts/x/account.key", []byte("account key")); err != nil {
		t.Fatal(err)
	}
	if err := oldNode.Store(ctx, "accounts/x/meta.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := oldNode.PutCertificate(ctx, "rot.example", bd); err != nil {
		t.Fatal(err)
	}

	wantMismatch := func(what string, err error, keyID string) {
		t.Helper()
		var km *KeyMismatchError
		if !errors.As(err, &km) || km.KeyID != keyID {
			t.Errorf("%s: err = %v, want a *KeyMismatchError for key %q", what, err, keyID)
			return
		}
		if errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: a value this node cannot read must not look missing: %v", what, err)
		}
		for _, want := range []string{`key "` + keyID + `"`, "never overwrites"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not mention %q", what, err, want)
			}
		}
		if lv := km.LogValue().String(); !strings.Contains(lv, "key_id="+keyID) {
			t.Errorf("%s: LogValue = %s, want key_id=%s", what, lv, keyID)
		}
	}
	_, err := newNode.Load(ctx, "accounts/x/account.key")
	wantMismatch("Load", err, "old")
	_, _, err = newNode.LoadCertificate(ctx, "rot.example")
	wantMismatch("LoadCertificate", err, "old")
	// Never overwritten by the node that cannot read it.
	wantMismatch("Store", newNode.Store(ctx, "accounts/x/account.key", []byte("replacement")), "old")
	_, err = newNode.PutCertificate(ctx, "rot.example", storetest.NewBundle(t, "rot.example"))
	wantMismatch("PutCertificate", err, "old")
	if got, err := oldNode.Load(ctx, "accounts/x/account.key"); err != nil || string(got) != "account key" {
		t.Errorf("after the refused Store, Load = %q, %v", got, err)
	}
	if vs, _ := oldNode.ArchiveVersions(ctx, "rot.example"); !slices.Equal(vs, []int{1}) {
		t.Errorf("after the refused PutCertificate, versions = %v, want [1]", vs)
	}
	// Reencrypt on the node lacking the key reports, rewrites nothing.
	n, err := newNode.Reencrypt(ctx)
	if n != 0 {
		t.Errorf("Reencrypt without the old key rewrote %d values", n)
	}
	wantMismatch("Reencrypt without the old key", err, "old")

	// The node with both reads the old values and rewrites them.
	if got, err := both.Load(ctx, "accounts/x/account.key"); err != nil || string(got) != "account key" {
		t.Fatalf("Load with both keys = %q, %v", got, err)
	}
	n, err = both.Reencrypt(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Reencrypt = %d, %v; want 2 (the account key and version 1's key)", n, err)
	}
	if n, err := both.Reencrypt(ctx); err != nil || n != 0 {
		t.Errorf("second Reencrypt = %d, %v; want 0", n, err)
	}
	if got, err := newNode.Load(ctx, "accounts/x/account.key"); err != nil || string(got) != "account key" {
		t.Errorf("Load with only the new key after Reencrypt = %q, %v", got, err)
	}
	got, v, err := newNode.LoadCertificate(ctx, "rot.example")
	if err != nil || v != 1 {
		t.Fatalf("LoadCertificate with only the new key after Reencrypt = %d, %v", v, err)
	}
	storetest.SameBundle(t, got, bd)
	_, err = oldNode.Load(ctx, "accounts/x/account.key")
	wantMismatch("Load with only the old key after Reencrypt", err, "new")
}

// testPaging: List, ScanRecords and ArchiveVersions read past one page of
// etcd's answer, in order.
func testPaging(t *testing.T, c *etcdtest.Cluster) {
	ctx := context.Background()
	s := open(t, c, Options{})
	s.pageValues, s.pageKeys = 2, 3
	var want []string
	for i := range 10 {
		k := fmt.Sprintf("p/%02d", i)
		want = append(want, k)
		if err := s.Store(ctx, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveRecord(ctx, storetest.SampleRecord(fmt.Sprintf("r%02d.example", i))); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.List(ctx, "p"); err != nil || !slices.Equal(got, want) {
		t.Errorf("List = %q, %v; want %q", got, err, want)
	}
	if rs, err := s.ListRecords(ctx); err != nil || len(rs) != 10 || rs[9].Name != "r09.example" {
		t.Errorf("ListRecords = %d records, %v; want 10", len(rs), err)
	}
}

// testLockTakeover: a node that dies holding a lock (its client closed,
// nothing released) loses it once its lease expires, and the node waiting
// for it gets it within about the lock TTL; TryLock meanwhile says
// ErrLocked.
func testLockTakeover(t *testing.T, c *etcdtest.Cluster) {
	const ttl = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	deadCli := newClient(t, c.Endpoints())
	dead := open(t, c, Options{Client: deadCli, LockTTL: ttl})
	waiter := open(t, c, Options{Prefix: dead.Prefix(), LockTTL: ttl})
	if _, err := dead.Lock(ctx, "orderer"); err != nil {
		t.Fatal(err)
	}
	if _, err := waiter.TryLock(ctx, "orderer"); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("TryLock while another node holds it: err = %v, want ErrLocked", err)
	}
	got := make(chan error, 1)
	go func() {
		u, err := waiter.Lock(ctx, "orderer")
		if err == nil {
			err = u()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("Lock returned while the other node held the lock: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	died := time.Now()
	_ = deadCli.Close() // the process is gone: no unlock, no revoke
	if err := <-got; err != nil {
		t.Fatalf("Lock after the holder died: %v", err)
	}
	took := time.Since(died)
	t.Logf("lock taken over %v after the holder died (TTL %v)", took.Round(time.Millisecond), ttl)
	if took > ttl+2*time.Second {
		t.Errorf("lock taken over after %v; want about the TTL (%v)", took, ttl)
	}
}

// testLockSessionLost: when a Store's session lease ends (revoked here, as
// expiry during an outage would), a lock it held is released by etcd, its
// release says ErrLockLost, and the next Lock starts a new session instead
// of failing.
func testLockSessionLost(t *testing.T, c *etcdtest.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a := open(t, c, Options{LockTTL: 2 * time.Second})
	b := open(t, c, Options{Prefix: a.Prefix()})
	unlock, err := a.Lock(ctx, "n")
	if err != nil {
		t.Fatal(err)
	}
	sess, err := a.session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lease := sess.Lease()
	if _, err := a.cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sess.Done():
	case <-ctx.Done():
		t.Fatal("the session did not end after its lease was revoked")
	}
	u, err := b.TryLock(ctx, "n")
	if err != nil {
		t.Fatalf("TryLock on another node after the holder's lease ended: %v", err)
	}
	if err := u(); err != nil {
		t.Fatal(err)
	}
	if err := unlock(); !errors.Is(err, ErrLockLost) {
		t.Errorf("release of a lost lock: err = %v, want ErrLockLost", err)
	}
	for _, name := range []string{"n", "m"} {
		u, err := a.TryLock(ctx, name)
		if err != nil {
			t.Fatalf("TryLock(%q) after the session ended: %v", name, err)
		}
		if err := u(); err != nil {
			t.Fatal(err)
		}
	}
	if s2, _ := a.session(ctx); s2 == nil || s2.Lease() == lease {
		t.Error("no new session was started")
	}
}

// testLockPartition: a node cut off from etcd (etcd itself runs on) for
// longer than the lock TTL loses its lock to another node, which gets it
// about a TTL after the cut; the cut node's session ends, its release
// says ErrLockLost once the network is back, and its next Lock starts a
// new session and works instead of failing on the dead one forever.
func testLockPartition(t *testing.T, c *etcdtest.Cluster) {
	const ttl = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := etcdtest.NewProxy(t, c.Endpoints()[0])
	cut := open(t, c, Options{Client: newClient(t, []string{p.URL()}), LockTTL: ttl})
	other := open(t, c, Options{Prefix: cut.Prefix(), LockTTL: ttl})
	unlock, err := cut.Lock(ctx, "n")
	if err != nil {
		t.Fatal(err)
	}
	sess, err := cut.session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p.Cut()
	u, err := other.Lock(ctx, "n")
	if err != nil {
		t.Fatalf("Lock on the other node while the holder is cut off: %v", err)
	}
	t.Logf("lock taken over %v after the partition (TTL %v)", time.Since(start).Round(time.Millisecond), ttl)
	select {
	case <-sess.Done():
	case <-ctx.Done():
		t.Fatal("the cut-off node's session did not end")
	}
	if err := u(); err != nil {
		t.Fatal(err)
	}
	p.Restore()
	if err := unlock(); !errors.Is(err, ErrLockLost) {
		t.Errorf("release of the lock lost in the partition: err = %v, want ErrLockLost", err)
	}
	healed := time.Now()
	u, err = cut.Lock(ctx, "n")
	if err != nil {
		t.Fatalf("Lock after the partition healed: %v", err)
	}
	t.Logf("locked again %v after the partition healed", time.Since(healed).Round(time.Millisecond))
	if err := u(); err != nil {
		t.Fatal(err)
	}
}

// testLiveMissingVersion: live naming a version that is not there (damage
// done by hand) is an error that says so, not "never issued".
func testLiveMissingVersion(t *testing.T, c *etcdtest.Cluster) {
	ctx := context.Background()
	s := open(t, c, Options{})
	if _, err := s.cli.Put(ctx, s.liveKey("gone.example"), "3"); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.LoadCertificate(ctx, "gone.example")
	if err == nil || errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing version") {
		t.Errorf("LoadCertificate: err = %v, want one saying live names a missing version", err)
	}
}
