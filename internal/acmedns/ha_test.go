package acmedns

import (
	"context"
	"net/http"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/store/etcdstore"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// A Store shared by several Servers is followed and updated in place.
var (
	_ KeyWatcher = (*etcdstore.Store)(nil)
	_ Modifier   = (*etcdstore.Store)(nil)
)

// followBound is how long a Server may take to serve what another Server
// of the same storage wrote. It takes milliseconds; the bound is generous
// for loaded CI machines.
const followBound = 15 * time.Second

// fleetKeys returns a fresh fleet key set.
func fleetKeys(t *testing.T) etcdstore.Keys {
	t.Helper()
	file := filepath.Join(t.TempDir(), "fleet.key")
	if err := etcdstore.NewKeyFile(file); err != nil {
		t.Fatal(err)
	}
	keys, err := etcdstore.LoadKeys(file)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// sharedStore opens the store of one Server on its own client to c, as a
// host of its own would, closed when the test ends.
func sharedStore(t *testing.T, c *etcdtest.Cluster, keys etcdstore.Keys) *etcdstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := etcdstore.Open(ctx, etcdstore.Options{Client: c.Client(nil), Prefix: "/ha", FleetID: "ha", Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// deafStore is a shared store whose Server hears of no other Server's
// write (its watch reports nothing) and that counts the accounts read: it
// knows of other Servers' accounts only by looking them up.
type deafStore struct {
	*etcdStore
	loads atomic.Int64
}

// etcdStore is etcdstore.Store under a name that, embedded, does not hide
// its method Store.
type etcdStore = etcdstore.Store

func (d *deafStore) WatchKeys(context.Context, string) (<-chan string, error) {
	return make(chan string), nil
}

func (d *deafStore) Load(ctx context.Context, key string) ([]byte, error) {
	d.loads.Add(1)
	return d.etcdStore.Load(ctx, key)
}

// waitTXT polls e's DNS server until it serves exactly want (sorted) at
// name, for at most followBound. Another Server's writes reach e through
// etcd; nothing tells the test when e has served them.
func (e *env) waitTXT(name string, want ...string) {
	e.t.Helper()
	want = sorted(want...)
	deadline := time.Now().Add(followBound)
	for {
		got := e.txt(name)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("after %v the DNS server at %s serves %q at %s, want %q", followBound, e.dnsAddr, got, name, want)
		}
		time.Sleep(10 * time.Millisecond) // polling another server's state
	}
}

// TestHARegisterStopUpdate: two Servers share etcd; an account registered
// through A, which then stops, is updated through B, whose DNS server
// answers with the new value.
func TestHARegisterStopUpdate(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t, etcdtest.Options{})
	keys := fleetKeys(t)
	a := start(t, envOptions{storage: sharedStore(t, c, keys)})
	b := start(t, envOptions{storage: sharedStore(t, c, keys)})
	reg := a.register(`{"allowfrom": ["127.0.0.0/8"]}`)
	a.stop()

	v := value("afterstop")
	b.mustUpdate(reg, v)
	if got := b.txt(reg.Fulldomain); !slices.Equal(got, []string{v}) {
		t.Errorf("B serves %q at %s after the update through B, want [%s]", got, reg.Fulldomain, v)
	}
	if r := b.update(clientFrom("127.0.0.1"), reg, reg.Subdomain, value("allowed")); r.status != http.StatusOK {
		t.Errorf("update through B from inside allowfrom: %d %s", r.status, r.body)
	}
	wrong := reg
	if wrong.Password = reg.Password[:39] + "A"; wrong.Password == reg.Password {
		wrong.Password = reg.Password[:39] + "B"
	}
	if r := b.update(nil, wrong, reg.Subdomain, v); r.status != http.StatusUnauthorized {
		t.Errorf("update through B with a wrong key: %d, want 401", r.status)
	}

	// A Server started afterwards on the same storage serves it too.
	third := start(t, envOptions{storage: sharedStore(t, c, keys)})
	if got := third.txt(reg.Fulldomain); !slices.Contains(got, v) {
		t.Errorf("a third Server serves %q at %s, want %s among them", got, reg.Fulldomain, v)
	}
}

// TestHAFollow: what one Server writes, the other serves within
// followBound: a registration and a TXT value through A are answered by
// B's DNS, a value through B by A's, and an account removed from the
// storage disappears from both.
func TestHAFollow(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t, etcdtest.Options{})
	keys := fleetKeys(t)
	st := sharedStore(t, c, keys)
	a := start(t, envOptions{storage: st})
	b := start(t, envOptions{storage: sharedStore(t, c, keys)})
	reg, other := a.register(""), a.register("")

	x := value("viaA")
	a.mustUpdate(reg, x)
	b.waitTXT(reg.Fulldomain, x)

	y := value("viaB")
	b.mustUpdate(reg, y)
	a.waitTXT(reg.Fulldomain, x, y)
	if got := b.txt(reg.Fulldomain); !slices.Equal(got, sorted(x, y)) {
		t.Errorf("B serves %q, want %q", got, sorted(x, y))
	}

	z := value("other")
	b.mustUpdate(other, z)
	a.waitTXT(other.Fulldomain, z)

	if err := st.Delete(t.Context(), accountKey(reg.Username)); err != nil {
		t.Fatal(err)
	}
	a.waitTXT(reg.Fulldomain)
	b.waitTXT(reg.Fulldomain)
	if r := b.update(nil, reg, reg.Subdomain, x); r.status != http.StatusUnauthorized {
		t.Errorf("update of a removed account: %d %s, want 401", r.status, r.body)
	}
	if got := a.txt(other.Fulldomain); !slices.Equal(got, []string{z}) {
		t.Errorf("removing one account changed another's values: %q", got)
	}
}

// TestHALookupOnMiss: a Server that has not heard of a registration made
// through another reads the account once, then accepts the update; an
// unknown user costs one read per request, no more.
func TestHALookupOnMiss(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t, etcdtest.Options{})
	keys := fleetKeys(t)
	a := start(t, envOptions{storage: sharedStore(t, c, keys)})
	deaf := &deafStore{etcdStore: sharedStore(t, c, keys)}
	b := start(t, envOptions{storage: deaf})
	reg := a.register("")

	before := deaf.loads.Load()
	v := value("lookup")
	b.mustUpdate(reg, v)
	if got := b.txt(reg.Fulldomain); !slices.Equal(got, []string{v}) {
		t.Errorf("B serves %q, want [%s]", got, v)
	}
	if n := deaf.loads.Load() - before; n != 1 {
		t.Errorf("B read %d accounts to accept an update of one it had not heard of, want 1", n)
	}
	before = deaf.loads.Load()
	b.mustUpdate(reg, value("again"))
	if n := deaf.loads.Load() - before; n != 0 {
		t.Errorf("B read %d accounts for an update of one it knows, want 0", n)
	}

	unknown := reg
	unknown.Username = "6f1f6f0e-2c7a-4bb0-9a0e-111111111111"
	for i := range 3 {
		before = deaf.loads.Load()
		if r := b.update(nil, unknown, reg.Subdomain, v); r.status != http.StatusUnauthorized {
			t.Fatalf("update by an unknown user: %d %s, want 401", r.status, r.body)
		}
		if n := deaf.loads.Load() - before; n != 1 {
			t.Errorf("request %d by an unknown user read %d accounts, want 1", i+1, n)
		}
	}
}

// TestHAUpdatesKeepEachOther: updates of one account through two Servers
// (a name and its wildcard, sent through a load balancer) keep each
// other's values even when one Server has not heard of the other's update
// (B below hears nothing): each update changes the stored account.
func TestHAUpdatesKeepEachOther(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t, etcdtest.Options{})
	keys := fleetKeys(t)
	a := start(t, envOptions{storage: sharedStore(t, c, keys)})
	b := start(t, envOptions{storage: &deafStore{etcdStore: sharedStore(t, c, keys)}})
	reg := a.register("")
	y1, x, y2 := value("b1"), value("a1"), value("b2")
	b.mustUpdate(reg, y1) // B reads the account, with no values
	a.mustUpdate(reg, x)  // B does not hear of it
	b.mustUpdate(reg, y2)
	if got, want := b.txt(reg.Fulldomain), sorted(y1, x, y2); !slices.Equal(got, want) {
		t.Errorf("B serves %q after its second update, want %q: A's value lost", got, want)
	}
	a.waitTXT(reg.Fulldomain, y1, x, y2)
}
