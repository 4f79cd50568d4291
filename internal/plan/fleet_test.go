package plan

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/store/etcdstore"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// fleetConfig returns a configuration sharing its state in etcd at
// endpoints, with a fresh encryption key.
func fleetConfig(t *testing.T, endpoints string, node string) *config.Config {
	t.Helper()
	key := filepath.Join(t.TempDir(), "fleet.key")
	if err := etcdstore.NewKeyFile(key); err != nil {
		t.Fatal(err)
	}
	doc := fmt.Sprintf("[store]\nkind = \"etcd\"\nendpoints = [%s]\nencryption_key_file = %q\nfleet = \"web\"\nnode = %q\nprefix = \"/detour/%s\"\n",
		endpoints, key, node, strings.ReplaceAll(t.Name(), "/", "-"))
	cfg, err := config.Parse("/etc/detour/detour.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestFleetOpen: a fleet's planner keeps records and locks in etcd and
// this node's files in its state directory; problems name the [store]
// table's file and line.
func TestFleetOpen(t *testing.T) {
	c := etcdtest.New(t, etcdtest.Options{})
	var eps []string
	for _, e := range c.Endpoints() {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	cfg := fleetConfig(t, strings.Join(eps, ", "), "web1")
	p, err := Open(Options{Config: cfg, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !p.Fleet() {
		t.Fatal("not a fleet")
	}
	if _, ok := p.SharedStore().(fleetShared); !ok {
		t.Errorf("shared store is %T, want etcd", p.SharedStore())
	}
	rows, err := p.Status(t.Context(), nil)
	if err != nil || len(rows) != 0 {
		t.Errorf("status of an empty fleet: %v, %v", rows, err)
	}

	// Another fleet on the same prefix is refused.
	other := fleetConfig(t, strings.Join(eps, ", "), "web2")
	other.Store.Prefix = cfg.Store.Prefix
	other.Store.Fleet = "another"
	other.Store.EncryptionKeyFile = cfg.Store.EncryptionKeyFile
	if _, err := Open(Options{Config: other, StateDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "/etc/detour/detour.toml:1: [store]") ||
		!strings.Contains(err.Error(), "another") {
		t.Errorf("another fleet on the prefix: %v", err)
	}
}
