package firewall

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/detour-acme/detour/internal/store"
)

// RecordedLeases returns every readable lease in st, including those past
// their deadline or whose process is gone, which OpenLeases leaves out:
// what the status page and the metrics show, so that a window left open
// is seen. It changes nothing.
func RecordedLeases(ctx context.Context, st store.Storage) ([]Lease, error) {
	keys, err := st.List(ctx, leasePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing firewall leases: %w", err)
	}
	var out []Lease
	for _, key := range keys {
		if !strings.HasSuffix(key, ".json") {
			continue
		}
		data, err := st.Load(ctx, key)
		if err != nil {
			continue
		}
		var l Lease
		if json.Unmarshal(data, &l) != nil || l.ID == "" {
			continue
		}
		out = append(out, l)
	}
	return out, nil
}

// ClosesItself reports whether the windows of backend close by themselves
// at their deadline, whatever happens to Detour: nftables (set element
// timeouts), iptables (an xt_time deadline) and firewalld (--timeout). A
// ufw, exec or cloud window stays until Detour removes it.
func ClosesItself(backend string) bool {
	switch backend {
	case NameNftables, NameIptables, NameIptablesLegacy, NameIptablesNft, NameFirewalld:
		return true
	}
	return false
}
