package e2e

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/snippet"
	"github.com/detour-acme/detour/internal/testenv"
)

// User-Agents of the self-check's and the sandbox CA's challenge requests.
const (
	selfCheckAgent = "Detour ACME self-check"
	pebbleAgent    = "LetsEncrypt-Pebble-VA"
)

// TestSelfCheckStopsMisconfiguredServer configures a path the real server
// does not answer through, and expects the self-check to stop the order
// before the CA validates: a message that says what to change, nothing
// issued, and no validation request from the CA in the server's access
// log.
func TestSelfCheckStopsMisconfiguredServer(t *testing.T) {
	tests := []struct {
		name, kind, server string
		// webrootElsewhere points the webroot path at a directory the
		// server does not serve.
		webrootElsewhere bool
		want             []string
	}{
		{
			name: "side-port without the forward", kind: sidePort, server: snippet.Nginx,
			want: []string{"nginx/", "answered 404", "the forward to Detour is missing", "`detour snippet http --server nginx`", "the CA was not asked"},
		},
		{
			name: "webroot not the document root of nginx", kind: webroot, server: snippet.Nginx, webrootElsewhere: true,
			want: []string{"nginx/", "answered 404", "set root to the document root", "the CA was not asked"},
		},
		{
			name: "webroot not the document root of apache", kind: webroot, server: snippet.Apache, webrootElsewhere: true,
			want: []string{"Apache/", "answered 404", "set root to the document root", "the CA was not asked"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSite(t, tt.kind, tt.server)
			if tt.webrootElsewhere {
				s.webroot = filepath.Join(testenv.WorldReadableDir(t), "elsewhere")
				if err := os.Mkdir(s.webroot, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			s.writeConfig("")
			s.startServer("", "") // no snippet: the user skipped that step
			s.portsBound()
			s.writeConfig(s.deployHook())

			r := s.detour("issue")
			if r.code != 1 {
				t.Fatalf("want exit 1 from the self-check, got %v", r)
			}
			t.Logf("detour issue failed as it should:\n%s", r.stderr)
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("the error does not mention %q:\n%v", w, r)
				}
			}
			if _, err := os.Stat(filepath.Join(s.state, "live", certName)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("live/%s exists after a failed self-check (stat: %v)", certName, err)
			}
			// Every challenge request the server saw was the self-check's:
			// the CA never validated. (Detour waits for the CA's verdict
			// before it returns, so a CA request would be logged by now.)
			agents := s.waitChallengeRequests()
			for _, a := range agents {
				if !strings.Contains(a, selfCheckAgent) {
					t.Errorf("%s served a challenge request from %q: the CA was asked although the self-check failed", s.server, a)
				}
			}
			if tt.webrootElsewhere {
				// The token Detour wrote where the server does not look is
				// gone again.
				left, _ := filepath.Glob(filepath.Join(s.webroot, ".well-known", "acme-challenge", "*"))
				if len(left) > 0 {
					t.Errorf("tokens left in the webroot after the failed order: %v", left)
				}
			}
		})
	}
}

// waitChallengeRequests waits until the server's access log shows a
// challenge request (servers write the line after the response, so it may
// lag behind the client) and returns challengeRequests; bounded at 5
// seconds.
func (s *site) waitChallengeRequests() []string {
	s.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		agents := s.challengeRequests()
		if len(agents) > 0 {
			return agents
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s logged no request for /.well-known/acme-challenge/ in 5s: the self-check did not reach it", s.server)
		}
		time.Sleep(10 * time.Millisecond) // polling another process's log: no signal to wait for
	}
}

// challengeRequests returns the User-Agent of each request for
// /.well-known/acme-challenge/ in the server's access log (nginx, Apache).
func (s *site) challengeRequests() []string {
	s.t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "access.log"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		s.t.Fatalf("reading %s's access log: %v", s.server, err)
	}
	var agents []string
	for l := range strings.Lines(string(b)) {
		path, agent, _ := strings.Cut(strings.TrimSpace(l), "|")
		if strings.HasPrefix(path, "/.well-known/acme-challenge/") {
			agents = append(agents, agent)
		}
	}
	return agents
}
