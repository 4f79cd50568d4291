package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/snippet"
	"github.com/detour-acme/detour/internal/testenv"
)

// loadWorkers is the concurrency of each load loop.
const loadWorkers = 4

// TestIssueAndRenewUnderLoad issues and renews a certificate through each
// path next to each web server it works with, while the server keeps
// serving: no request may fail, the master process must stay the same,
// and after each deploy hook's graceful reload the server presents the
// new certificate.
func TestIssueAndRenewUnderLoad(t *testing.T) {
	tests := []struct{ kind, server string }{
		{webroot, snippet.Nginx},
		{webroot, snippet.Apache},
		{sidePort, snippet.Nginx},
		{sidePort, snippet.Apache},
		{sidePort, snippet.HAProxy},
		{stateless, snippet.Nginx},
		{stateless, snippet.Apache},
		{stateless, snippet.HAProxy},
		{alpnForward, snippet.Nginx},
		{alpnForward, snippet.HAProxy},
		{frontDoor, snippet.Nginx},
	}
	for _, tt := range tests {
		t.Run(tt.kind+"/"+tt.server, func(t *testing.T) {
			t.Parallel()
			s := newSite(t, tt.kind, tt.server)

			// The server's configuration takes the blocks Detour prints
			// for this configuration, as a user would paste them.
			s.writeConfig("")
			var httpSnip, alpnSnip string
			switch tt.kind {
			case sidePort:
				httpSnip = s.mustDetour("snippet", "http", "--server", tt.server).stdout
				s.checkSnippet(httpSnip, snippet.HTTPForward)
			case stateless:
				// The account's thumbprint is filled in: the account is
				// made now, and issuing uses it.
				httpSnip = s.mustDetour("snippet", "stateless", "--server", tt.server).stdout
			case alpnForward:
				alpnSnip = s.mustDetour("snippet", "tls-alpn", "--server", tt.server).stdout
				s.checkSnippet(alpnSnip, snippet.TLSALPNForward)
			}
			s.startServer(httpSnip, alpnSnip)
			if tt.kind == frontDoor {
				s.startRouter()
			}
			s.portsBound()
			s.writeConfig(s.deployHook())
			master := s.srv.MasterPID()
			if _, err := s.presented(); err != nil {
				t.Fatalf("no TLS handshake through %s before issuing: %v", s.env.TLSAddr, err)
			}

			httpClient, httpsClient := s.loadClients()
			loads := []struct {
				url  string
				load *testenv.Load
			}{
				{"http://" + s.env.HTTPAddr + "/", testenv.StartLoad(httpClient, "http://"+s.env.HTTPAddr+"/", 200, loadWorkers)},
				{"https://" + s.env.TLSAddr + "/", testenv.StartLoad(httpsClient, "https://"+s.env.TLSAddr+"/", 200, loadWorkers)},
			}
			// Checked however the test ends, while the server still runs.
			t.Cleanup(func() {
				for _, l := range loads {
					ok, failed, first := l.load.Stop()
					t.Logf("GET %s: %d ok, %d failed", l.url, ok, failed)
					if failed > 0 {
						t.Errorf("GET %s: %d of %d requests failed while Detour issued, renewed and reloaded %s; first: %s",
							l.url, failed, ok+failed, s.server, first)
					}
					if ok == 0 {
						t.Errorf("GET %s: no request succeeded; the load did not run", l.url)
					}
				}
				if !s.srv.Alive() {
					t.Errorf("%s's master process %d exited", s.server, master)
				}
				s.checkPIDFile(master)
			})

			s.checkSelfChecked(s.mustDetour("issue"))
			v1 := s.liveLeaf()
			s.waitPresented(v1, "issued")

			versions := s.renewThroughPath()
			v2 := s.liveLeaf()
			if v2.SerialNumber.Cmp(v1.SerialNumber) == 0 {
				t.Fatalf("renew --force left the live certificate as it was (serial %x)", v1.SerialNumber)
			}
			s.waitPresented(v2, "renewed")
			var want []string
			for v := 1; v <= versions; v++ {
				want = append(want, fmt.Sprintf("cert%d.pem", v))
			}
			if got := s.archived(); !slices.Equal(got, want) {
				t.Errorf("archive holds %v, want %v", got, want)
			}
			if tt.kind != alpnForward && tt.kind != frontDoor && tt.server != snippet.HAProxy {
				// The access log tells the self-check's requests from the
				// CA's (TestSelfCheckStopsMisconfiguredServer relies on it).
				agents := strings.Join(s.waitChallengeRequests(), "\n")
				if !strings.Contains(agents, selfCheckAgent) || !strings.Contains(agents, pebbleAgent) {
					t.Errorf("%s's access log does not show challenge requests from both the self-check (%q) and the CA (%q):\n%s",
						s.server, selfCheckAgent, pebbleAgent, agents)
				}
			}
		})
	}
}

// checkPIDFile fails unless the PID file the server writes (nginx and
// Apache) names master: a restart would have written another.
func (s *site) checkPIDFile(master int) {
	s.t.Helper()
	var file string
	switch s.server {
	case snippet.Nginx:
		file = "nginx.pid"
	case snippet.Apache:
		file = "apache2.pid"
	default:
		return // HAProxy -W -db writes none; its master re-executes itself in place on reload
	}
	b, err := os.ReadFile(filepath.Join(s.dir, file))
	if err != nil {
		s.t.Errorf("reading %s's PID file: %v", s.server, err)
		return
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(master) {
		s.t.Errorf("%s's PID file names %s, want the master %d that the test started", s.server, got, master)
	}
}

// checkSnippet fails unless printed, what `detour snippet` printed, is the
// block of package snippet for the configured side address.
func (s *site) checkSnippet(printed string, block func(server, addr string) (string, error)) {
	s.t.Helper()
	want, err := block(s.server, s.sideAddr)
	if err != nil {
		s.t.Fatal(err)
	}
	if printed != want {
		s.t.Errorf("detour snippet printed:\n%s\nwant the block for the configured address %s:\n%s", printed, s.sideAddr, want)
	}
}

// selfChecked reports whether r's log says the self-check passed through
// the path under test before the CA was asked.
func selfChecked(r result) bool {
	for l := range strings.Lines(r.stderr) {
		if strings.Contains(l, "self-check passed") && strings.Contains(l, "path=e2e") {
			return true
		}
	}
	return false
}

// checkSelfChecked fails unless r's log says the self-check passed.
func (s *site) checkSelfChecked(r result) {
	s.t.Helper()
	if !selfChecked(r) {
		s.t.Errorf("the self-check did not pass through path e2e before the CA was asked:\n%v", r)
	}
}

// renewThroughPath runs `detour renew --force` until a renewal validated
// through the path, and returns the number of versions then stored.
// Pebble hands out the earlier, still valid authorization about 1% of the
// time even with reuse turned off (its check is off by one); such a
// renewal validates nothing, so it is done again, at most three times.
func (s *site) renewThroughPath() int {
	s.t.Helper()
	versions := 1
	for range 3 {
		r := s.mustDetour("renew", "--force")
		versions++
		if selfChecked(r) {
			return versions
		}
		s.t.Logf("renewal %d validated nothing (the CA reused the earlier authorization); renewing again", versions)
	}
	s.t.Fatalf("three renewals in a row validated nothing: the CA keeps reusing the authorization")
	return 0
}
