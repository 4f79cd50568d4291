package cli_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/testenv"
)

// bindPathsConfig writes a config file for env: its CA, the path tables
// paths (TOML fragments keyed by path name) and the certificates certs.
func bindPathsConfig(t *testing.T, env *testenv.Env, state string, paths map[string]string, certs ...string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "detour.toml")
	writeSandboxConfig(t, env, state, file, paths, certs...)
	return file
}

// freshName returns a name under detour.test no other run has used, so
// that the CA has no authorization for it yet.
func freshName(prefix string) string {
	return fmt.Sprintf("%s-%08x.detour.test", prefix, rand.Uint32())
}

// waitAllRenewed waits until every name's record is at version want or
// later with a successful last attempt, all within one deadline.
func waitAllRenewed(t *testing.T, state string, p *agentProc, timeout time.Duration, want int, names ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, n := range names {
		left := time.Until(deadline)
		if left <= 0 {
			left = time.Millisecond
		}
		waitRecord(t, state, n, left, p, func(r store.Record) bool {
			return r.Version >= want && r.Last != nil && r.Last.OK
		})
	}
}

// stopClean sends SIGTERM and requires the agent to exit 0 within limit,
// having logged its stop and left no unfinished work or socket behind.
func stopClean(t *testing.T, p *agentProc, state string, limit time.Duration) time.Duration {
	t.Helper()
	begin := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("detour run exited with %v after SIGTERM\n--- stderr:\n%s", err, p.stderr)
		}
	case <-time.After(limit):
		t.Fatalf("detour run did not stop within %v of SIGTERM (a renewal stuck on its bind addresses?)\n--- stderr:\n%s", limit, p.stderr)
	}
	took := time.Since(begin)
	if !strings.Contains(p.stderr.String(), "agent stopped") {
		t.Errorf("detour run did not log its stop\n--- stderr:\n%s", p.stderr)
	}
	if m, _ := filepath.Glob(filepath.Join(state, "pending", "*")); len(m) > 0 {
		t.Errorf("unfinished work left after SIGTERM: %v", m)
	}
	if _, err := os.Stat(filepath.Join(state, "agent.sock")); !os.IsNotExist(err) {
		t.Errorf("status socket left behind: %v", err)
	}
	return took
}

// A certificate whose two paths listen on the same address (both
// standalone http-01 on the CA's validation address) is issued and renewed
// by `detour run`, and SIGTERM stops the agent. The agent before the
// redesign took one lock per listen address of the certificate's paths, in
// order and with repeats, so the second lock of the same address waited on
// the first forever: nothing was issued and SIGTERM could not stop it.
func TestRunPathsOnOneAddress(t *testing.T) {
	t.Parallel()
	name := freshName("bind-twice")
	bin := buildDetour(t)
	env := briefEnv(t, 4*time.Second, name)
	state := t.TempDir()
	standalone := fmt.Sprintf("kind = \"standalone\"\nlisten = %q", env.HTTPAddr)
	cfg := bindPathsConfig(t, env, state, map[string]string{"a": standalone, "b": standalone},
		fmt.Sprintf("domains = [%q]\npaths = [\"a\", \"b\"]", name))

	begin := time.Now()
	p := startAgent(t, bin, "--config", cfg, "run")
	// Issued, then renewed once: the address is free again after a renewal.
	waitAllRenewed(t, state, p, 60*time.Second, 2, name)
	issued := time.Since(begin)
	took := stopClean(t, p, state, 10*time.Second)
	checkCovers(t, checkLive(t, state, name), name)
	t.Logf("issued and renewed in %v; stopped %v after SIGTERM", issued.Round(time.Millisecond), took.Round(time.Millisecond))
}

// Certificates whose paths bind the same two addresses in opposite orders
// (web: standalone http-01 on the CA's http-01 address; tls: standalone
// tls-alpn-01 on its tls-alpn-01 address) are all issued and renewed by
// `detour run`, and SIGTERM stops the agent.
//
// The agent before the redesign took one lock per address in path order:
// a renewal of a ["web", "tls"] certificate holding web's address and one
// of a ["tls", "web"] certificate holding tls's waited on each other
// forever. With only two such certificates that needs both to take their
// first lock at the same instant, which is rare; with several of each
// order renewing at once (hence --concurrency) the ones queued behind a
// renewal holding both addresses are released together, one taking each
// address first, and the agent stalls within the first round.
func TestRunPathsOppositeOrders(t *testing.T) {
	t.Parallel()
	const perOrder = 3
	var names, certs []string
	for i := range perOrder {
		webFirst, tlsFirst := freshName(fmt.Sprint("bind-web-tls-", i)), freshName(fmt.Sprint("bind-tls-web-", i))
		names = append(names, webFirst, tlsFirst)
		certs = append(certs,
			fmt.Sprintf("domains = [%q]\npaths = [\"web\", \"tls\"]", webFirst),
			fmt.Sprintf("domains = [%q]\npaths = [\"tls\", \"web\"]", tlsFirst))
	}
	bin := buildDetour(t)
	env := briefEnv(t, 4*time.Second, names...)
	state := t.TempDir()
	cfg := bindPathsConfig(t, env, state, map[string]string{
		"web": fmt.Sprintf("kind = \"standalone\"\nlisten = %q", env.HTTPAddr),
		"tls": fmt.Sprintf("kind = \"standalone\"\nchallenge = \"tls-alpn-01\"\nlisten = %q", env.TLSAddr),
	}, certs...)

	begin := time.Now()
	p := startAgent(t, bin, "--config", cfg, "run", "--concurrency", fmt.Sprint(len(names)))
	// Issued, then renewed once each: every renewal frees both addresses.
	waitAllRenewed(t, state, p, 60*time.Second, 2, names...)
	issued := time.Since(begin)
	took := stopClean(t, p, state, 10*time.Second)
	for _, n := range names {
		checkCovers(t, checkLive(t, state, n), n)
	}
	t.Logf("%d certificates issued and renewed in %v; stopped %v after SIGTERM", len(names), issued.Round(time.Millisecond), took.Round(time.Millisecond))
}
