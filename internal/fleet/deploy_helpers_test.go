package fleet

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/detour-acme/detour/internal/deploy"
	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/store/etcdstore"
	"github.com/detour-acme/detour/internal/store/storetest"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// testProbe is the watch's probe interval in tests: an outage is noticed
// within two of them.
const testProbe = 300 * time.Millisecond

// fastWatch is the shared store with a short watch probe.
type fastWatch struct{ *etcdstore.Store }

func (s fastWatch) WatchLive(ctx context.Context, fn func(string, int)) error {
	return s.WatchLiveWith(ctx, etcdstore.WatchOptions{Probe: testProbe}, fn)
}

// keyLine returns a key file line "id:<fresh key>".
func keyLine(id string) string {
	var k [32]byte
	_, _ = rand.Read(k[:])
	return id + ":" + base64.StdEncoding.EncodeToString(k[:])
}

// loadKeys writes lines to a 0600 key file and loads it.
func loadKeys(t *testing.T, lines ...string) etcdstore.Keys {
	t.Helper()
	file := filepath.Join(t.TempDir(), "fleet.key")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := etcdstore.LoadKeys(file)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// deployFleet is a fleet prefix on a cluster, with a writer (the orderer
// that stores certificates in the shared store) and nodes that deploy.
type deployFleet struct {
	t      *testing.T
	c      *etcdtest.Cluster
	prefix string
	keys   etcdstore.Keys
	logs   *logBuffer
	cli    *clientv3.Client // the writer's and the test's
	writer *etcdstore.Store
}

func newDeployFleet(t *testing.T, c *etcdtest.Cluster, keys etcdstore.Keys) *deployFleet {
	t.Helper()
	f := &deployFleet{t: t, c: c, prefix: "/detour/" + strings.ReplaceAll(t.Name(), "/", "-"), keys: keys, logs: &logBuffer{}}
	f.cli = dial(t, c.Endpoints())
	f.writer = f.openStore(f.cli, keys)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", f.logs)
		}
	})
	return f
}

func dial(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func (f *deployFleet) openStore(cli *clientv3.Client, keys etcdstore.Keys) *etcdstore.Store {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := etcdstore.Open(ctx, etcdstore.Options{Client: cli, Prefix: f.prefix, FleetID: "test", Keys: keys,
		Logger: f.logger("writer"), Timeout: time.Second})
	if err != nil {
		f.t.Fatalf("opening the shared store: %v", err)
	}
	f.t.Cleanup(func() { s.Close() })
	return s
}

func (f *deployFleet) logger(node string) *slog.Logger {
	return slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test_node", node)
}

// put stores a fresh certificate for name in the shared store and
// returns it and its version.
func (f *deployFleet) put(name string) (store.Bundle, int) {
	f.t.Helper()
	return f.putWith(f.writer, name)
}

func (f *deployFleet) putWith(s *etcdstore.Store, name string) (store.Bundle, int) {
	f.t.Helper()
	b := storetest.NewBundle(f.t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, err := s.PutCertificate(ctx, name, b)
	if err != nil {
		f.t.Fatalf("storing %s in the shared store: %v", name, err)
	}
	rec := storetest.SampleRecord(name)
	rec.Version, rec.LiveSum = v, b.LiveSum()
	if err := s.SaveRecord(ctx, rec); err != nil {
		f.t.Fatal(err)
	}
	return b, v
}

// reports returns every node's reports.
func (f *deployFleet) reports() map[string]map[string]Deployed {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := ReadDeployed(ctx, f.cli, f.prefix)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// deployNode is one node: its state directory, its etcd client and
// shared store, its Deployer and its hook's log.
type deployNode struct {
	f      *deployFleet
	name   string
	dir    string // the state directory
	fs     *store.FS
	cli    *clientv3.Client
	shared *etcdstore.Store
	d      *Deployer
	hooks  string // the file the hook appends a line to per run
	hook   string // the hook command (see newNode)
	stop   func() error
}

// nodeOpts configure a node.
type nodeOpts struct {
	endpoints []string       // default: every member
	keys      etcdstore.Keys // default: the fleet's
	hook      string         // default: append "<name> <local version> <sha256 of cert.pem>"
	only      []string       // the certificates configured (with the hook); default: all
}

func (f *deployFleet) node(name string, o nodeOpts) *deployNode {
	f.t.Helper()
	dir := f.t.TempDir()
	fsys, err := store.NewFS(filepath.Join(dir, "state"), store.FSOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	if o.endpoints == nil {
		o.endpoints = f.c.Endpoints()
	}
	if o.keys.Current() == "" {
		o.keys = f.keys
	}
	n := &deployNode{f: f, name: name, dir: dir, fs: fsys, hooks: filepath.Join(dir, "hooks.log")}
	n.hook = o.hook
	if n.hook == "" {
		n.hook = `echo "$DETOUR_NAME $DETOUR_VERSION $(sha256sum < "$DETOUR_CERT" | cut -d' ' -f1)" >> ` + n.hooks
	}
	n.cli = dial(f.t, o.endpoints)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n.shared, err = etcdstore.Open(ctx, etcdstore.Options{Client: n.cli, Prefix: f.prefix, FleetID: "test", Keys: o.keys,
		Logger: f.logger(name), Timeout: time.Second})
	if err != nil {
		f.t.Fatalf("node %s: opening the shared store: %v", name, err)
	}
	f.t.Cleanup(func() { n.shared.Close() })
	n.d, err = NewDeployer(DeployerOptions{
		Shared: fastWatch{n.shared}, Local: fsys, Client: n.cli, Prefix: f.prefix, Node: name,
		Logger: f.logger(name), Timeout: time.Second,
		Plan: func(cert string) (deploy.Plan, bool) {
			if o.only != nil && !slices.Contains(o.only, cert) {
				return deploy.Plan{}, false
			}
			return deploy.Plan{Hook: deploy.Hook{Command: n.hook, Timeout: time.Minute}}, true
		},
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

// start runs the node's Deployer until stop (or the end of the test).
func (n *deployNode) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.d.Run(ctx) }()
	var once sync.Once
	var err error
	n.stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	n.f.t.Cleanup(func() { n.stop() })
}

// halt stops the Deployer and checks it ended as told.
func (n *deployNode) halt() {
	n.f.t.Helper()
	if err := n.stop(); !errors.Is(err, context.Canceled) {
		n.f.t.Errorf("node %s: Run = %v, want context.Canceled", n.name, err)
	}
}

// hookRuns returns the lines the hook wrote.
func (n *deployNode) hookRuns() []string {
	raw, err := os.ReadFile(n.hooks)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		n.f.t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
}

// serves reports whether the node's live/ holds b for name.
func (n *deployNode) serves(name string, b store.Bundle) bool {
	cert, err := os.ReadFile(n.fs.LivePath(name, "cert.pem"))
	if err != nil {
		return false
	}
	key, err := os.ReadFile(n.fs.LivePath(name, "privkey.pem"))
	return err == nil && bytes.Equal(cert, b.CertPEM) && bytes.Equal(key, b.KeyPEM)
}

// checkLive checks every file of live/<name>/ against b, and that the key
// is the certificate's.
func (n *deployNode) checkLive(name string, b store.Bundle) {
	t := n.f.t
	t.Helper()
	want := map[string][]byte{"cert.pem": b.CertPEM, "chain.pem": b.ChainPEM, "fullchain.pem": b.FullchainPEM(), "privkey.pem": b.KeyPEM}
	got := map[string][]byte{}
	for file, w := range want {
		data, err := os.ReadFile(n.fs.LivePath(name, file))
		if err != nil {
			t.Errorf("node %s: %v", n.name, err)
			continue
		}
		if !bytes.Equal(data, w) {
			t.Errorf("node %s: live/%s/%s differs from the fleet's certificate", n.name, name, file)
		}
		got[file] = data
	}
	if _, err := tls.X509KeyPair(got["fullchain.pem"], got["privkey.pem"]); err != nil {
		t.Errorf("node %s: live/%s: the key is not the certificate's: %v", n.name, name, err)
	}
}

// hookLine is the line the default hook writes for b at local version v.
func hookLine(name string, v int, b store.Bundle) string {
	sum := sha256.Sum256(b.CertPEM)
	return name + " " + strconv.Itoa(v) + " " + hex.EncodeToString(sum[:])
}
