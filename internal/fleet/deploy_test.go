package fleet

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/store/etcdstore"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

const www = "www.example"

// serial returns the serial number of b's leaf, as reports give it.
func serial(t *testing.T, b store.Bundle) string {
	t.Helper()
	leaf, err := b.Leaf()
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber.Text(16)
}

// reported waits until node's report of cert satisfies ok, and returns it.
func (f *deployFleet) reported(node, cert string, what string, ok func(Deployed) bool) Deployed {
	f.t.Helper()
	var got Deployed
	eventually(f.t, 15*time.Second, node+" reports "+what, func() bool {
		r, found := f.reports()[node][cert]
		got = r
		return found && ok(r)
	})
	return got
}

// servesVersion is a report condition: version v, no error.
func servesVersion(v int) func(Deployed) bool {
	return func(d Deployed) bool { return d.Version == v && d.Error == "" }
}

func TestDeployer(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t, etcdtest.Options{})
	keys := loadKeys(t, keyLine("k1"))
	t.Run("EveryNode", func(t *testing.T) { t.Parallel(); testDeployEveryNode(t, c, keys) })
	t.Run("KeyMissing", func(t *testing.T) { t.Parallel(); testDeployKeyMissing(t, c) })
	t.Run("HookFails", func(t *testing.T) { t.Parallel(); testDeployHookFails(t, c, keys) })
	t.Run("Burst", func(t *testing.T) { t.Parallel(); testDeployBurst(t, c, keys) })
	t.Run("Interrupted", func(t *testing.T) { t.Parallel(); testDeployInterrupted(t, c, keys) })
	t.Run("EtcdOutage", func(t *testing.T) { t.Parallel(); testDeployEtcdOutage(t, c, keys) })
}

// testDeployEveryNode: three nodes, each with its own client and state
// directory. A certificate stored in the shared store is in every node's
// live/ (every file, the key the certificate's), each node's hook ran
// once, after the switch (it hashed the new cert.pem), every node reports
// the version and serial, and keeps a local record `detour status` and
// CheckLive accept. A certificate the nodes do not configure is written
// without running the hook. A second version reaches every node; one
// whose Deployer was stopped meanwhile still reports the first (plain
// keys), and catches up when it starts again.
func testDeployEveryNode(t *testing.T, c *etcdtest.Cluster, keys etcdstore.Keys) {
	f := newDeployFleet(t, c, keys)
	var nodes []*deployNode
	for _, name := range []string{"n1", "n2", "n3"} {
		n := f.node(name, nodeOpts{only: []string{www}})
		n.start()
		nodes = append(nodes, n)
	}
	b1, v1 := f.put(www)
	other, vo := f.put("other.example")
	for _, n := range nodes {
		r := f.reported(n.name, www, "version 1", servesVersion(v1))
		if r.Serial != serial(t, b1) || r.Sum != b1.LiveSum() || r.At.IsZero() || r.NotAfter.IsZero() {
			t.Errorf("%s reports %+v; want serial %s and the bundle's sum", n.name, r, serial(t, b1))
		}
		f.reported(n.name, "other.example", "the unconfigured certificate", servesVersion(vo))
	}
	time.Sleep(300 * time.Millisecond) // a second run of a hook would show by now
	for _, n := range nodes {
		n.checkLive(www, b1)
		n.checkLive("other.example", other)
		if got, want := n.hookRuns(), []string{hookLine(www, 1, b1)}; !slices.Equal(got, want) {
			t.Errorf("%s: hook runs %q, want %q (once, with the new cert.pem)", n.name, got, want)
		}
		rec, err := n.fs.LoadRecord(context.Background(), www)
		if err != nil {
			t.Fatalf("%s: local record: %v", n.name, err)
		}
		if rec.Version != 1 || rec.Serial != serial(t, b1) || rec.LiveSum != b1.LiveSum() || rec.CA != "https://acme.example/directory" {
			t.Errorf("%s: local record = version %d serial %s CA %q; want the local version, the serial and the fleet's CA", n.name, rec.Version, rec.Serial, rec.CA)
		}
		if err := n.fs.CheckLive(www, rec, time.Now()); err != nil {
			t.Errorf("%s: CheckLive: %v", n.name, err)
		}
	}

	down := nodes[2]
	down.halt()
	b2, v2 := f.put(www)
	for _, n := range nodes[:2] {
		f.reported(n.name, www, "version 2", servesVersion(v2))
		n.checkLive(www, b2)
	}
	if r := f.reports()[down.name][www]; r.Version != v1 || r.Sum != b1.LiveSum() {
		t.Errorf("the stopped node's report = %+v, want version %d still", r, v1)
	}
	down.checkLive(www, b1)
	down.start()
	f.reported(down.name, www, "version 2 after its restart", servesVersion(v2))
	down.checkLive(www, b2)
	time.Sleep(300 * time.Millisecond)
	for _, n := range nodes {
		if got, want := n.hookRuns(), []string{hookLine(www, 1, b1), hookLine(www, 2, b2)}; !slices.Equal(got, want) {
			t.Errorf("%s: hook runs %q, want %q", n.name, got, want)
		}
	}
}

// testDeployKeyMissing: the fleet rotates to key k2; a node whose key
// file still holds k1 only never writes the new version: it keeps serving
// the first one, reports the error naming k2, logs the key id, and its
// archive holds one version. A node with both keys switches.
func testDeployKeyMissing(t *testing.T, c *etcdtest.Cluster) {
	k1, k2 := keyLine("k1"), keyLine("k2")
	old, both := loadKeys(t, k1), loadKeys(t, k2, k1)
	f := newDeployFleet(t, c, old)
	stale := f.node("stale", nodeOpts{keys: old})
	current := f.node("current", nodeOpts{keys: both})
	stale.start()
	current.start()
	b1, v1 := f.put(www)
	f.reported(stale.name, www, "version 1", servesVersion(v1))
	f.reported(current.name, www, "version 1", servesVersion(v1))

	rotated := f.openStore(f.cli, both)
	b2, v2 := f.putWith(rotated, www)
	f.reported(current.name, www, "version 2", servesVersion(v2))
	current.checkLive(www, b2)
	r := f.reported(stale.name, www, "the missing key", func(d Deployed) bool { return d.Error != "" })
	if r.Version != v1 || r.Sum != b1.LiveSum() || r.Serial != serial(t, b1) || r.ErrorVersion != v2 || !strings.Contains(r.Error, `"k2"`) {
		t.Errorf("stale node reports %+v; want version %d served, the error about version %d naming key \"k2\"", r, v1, v2)
	}
	time.Sleep(300 * time.Millisecond)
	stale.checkLive(www, b1)
	if vs, err := stale.fs.ArchiveVersions(context.Background(), www); err != nil || !slices.Equal(vs, []int{1}) {
		t.Errorf("stale node's archive = %v, %v; want version 1 only: nothing written", vs, err)
	}
	if got := stale.hookRuns(); len(got) != 1 {
		t.Errorf("stale node's hook ran %d times, want once (version 1)", len(got))
	}
	if !strings.Contains(f.logs.String(), "key_id=k2") {
		t.Errorf("the missing key id was not logged")
	}
}

// testDeployHookFails: a hook that fails leaves the new certificate live,
// and the report carries the hook's error (with its output) for that
// version.
func testDeployHookFails(t *testing.T, c *etcdtest.Cluster, keys etcdstore.Keys) {
	f := newDeployFleet(t, c, keys)
	n := f.node("n1", nodeOpts{hook: "echo boom-from-hook >&2; exit 3"})
	n.start()
	b1, v1 := f.put(www)
	r := f.reported(n.name, www, "the hook's failure", func(d Deployed) bool { return d.Error != "" })
	if r.Version != v1 || r.ErrorVersion != v1 || r.Sum != b1.LiveSum() || !strings.Contains(r.Error, "boom-from-hook") {
		t.Errorf("report = %+v; want version %d served with the hook's error", r, v1)
	}
	n.checkLive(www, b1)
}

// testDeployBurst: versions 2 to 5 are stored while the hook of version 1
// runs: once it is done, the node deploys version 5 only.
func testDeployBurst(t *testing.T, c *etcdtest.Cluster, keys etcdstore.Keys) {
	f := newDeployFleet(t, c, keys)
	n := f.node("n1", nodeOpts{})
	release := filepath.Join(n.dir, "release")
	n.hook += "; while [ ! -e " + release + " ]; do sleep 0.02; done"
	n.start()
	b1, _ := f.put(www)
	eventually(t, 15*time.Second, "the first hook runs", func() bool { return len(n.hookRuns()) == 1 })
	var last store.Bundle
	var v int
	for range 4 {
		last, v = f.put(www)
	}
	time.Sleep(200 * time.Millisecond) // the watch reports the versions meanwhile
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f.reported(n.name, www, "the last version", servesVersion(v))
	n.checkLive(www, last)
	time.Sleep(300 * time.Millisecond)
	if got, want := n.hookRuns(), []string{hookLine(www, 1, b1), hookLine(www, 2, last)}; !slices.Equal(got, want) {
		t.Errorf("hook runs %q, want %q: the first version, then the last", got, want)
	}
}

// testDeployInterrupted: a node that wrote a version and died before its
// hook ran (the note of the deploy is there) runs the hook when it starts,
// without writing the version again. Started again with nothing left to
// do, it runs nothing, and writes its report again if it is missing.
func testDeployInterrupted(t *testing.T, c *etcdtest.Cluster, keys etcdstore.Keys) {
	f := newDeployFleet(t, c, keys)
	n := f.node("n1", nodeOpts{})
	ctx := context.Background()
	b1, v1 := f.put(www)
	if _, err := n.fs.PutCertificate(ctx, www, b1); err != nil {
		t.Fatal(err)
	}
	note, _ := json.Marshal(deployNote{Sum: b1.LiveSum(), Version: v1})
	if err := n.fs.Store(ctx, deployNoteKey(www), note); err != nil {
		t.Fatal(err)
	}
	n.start()
	f.reported(n.name, www, "version 1", servesVersion(v1))
	if got, want := n.hookRuns(), []string{hookLine(www, 1, b1)}; !slices.Equal(got, want) {
		t.Errorf("hook runs %q, want %q", got, want)
	}
	if _, err := n.fs.Load(ctx, deployNoteKey(www)); err == nil {
		t.Errorf("the note of the deploy is still there")
	}
	if vs, _ := n.fs.ArchiveVersions(ctx, www); !slices.Equal(vs, []int{1}) {
		t.Errorf("archive = %v, want version 1 only", vs)
	}

	n.halt()
	if _, err := f.cli.Delete(ctx, f.prefix+"/fleet/deployed/n1/"+www); err != nil {
		t.Fatal(err)
	}
	n.start()
	f.reported(n.name, www, "version 1 again", servesVersion(v1))
	time.Sleep(300 * time.Millisecond)
	if got := n.hookRuns(); len(got) != 1 {
		t.Errorf("hook runs %q after a restart with nothing to do, want the first only", got)
	}
}

// testDeployEtcdOutage: a node reaches etcd through a proxy the test cuts.
// Cut while idle, it keeps its live files while the fleet stores a new
// version, and deploys it once the proxy is back. Cut during a deploy (the
// hook runs), its report cannot be written: it retries, and writes it once
// etcd answers. Each outage is logged once by the watch, the one that hit
// a deploy once by the Deployer, each with its end.
func testDeployEtcdOutage(t *testing.T, c *etcdtest.Cluster, keys etcdstore.Keys) {
	f := newDeployFleet(t, c, keys)
	p := etcdtest.NewProxy(t, c.Endpoints()[0])
	n := f.node("n1", nodeOpts{endpoints: []string{p.URL()}})
	block, started, release := filepath.Join(n.dir, "block"), filepath.Join(n.dir, "started"), filepath.Join(n.dir, "release")
	n.hook += "; if [ -e " + block + " ]; then touch " + started + "; while [ ! -e " + release + " ]; do sleep 0.02; done; fi"
	n.start()
	b1, v1 := f.put(www)
	f.reported(n.name, www, "version 1", servesVersion(v1))

	// Outage while idle.
	p.Cut()
	b2, v2 := f.put(www)
	time.Sleep(1500 * time.Millisecond) // several probes and attempts fail
	n.checkLive(www, b1)
	if r := f.reports()[n.name][www]; r.Version != v1 {
		t.Errorf("report during the outage = %+v, want version %d still", r, v1)
	}
	back := time.Now()
	p.Restore()
	f.reported(n.name, www, "version 2 after the outage", servesVersion(v2))
	t.Logf("caught up %v after etcd came back", time.Since(back).Round(time.Millisecond))
	n.checkLive(www, b2)

	// Outage during a deploy.
	if err := os.WriteFile(block, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b3, v3 := f.put(www)
	eventually(t, 15*time.Second, "the hook of version 3 runs", func() bool {
		_, err := os.Stat(started)
		return err == nil
	})
	p.Cut()
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the report fails, and its retries
	n.checkLive(www, b3)
	back = time.Now()
	p.Restore()
	f.reported(n.name, www, "version 3 after the second outage", servesVersion(v3))
	t.Logf("reported %v after etcd came back", time.Since(back).Round(time.Millisecond))
	if got := n.hookRuns(); len(got) != 3 {
		t.Errorf("hook runs %q, want one per version", got)
	}

	logs := f.logs.String()
	for _, want := range []struct {
		msg string
		n   int
	}{
		{"watching the live certificates: etcd does not answer", 2},
		{"etcd answers again; the live certificates were read again", 2},
		{"the fleet's etcd does not answer", 1},
		{"the fleet's etcd answers again", 1},
	} {
		if got := strings.Count(logs, want.msg); got != want.n {
			t.Errorf("%q logged %d times, want %d", want.msg, got, want.n)
		}
	}
}
