package renew

import (
	"context"

	"github.com/detour-acme/detour/internal/solve/persist"
)

// warnPersistRecords warns, after an account key rollover, when ca speaks
// draft-02 of dns-persist-01: its records hash the account key
// (draft-ietf-acme-dns-persist-02 §4.1), so every _validation-persist record
// must be republished with the new key (§7.2.1). Draft-01 records name only
// the account URL, which a rollover keeps.
func (m *Manager) warnPersistRecords(ctx context.Context, ca CA) {
	meta, err := persist.FetchMeta(ctx, persist.MetaOptions{Directory: ca.Client.DirectoryURL(), RootBundle: ca.RootBundle})
	if err != nil {
		m.log.DebugContext(ctx, "cannot tell whether the CA uses dns-persist-01 draft-02", "ca", ca.Client.DirectoryURL(), "error", err)
		return
	}
	if meta.Draft() != persist.Draft02 {
		return
	}
	m.log.WarnContext(ctx, "account key replaced at a CA using dns-persist-01 draft-02, whose records hash the account key: "+
		"republish every _validation-persist record of this account with the value detour persist-record NAME prints now "+
		"(draft-02 §7.2.1); until then the CA accepts the old records only as long as it keeps the old key (§4.2)",
		"ca", ca.Client.DirectoryURL(), "account_hash_prefix", meta.AccountHashPrefix)
}
