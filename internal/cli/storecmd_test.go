package cli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/plan"
	"github.com/detour-acme/detour/internal/store/etcdstore"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// TestStoreMigrate: a certificate issued and renewed on a single host,
// then the host's configuration gains [store] kind = "etcd". `store
// migrate --to etcd` copies the state (a dry run first writes nothing);
// run again, it has nothing to do. The fleet's commands then see the
// certificate as the host had it: version 2, not due, nothing re-issued.
func TestStoreMigrate(t *testing.T) {
	t.Parallel()
	const domain = "migrate.detour.test"
	env := newEnv(t, domain)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	single := filepath.Join(dir, "single.toml")
	writeSandboxConfig(t, env, state, single, map[string]string{"web": fmt.Sprintf("kind = \"standalone\"\nlisten = %q", env.HTTPAddr)},
		fmt.Sprintf("name = \"mig\"\ndomains = [%q]\npaths = [\"web\"]\nprofile = \"shortlived\"", domain))
	mustRun(t, "--config", single, "issue", "mig")
	r := mustRun(t, "--config", single, "renew", "--force", "mig")
	wantIn(t, "renew --force", r.stdout, "mig: version 2")
	serial := checkLive(t, state, "mig").SerialNumber.Text(16)

	cluster := etcdtest.New(t, etcdtest.Options{Members: 1})
	key := filepath.Join(dir, "fleet.key")
	if err := etcdstore.NewKeyFile(key); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(single)
	if err != nil {
		t.Fatal(err)
	}
	fleet := filepath.Join(dir, "fleet.toml")
	doc = fmt.Appendf(doc, "\n[store]\nkind = \"etcd\"\nendpoints = [%q]\nencryption_key_file = %q\nfleet = \"web\"\nnode = \"node1\"\n",
		cluster.Endpoints()[0], key)
	if err := os.WriteFile(fleet, doc, 0o600); err != nil {
		t.Fatal(err)
	}

	r = mustRun(t, "--config", fleet, "store", "migrate", "--to", "etcd", "--dry-run")
	wantIn(t, "migrate --dry-run", r.stdout, "dry run: nothing written", "would copy  certificate  mig", "versions 1, 2, live 2")
	if st := fleetStatus(t, fleet); len(st.Certificates) != 0 {
		t.Fatalf("the dry run wrote to etcd: %+v", st.Certificates)
	}

	r = mustRun(t, "--config", fleet, "store", "migrate", "--to", "etcd")
	wantIn(t, "migrate", r.stdout, "copied  certificate  mig", "copied  record       mig", "copied  account", "0 conflict(s), 0 unreadable")
	r = mustRun(t, "--config", fleet, "store", "migrate", "--to", "etcd")
	wantIn(t, "migrate again", r.stdout, "0 copied", "nothing to do: everything is already in etcd")
	if strings.Contains(r.stdout, "copied  ") {
		t.Errorf("the second migration copied something:\n%s", r.stdout)
	}

	r = mustRun(t, "--config", fleet, "renew")
	wantIn(t, "renew on the fleet", r.stdout, "1 certificate(s) not due yet")
	if strings.Contains(r.stdout, "version") {
		t.Errorf("the fleet re-issued the migrated certificate:\n%s", r.stdout)
	}
	st := fleetStatus(t, fleet)
	if len(st.Certificates) != 1 || st.Certificates[0].Name != "mig" || st.Certificates[0].Version != 2 || st.Certificates[0].Serial != serial {
		t.Errorf("fleet status: %+v, want mig at version 2, serial %s", st.Certificates, serial)
	}
	rows, r := statusRows(t, "--config", fleet)
	if row := rows["mig"]; r.code != 0 || row.State != plan.StateOK || row.Version != 2 {
		t.Errorf("status on the fleet: %+v (%v)", row, r)
	}
	if got := archiveCerts(t, state, "mig"); !slices.Equal(got, []string{"cert1.pem", "cert2.pem"}) {
		t.Errorf("archive holds %v after the migration", got)
	}
}

// TestStoreMigrateRefused: --to must be etcd, and the configuration must
// name the fleet's etcd.
func TestStoreMigrateRefused(t *testing.T) {
	t.Parallel()
	cfg := emptyConfig(t)
	r := run(t, "--config", cfg, "--state-dir", t.TempDir(), "store", "migrate", "--to", "consul")
	if r.code != 2 || !strings.Contains(r.stderr, "etcd only") {
		t.Errorf("--to consul: %v", r)
	}
	r = run(t, "--config", cfg, "--state-dir", t.TempDir(), "store", "migrate")
	if r.code != 2 || !strings.Contains(r.stderr, "--to etcd") {
		t.Errorf("without --to: %v", r)
	}
	r = run(t, "--config", cfg, "--state-dir", t.TempDir(), "store", "migrate", "--to", "etcd")
	if r.code != 1 || !strings.Contains(r.stderr, `kind = "etcd"`) {
		t.Errorf("without [store]: %v", r)
	}
}

// fleetStatus runs `detour fleet status --json` on cfg.
func fleetStatus(t *testing.T, cfg string) plan.FleetStatus {
	t.Helper()
	r := mustRun(t, "--config", cfg, "fleet", "status", "--json")
	var st plan.FleetStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("fleet status --json: %v\n%s", err, r.stdout)
	}
	return st
}
