// Package e2e tests firewall windows end to end in a small network of
// namespaces the tests build:
//
//	"ca" namespace  10.213.0.1 --veth-- 10.213.0.2  "web" namespace
//	Pebble (ACME API, VA) and its DNS        the user's firewall (policy drop),
//	in a helper process                      the detour binary under test
//
// The CA runs in a helper process (this test binary again, started with
// `ip netns exec ca` and the role in its environment: nstest.Helper), not
// in the test process: Pebble's validation authority dials from goroutines
// on any OS thread, and only a whole process can be put in a namespace.
// Detour runs as the built binary in the web namespace, as it would on a
// server; the test process itself stays in the host's namespace and probes
// ports from the ca namespace on a locked OS thread (nstest.NS.Probe).
package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/detour-acme/detour/internal/firewall/nstest"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/testenv"
)

// detourBin is the detour binary the tests run, built by TestMain.
var detourBin string

func TestMain(m *testing.M) {
	caHelper.RunIfHelper()
	testenv.RunWithDetour(m, &detourBin)
}

// caHelper is the CA helper process.
var caHelper = nstest.Helper[caConfig, caInfo]{Name: "firewall-e2e-ca", Serve: serveCA}

// caConfig is what the CA helper serves.
type caConfig struct {
	Addr  string                // the address it binds
	Dir   string                // where it writes its roots
	Names map[string]netip.Addr // what its DNS answers
}

// caInfo is what the CA helper prints once it serves.
type caInfo struct {
	Directory string `json:"directory"`
	DNS       string `json:"dns"`
	Roots     string `json:"roots"`
}

// serveCA starts Pebble and the sandbox DNS on the namespace's address,
// validating on ports 80 and 443.
func serveCA(ctx context.Context, c caConfig) (caInfo, func() error, error) {
	// The listeners on 80 and 443 only fix the ports the VA connects to;
	// they are closed at once (the names resolve to the web namespace).
	env, err := sandbox.Start(ctx, sandbox.EnvOptions{HTTPAddr: "127.0.0.1:80", TLSAddr: "127.0.0.1:443", DNSAddr: c.Addr + ":0",
		CA: sandbox.CAOptions{Addr: c.Addr + ":0", ManagementAddr: c.Addr + ":0"}})
	if err != nil {
		return caInfo{}, nil, fmt.Errorf("starting the CA: %w", err)
	}
	env.HTTPListener.Close()
	env.TLSListener.Close()
	for name, addr := range c.Names {
		env.DNS.SetAddrs(name, addr)
	}
	info := caInfo{Directory: env.CA.DirectoryURL(), DNS: env.DNSAddr, Roots: filepath.Join(c.Dir, "ca-roots.pem")}
	if err := env.CA.WriteTLSRoots(info.Roots); err != nil {
		env.Close()
		return caInfo{}, nil, err
	}
	return info, env.Close, nil
}

// startCA starts the CA helper in ns, resolving names to addr, and stops
// it when the test ends.
func startCA(t *testing.T, ns *nstest.NS, names []string, addr string) caInfo {
	t.Helper()
	c := caConfig{Addr: nstest.CAAddr4, Dir: t.TempDir(), Names: map[string]netip.Addr{}}
	for _, n := range names {
		c.Names[n] = netip.MustParseAddr(addr)
	}
	return caHelper.Start(t, ns, c)
}
