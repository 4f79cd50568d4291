package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/detour-acme/detour/internal/firewall/nstest"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/testenv"

	// The tests run the detour binary TestMain builds; importing the
	// command's package makes `go test`'s cache notice a change to any
	// code the binary is built from.
	_ "github.com/detour-acme/detour/internal/cli"
)

// Environment of the CA helper process.
const (
	envRole = "DETOUR_DOCTORE2E_CA"  // the address Pebble's API binds
	envDir  = "DETOUR_DOCTORE2E_DIR" // where it writes its roots
	envDNS  = "DETOUR_DOCTORE2E_DNS" // the resolver its VA asks (TCP)
)

// detourBin is the detour binary the tests run, built by TestMain.
var detourBin string

func TestMain(m *testing.M) {
	if os.Getenv(envRole) != "" {
		os.Exit(runCA())
	}
	dir, err := os.MkdirTemp("", "detour-doctore2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
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
	Roots     string `json:"roots"`
}

// runCA is the CA helper: Pebble on the namespace's address, validating on
// ports 80 and 443 and resolving through the test's resolver, until
// standard input closes.
func runCA() int {
	ip, dir := os.Getenv(envRole), os.Getenv(envDir)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The listeners on 80 and 443 only fix the ports the VA connects to;
	// they are closed at once (the names resolve to the web hosts).
	env, err := sandbox.Start(ctx, sandbox.EnvOptions{HTTPAddr: "127.0.0.1:80", TLSAddr: "127.0.0.1:443",
		DNSAddr: "127.0.0.1:0", VADNSAddr: os.Getenv(envDNS),
		CA: sandbox.CAOptions{Addr: ip + ":14000", ManagementAddr: ip + ":15000"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the CA:", err)
		return 1
	}
	defer env.Close()
	env.HTTPListener.Close()
	env.TLSListener.Close()
	info := caInfo{Directory: env.CA.DirectoryURL(), Roots: filepath.Join(dir, "ca-roots.pem")}
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

// startCA starts the CA helper in ns and stops it when the test ends.
func startCA(t *testing.T, ns *nstest.NS) caInfo {
	t.Helper()
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"="+caACME, envDir+"="+dir, envDNS+"="+caVADNS+":53")
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
