package etcdstore

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// newClient dials endpoints; the client is closed when the test ends.
func newClient(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// keyLine returns a key file line with a fresh random key.
func keyLine(id string) string {
	var k [keySize]byte
	_, _ = rand.Read(k[:])
	return id + ":" + base64.StdEncoding.EncodeToString(k[:])
}

// writeKeyFile writes lines to a fresh 0600 file and returns its path.
func writeKeyFile(t testing.TB, lines ...string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "fleet.key")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// mustKeys loads a key file of lines.
func mustKeys(t testing.TB, lines ...string) Keys {
	t.Helper()
	k, err := LoadKeys(writeKeyFile(t, lines...))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var prefixSeq atomic.Int64

// freshPrefix returns a prefix no other test uses.
func freshPrefix() string { return fmt.Sprintf("/t%d", prefixSeq.Add(1)) }

// open opens a Store on its own client to c, closed when the test ends.
// opts.Client, Prefix, FleetID and Keys default to a new client, a fresh
// prefix, "test" and keys.
func open(t testing.TB, c *etcdtest.Cluster, opts Options) *Store {
	t.Helper()
	if opts.Client == nil {
		opts.Client = newClient(t, c.Endpoints())
	}
	if opts.Prefix == "" {
		opts.Prefix = freshPrefix()
	}
	if opts.FleetID == "" {
		opts.FleetID = "test"
	}
	if len(opts.Keys.list) == 0 {
		opts.Keys = sharedKeys
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Open(ctx, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// sharedKeys are the keys of the stores open makes by default.
var sharedKeys = func() Keys {
	var k [keySize]byte
	_, _ = rand.Read(k[:])
	aead, err := newAEAD(k[:])
	if err != nil {
		panic(err)
	}
	return Keys{list: []aeadKey{{id: "shared", aead: aead}}}
}()

// rawRange returns every key and value under prefix, as etcd holds them.
func rawRange(t testing.TB, cli *clientv3.Client, prefix string) map[string][]byte {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv.Value
	}
	return out
}
