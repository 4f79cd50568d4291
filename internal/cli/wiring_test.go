package cli

import (
	"reflect"
	"testing"

	"github.com/detour-acme/detour/internal/config"
)

// A path's kind-specific settings survive the trip through a certificate's
// record, so that `detour renew` rebuilds it without the config entry;
// secrets do not go into the record.
func TestPathSettingsSurviveTheRecord(t *testing.T) {
	p := config.Path{Name: "pp", Kind: config.KindPersist, Challenge: config.ChallengeDNSPersist01,
		Settings: map[string]string{"policy": "wildcard", "persist_until": "2030-01-01T00:00:00Z"}}
	ref := refFor(p)
	if got := pathFromRef(ref); !reflect.DeepEqual(got, p) {
		t.Errorf("round trip = %+v, want %+v", got, p)
	}

	secret := config.Path{Name: "ns", Kind: config.KindRFC2136, Challenge: config.ChallengeDNS01,
		Settings: map[string]string{"server": "192.0.2.1:53", "tsig_key": "k", "tsig_secret": "c2VjcmV0", "tsig_algorithm": "hmac-sha256"}}
	kept := map[string]string{"challenge": "dns-01", "server": "192.0.2.1:53", "tsig_key": "k", "tsig_algorithm": "hmac-sha256"}
	ref = refFor(secret)
	if !reflect.DeepEqual(ref.Settings, kept) {
		t.Errorf("recorded settings = %v, want %v (no secret)", ref.Settings, kept)
	}
	// With the config still defining the path, the record defers to it.
	ref.Name, ref.Kind = "ns", config.KindRFC2136
	cfg := &config.Config{Paths: map[string]config.Path{"ns": secret}}
	if got := recordPath(cfg, ref); !reflect.DeepEqual(got, secret) {
		t.Errorf("recordPath = %+v, want the config's path", got)
	}
	if got := recordPath(nil, ref); got.Setting("tsig_secret") != "" || got.Setting("server") != "192.0.2.1:53" {
		t.Errorf("recordPath without config = %+v", got)
	}
}
