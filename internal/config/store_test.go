package config

import (
	"strings"
	"testing"
)

// TestStoreTable: [store] kind = "etcd" with its settings, defaults, and
// every mistake named with its line and the fix.
func TestStoreTable(t *testing.T) {
	cfg, err := Parse(testFile, []byte(`
[store]
kind = "etcd"
endpoints = ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
ca_file = "/etc/detour/etcd-ca.pem"
cert_file = "/etc/detour/etcd.pem"
key_file = "/etc/detour/etcd-key.pem"
encryption_key_file = "/etc/detour/fleet.key"
fleet = "web-prod"
node = "web1"
`))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Store
	if !s.IsFleet() || len(s.Endpoints) != 2 || s.Prefix != DefaultStorePrefix || s.Node != "web1" || s.Fleet != "web-prod" || s.Line != 2 || s.LockTTL != DefaultLockTTL || len(cfg.Warnings) != 0 {
		t.Errorf("store = %+v, warnings %v", s, cfg.Warnings)
	}
	if d := Default(); d.Store.IsFleet() {
		t.Errorf("default store = %+v, want the state directory", d.Store)
	}
	if cfg, err := Parse(testFile, []byte("email = \"a@b.example\"\n")); err != nil || cfg.Store.Kind != StoreFS {
		t.Errorf("no [store]: %+v, %v", cfg.Store, err)
	}

	const fleet = "[store]\nkind = \"etcd\"\nencryption_key_file = \"/k\"\nfleet = \"f\"\nnode = \"n1\"\n"
	for _, tc := range []struct{ doc, want string }{
		{"[store]\nkind = \"consul\"\n", testFile + `:2: store.kind: "consul" is not a store kind; use "fs"`},
		{"[store]\nendpoints = [\"https://a:2379\"]\n", testFile + `:2: store.endpoints: endpoints is for a fleet sharing its state in etcd; set kind = "etcd"`},
		{fleet, "store: endpoints is missing"},
		{fleet + "endpoints = [\"10.0.0.1:2379\"]\n", testFile + `:6: store.endpoints: "10.0.0.1:2379" is not an etcd client URL`},
		{fleet + "endpoints = [\"https://10.0.0.1\"]\n", `has no port; etcd's client port is normally 2379: "https://10.0.0.1:2379"`},
		{fleet + "endpoints = [\"https://a:2379\"]\ncert_file = \"/c\"\n", "cert_file and key_file go together"},
		{fleet + "endpoints = [\"https://a:2379\"]\nca_file = \"ca.pem\"\n", `store.ca_file: "ca.pem" is a relative path`},
		{"[store]\nkind = \"etcd\"\nendpoints = [\"https://a:2379\"]\nfleet = \"f\"\nnode = \"n\"\n", "encryption_key_file is missing: the private keys are encrypted in etcd with a key every node holds; create one with `detour fleet init-key"},
		{"[store]\nkind = \"etcd\"\nendpoints = [\"https://a:2379\"]\nencryption_key_file = \"/k\"\nnode = \"n\"\n", `fleet is missing: name the fleet, e.g. fleet = "web-prod"`},
		{fleet + "endpoints = [\"https://a:2379\"]\nprefix = \"detour/\"\n", `store.prefix: "detour/": write the prefix as an absolute key path`},
		{"[store]\nkind = \"etcd\"\nendpoints = [\"https://a:2379\"]\nencryption_key_file = \"/k\"\nfleet = \"Web_Prod\"\nnode = \"n\"\n", `store.fleet: "Web_Prod" is not a valid fleet name`},
		{"[store]\nkind = \"etcd\"\nendpoints = [\"https://a:2379\"]\nencryption_key_file = \"/k\"\nfleet = \"f\"\nnode = \"web_1\"\n", `store.node: "web_1" (node) is not a valid node name`},
		{"[store]\nkind = \"etcd\"\nendpont = [\"https://a:2379\"]\n", `did you mean "endpoints"`},
		{"[store]\nkind = \"etcd\"\nendpoints = [\"https://a:2379\"]\nencryption_key_file = \"/k\"\nfleet = \"f\"\nnode = \"n\"\nlock_ttl = \"2s\"\n", testFile + `:7: store.lock_ttl: 2s is too short: a lock ends when its holder misses etcd for this long`},
		{"[store]\nlock_ttl = \"10s\"\n", `store.lock_ttl: lock_ttl is for a fleet sharing its state in etcd`},
	} {
		_, err := Parse(testFile, []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v\nwant %q", tc.doc, err, tc.want)
		}
	}
	cfg, err = Parse(testFile, []byte(fleet+"endpoints = [\"http://10.0.0.1:2379\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0].Error(), "is plain HTTP") || cfg.Warnings[0].Line != 6 {
		t.Errorf("warnings = %v, want plain HTTP named on line 6", cfg.Warnings)
	}
	if cfg, err := Parse(testFile, []byte(fleet+"endpoints = [\"http://127.0.0.1:2379\"]\n")); err != nil || len(cfg.Warnings) != 0 {
		t.Errorf("loopback plain HTTP: %v, %v", cfg.Warnings, err)
	}
}
