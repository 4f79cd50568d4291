package cli_test

import (
	"strings"
	"testing"
)

// TestNoOrderBeforeTheCheck: a path that cannot pass the self-check costs
// no order: a probe of Detour's own is checked before the order is
// created. Here the webroot is written, but no web server serves it on
// the CA's port 80.
func TestNoOrderBeforeTheCheck(t *testing.T) {
	t.Parallel()
	env := newEnv(t, "probe.detour.test")
	state, cfg := t.TempDir(), emptyConfig(t)
	r := run(t, oneOff(env, cfg, state, "-d", "probe.detour.test", "--webroot", t.TempDir())...)
	if r.code != 1 {
		t.Fatalf("issue through a webroot nothing serves: want exit 1: %v", r)
	}
	wantIn(t, "issue", r.stderr, "self-check", "no order was created")
	if strings.Contains(r.stderr, "order created") {
		t.Errorf("an order was created before the check:\n%s", r.stderr)
	}
}
