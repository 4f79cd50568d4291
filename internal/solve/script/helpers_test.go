package script_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// writeHook writes a /bin/sh script with body into dir, mode 0755, and
// returns its path.
func writeHook(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o755); err != nil { // umask-proof
		t.Fatal(err)
	}
	return p
}

// publishHooks returns an auth hook that writes DETOUR_VALIDATION into
// root/.well-known/acme-challenge/DETOUR_TOKEN, as a hook feeding a web
// server's document root does, and a cleanup hook that removes it. Both
// record their environment's DETOUR_ and CERTBOT_ variables in
// logDir/<action>-<domain>-<token>.
func publishHooks(t *testing.T, root, logDir string) (auth, cleanup string) {
	t.Helper()
	dir := t.TempDir()
	dump := `env | grep -E '^(DETOUR|CERTBOT)_' | sort > "` + logDir + `/$DETOUR_ACTION-$DETOUR_DOMAIN-$DETOUR_TOKEN"` + "\n"
	auth = writeHook(t, dir, "auth", "set -e\n"+dump+
		`mkdir -p "`+root+`/.well-known/acme-challenge"`+"\n"+
		`printf '%s' "$CERTBOT_VALIDATION" > "`+root+`/.well-known/acme-challenge/$CERTBOT_TOKEN"`+"\n"+
		`echo "published $CERTBOT_TOKEN"`+"\n")
	cleanup = writeHook(t, dir, "cleanup", "set -e\n"+dump+
		`rm "`+root+`/.well-known/acme-challenge/$CERTBOT_TOKEN"`+"\n")
	return auth, cleanup
}

// readVars reads a file of KEY=value lines as a hook's dump writes them.
func readVars(t *testing.T, file string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the hook left no environment dump: %v", err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		out[k] = v
	}
	return out
}

// serveDir serves dir over HTTP on 127.0.0.1, as a web server serves its
// document root, and returns its base URL.
func serveDir(t *testing.T, addr, dir string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir)), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serving %s: %v", dir, err)
		}
	})
	return "http://" + ln.Addr().String()
}

// fetch GETs url and returns the status and body.
func fetch(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func mustParse(t *testing.T, name string) ident.Identifier {
	t.Helper()
	id, err := ident.Parse(name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// httpChallenge returns an http-01 challenge for name.
func httpChallenge(t *testing.T, name, token string) solve.Challenge {
	return solve.Challenge{Type: solve.HTTP01, Identifier: mustParse(t, name), Token: token, KeyAuthorization: token + ".thumbprint"}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// logBuffer is a slog handler's destination that tests read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLog() (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func wantIn(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not mention %q:\n%s", what, sub, s)
		}
	}
}
