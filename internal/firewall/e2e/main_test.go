// Package e2e tests firewall windows end to end in a small network of
// namespaces the tests build:
//
//	"ca" namespace  10.213.0.1 --veth-- 10.213.0.2  "web" namespace
//	Pebble (ACME API, VA) and its DNS        the user's firewall (policy drop),
//	in a helper process                      the detour binary under test
//
// The CA runs in a helper process (this test binary again, started with
// `ip netns exec ca` and the role in its environment), not in the test
// process: Pebble's validation authority dials from goroutines on any OS
// thread, and only a whole process can be put in a namespace. Detour runs
// as the built binary in the web namespace, as it would on a server; the
// test process itself stays in the host's namespace and probes ports from
// the ca namespace on a locked OS thread (nstest.NS.Probe).
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/detour-acme/detour/internal/firewall/nstest"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/testenv"
)

// Environment of the CA helper process.
const (
	envRole  = "DETOUR_FWE2E_CA"    // the address the CA binds
	envDir   = "DETOUR_FWE2E_DIR"   // where it writes its roots
	envNames = "DETOUR_FWE2E_NAMES" // name=address,... for its DNS
)

// detourBin is the detour binary the tests run, built by TestMain.
var detourBin string

func TestMain(m *testing.M) {
	if os.Getenv(envRole) != "" {
		os.Exit(runCA())
	}
	dir, err := os.MkdirTemp("", "detour-fwe2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// World-readable: a test may run the binary as nobody.
	if detourBin, err = testenv.BuildDetour(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// caInfo is what the CA helper prints once it serves.
type caInfo struct {
	Directory string `json:"directory"`
	DNS       string `json:"dns"`
	Roots     string `json:"roots"`
}

// runCA is the CA helper: Pebble and the sandbox DNS on the namespace's
// address, validating on ports 80 and 443, until standard input closes.
func runCA() int {
	ip, dir := os.Getenv(envRole), os.Getenv(envDir)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The listeners on 80 and 443 only fix the ports the VA connects to;
	// they are closed at once (the names resolve to the web namespace).
	env, err := sandbox.Start(ctx, sandbox.EnvOptions{HTTPAddr: "127.0.0.1:80", TLSAddr: "127.0.0.1:443", DNSAddr: ip + ":0",
		CA: sandbox.CAOptions{Addr: ip + ":0", ManagementAddr: ip + ":0"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the CA:", err)
		return 1
	}
	defer env.Close()
	env.HTTPListener.Close()
	env.TLSListener.Close()
	for _, kv := range strings.Split(os.Getenv(envNames), ",") {
		name, addr, _ := strings.Cut(kv, "=")
		env.DNS.SetAddrs(name, netip.MustParseAddr(addr))
	}
	info := caInfo{Directory: env.CA.DirectoryURL(), DNS: env.DNSAddr, Roots: filepath.Join(dir, "ca-roots.pem")}
	if err := env.CA.WriteTLSRoots(info.Roots); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(info); err != nil {
		return 1
	}
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return 0
}

// startCA starts the CA helper in ns, resolving names to addr, and stops
// it when the test ends.
func startCA(t *testing.T, ns *nstest.NS, names []string, addr string) caInfo {
	t.Helper()
	dir := t.TempDir()
	var kv []string
	for _, n := range names {
		kv = append(kv, n+"="+addr)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"="+nstest.CAAddr4, envDir+"="+dir, envNames+"="+strings.Join(kv, ","))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("CA helper: %v\n%s", err, stderr.String())
		}
	})
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		t.Fatalf("CA helper did not start: %v\n%s", err, stderr.String())
	}
	var info caInfo
	if err := json.Unmarshal(line, &info); err != nil {
		t.Fatalf("CA helper said %q: %v", line, err)
	}
	return info
}
