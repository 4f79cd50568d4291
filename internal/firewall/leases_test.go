package firewall

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/store"
)

// TestRecordedLeases: every readable lease is returned, those past their
// deadline or of a dead process included; OpenLeases leaves those out.
func TestRecordedLeases(t *testing.T) {
	st, err := store.NewFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, l := range []Lease{
		{ID: "live", Backend: NameNftables, Port: 80, Family: "ipv4", PID: 1, Until: now.Add(time.Minute)},
		{ID: "past", Backend: NameUfw, Port: 80, Family: "ipv4", PID: 1, Until: now.Add(-time.Minute)},
	} {
		data, _ := json.Marshal(l)
		if err := st.Store(t.Context(), leasePrefix+l.ID+".json", data); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Store(t.Context(), leasePrefix+"junk.json", []byte("{")); err != nil {
		t.Fatal(err)
	}
	all, err := RecordedLeases(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, l := range all {
		ids = append(ids, l.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"live", "past"}) {
		t.Errorf("recorded leases = %v, want live and past", ids)
	}
	open, err := OpenLeases(t.Context(), st)
	if err != nil || len(open) != 1 || open[0].ID != "live" {
		t.Errorf("open leases = %+v, %v", open, err)
	}
	for name, want := range map[string]bool{NameNftables: true, NameIptablesNft: true, NameFirewalld: true, NameUfw: false, NameExec: false, NameHetzner: false} {
		if ClosesItself(name) != want {
			t.Errorf("ClosesItself(%s) = %v", name, !want)
		}
	}
}
