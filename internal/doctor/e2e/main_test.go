package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/detour-acme/detour/internal/firewall/nstest"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/testenv"

	// The tests run the detour binary TestMain builds; importing the
	// command's package makes `go test`'s cache notice a change to any
	// code the binary is built from.
	_ "github.com/detour-acme/detour/internal/cli"
)

// detourBin is the detour binary the tests run, built by TestMain.
var detourBin string

func TestMain(m *testing.M) {
	caHelper.RunIfHelper()
	testenv.RunWithDetour(m, &detourBin)
}

// caHelper is the CA helper process.
var caHelper = nstest.Helper[caConfig, caInfo]{Name: "doctor-e2e-ca", Serve: serveCA}

// caConfig is what the CA helper serves.
type caConfig struct {
	Addr  string // the address Pebble's API binds
	Dir   string // where it writes its roots
	VADNS string // the resolver its VA asks (TCP)
}

// caInfo is what the CA helper prints once it serves.
type caInfo struct {
	Directory string `json:"directory"`
	Roots     string `json:"roots"`
}

// serveCA starts Pebble on the namespace's address, validating on ports
// 80 and 443 and resolving through the test's resolver.
func serveCA(ctx context.Context, c caConfig) (caInfo, func() error, error) {
	// The listeners on 80 and 443 only fix the ports the VA connects to;
	// they are closed at once (the names resolve to the web hosts).
	env, err := sandbox.Start(ctx, sandbox.EnvOptions{HTTPAddr: "127.0.0.1:80", TLSAddr: "127.0.0.1:443",
		DNSAddr: "127.0.0.1:0", VADNSAddr: c.VADNS,
		CA: sandbox.CAOptions{Addr: c.Addr + ":14000", ManagementAddr: c.Addr + ":15000"}})
	if err != nil {
		return caInfo{}, nil, fmt.Errorf("starting the CA: %w", err)
	}
	env.HTTPListener.Close()
	env.TLSListener.Close()
	info := caInfo{Directory: env.CA.DirectoryURL(), Roots: filepath.Join(c.Dir, "ca-roots.pem")}
	if err := env.CA.WriteTLSRoots(info.Roots); err != nil {
		env.Close()
		return caInfo{}, nil, err
	}
	return info, env.Close, nil
}

// startCA starts the CA helper in ns and stops it when the test ends.
func startCA(t *testing.T, ns *nstest.NS) caInfo {
	t.Helper()
	return caHelper.Start(t, ns, caConfig{Addr: caACME, Dir: t.TempDir(), VADNS: caVADNS + ":53"})
}
