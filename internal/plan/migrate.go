package plan

import (
	"errors"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/store/etcdstore"
)

// MigrationStores returns what `detour store migrate --to etcd` copies
// between: this host's state directory, the fleet's etcd store and the
// etcd client that store is opened on. It fails unless the configuration
// has [store] kind = "etcd".
func (p *Planner) MigrationStores() (*store.FS, *etcdstore.Store, *clientv3.Client, error) {
	if p.fleet == nil {
		return nil, nil, nil, errors.New(`this configuration has no [store] kind = "etcd": add the fleet's [store] table (kind = "etcd", endpoints, encryption_key_file, fleet) and keep state_dir pointing at this host's state`)
	}
	return p.Store, p.fleet.store, p.fleet.client, nil
}
