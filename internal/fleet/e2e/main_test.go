// Package e2e tests fleet mode end to end, as a fleet runs in production:
// three Detour nodes, each in a network namespace of its own with a real
// nginx, behind a real HAProxy balancing TCP round-robin on :80 and :443
// (package fleetnet); a real three-member etcd cluster (embed) and Pebble
// in the test process, on the test's own address on the fleet's bridge.
// Pebble resolves the certificate's name to the balancer, so its
// validation lands on whichever node the balancer picks. Each node runs
// the built detour binary (`detour run`, and commands by hand) with its
// own state directory and configuration.
package e2e

import (
	"testing"

	"github.com/detour-acme/detour/internal/testenv"
)

// detourBin is the binary the nodes run, built by TestMain.
var detourBin string

func TestMain(m *testing.M) {
	testenv.RunWithDetour(m, &detourBin)
}
