// Package prometheus holds Detour's Prometheus alerting rules; its test
// checks them with promtool (Debian's prometheus package).
package prometheus

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/testenv"
)

// TestRules: promtool accepts the rules, and their unit tests (an
// expiring certificate whose renewal fails, one failing repeatedly, a
// window past its deadline, an agent down) pass.
func TestRules(t *testing.T) {
	promtool := testenv.RequireBinary(t, "promtool", "prometheus")
	for _, args := range [][]string{{"check", "rules", "detour-alerts.yml"}, {"test", "rules", "detour-alerts.test.yml"}} {
		out, err := exec.CommandContext(t.Context(), promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
