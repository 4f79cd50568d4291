package cli_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/detour-acme/detour/internal/cli"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/statuspage"
	"github.com/detour-acme/detour/internal/testenv"
	"github.com/detour-acme/detour/internal/testenv/browser"
)

// updateScreenshot makes TestStatusPageBrowser copy its screenshot of the
// overview to docs/status-page.png, the one the README shows:
// go test ./internal/cli -run TestStatusPageBrowser -update-screenshot
var updateScreenshot = flag.Bool("update-screenshot", false, "copy the status page's screenshot to docs/status-page.png")

// statusSecrets are the credentials the status page test configures; no
// response may carry any of them.
type statusSecrets struct {
	eabHMAC, tsig, acmeDNSPassword, password, hash string
}

func randomText(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// statusAgent is a `detour run` (in this process) serving the status page.
type statusAgent struct {
	url    string // the status page, ending in "/"
	auth   string // the Authorization header the page wants
	state  string
	secret statusSecrets
	names  struct{ ok, failing, broken string }
}

// startStatusAgent issues one certificate with flags and breaks its
// record, then starts the agent on a configuration of two certificates
// against Pebble: one renews through a standalone path, one fails (the CA
// finds nothing on the port it validates). The page asks for basic auth
// and shares its listener with the metrics.
func startStatusAgent(t *testing.T) *statusAgent {
	t.Helper()
	s := &statusAgent{}
	s.names.ok, s.names.failing, s.names.broken = "ok.status.detour.test", "failing.status.detour.test", "broken.status.detour.test"
	s.secret = statusSecrets{eabHMAC: randomText(t, 32), tsig: base64.StdEncoding.EncodeToString([]byte(randomText(t, 24))),
		acmeDNSPassword: randomText(t, 30), password: "status page passphrase " + randomText(t, 6)}
	h, err := bcrypt.GenerateFromPassword([]byte(s.secret.password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	s.secret.hash = string(h)
	s.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:"+s.secret.password))

	env := testenv.New(t, testenv.Options{KeepPorts: true, CA: sandbox.CAOptions{RequireEAB: true, EABKeys: map[string]string{"kid-status": s.secret.eabHMAC}}})
	for _, n := range []string{s.names.ok, s.names.failing, s.names.broken} {
		env.AddName(n)
	}
	envs.Store(t, env)
	t.Cleanup(func() { envs.Delete(t) })

	dir := t.TempDir()
	s.state = filepath.Join(dir, "state")
	creds := filepath.Join(dir, "acme-dns.json")
	credsJSON := fmt.Sprintf(`{%q: {"username": "u-%s", "password": %q, "fulldomain": "x.auth.example.net", "subdomain": "x", "allowfrom": []}}`,
		s.names.failing, randomText(t, 8), s.secret.acmeDNSPassword)
	if err := os.WriteFile(creds, []byte(credsJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	elsewhere := freeAddr(t)
	cfg := filepath.Join(dir, "detour.toml")
	doc := fmt.Sprintf(`state_dir = %q
email = "ops@detour.test"
agree_tos = true
default_ca = "sandbox"
status_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
status_user = "ops"
status_password_bcrypt = %q

[ca.sandbox]
directory = %q
root_bundle = %q
eab_kid = "kid-status"
eab_hmac_key = %q

[path.web]
kind = "standalone"
listen = %q

[path.elsewhere]
kind = "standalone"
listen = %q

[path.bind]
kind = "rfc2136"
server = "127.0.0.1:53"
tsig_key = "detour-key"
tsig_secret = %q

[path.delegated]
kind = "acme-dns"
server = "https://auth.example.net"
credentials_file = %q

[[certificate]]
name = %q
domains = [%q]
paths = ["web"]
deploy_hook = "true"

[[certificate.output]]
path = %q
format = "combined"

[[certificate]]
name = %q
domains = [%q]
paths = ["elsewhere"]
self_check = false
`, s.state, s.secret.hash, env.CA.DirectoryURL(), env.RootsFile, s.secret.eabHMAC, env.HTTPAddr, elsewhere, s.secret.tsig, creds,
		s.names.ok, s.names.ok, filepath.Join(dir, "out", "ok.pem"), s.names.failing, s.names.failing)
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}

	// A certificate issued with flags, whose record is then cut short: its
	// record is the only description of it, so it stays broken.
	mustRun(t, "--config", cfg, "issue", "-d", s.names.broken, "--http-addr", env.HTTPAddr)
	rec := filepath.Join(s.state, "renewal", s.names.broken+".json")
	data, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rec, data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	stderr := &lockedBuffer{}
	done := make(chan int, 1)
	args := append([]string{"--config", cfg, "run", "--concurrency", "1"}, selfCheckArgs(env)...)
	go func() { done <- cli.Run(ctx, args, io.Discard, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("detour run exited %d\n%s", code, stderr)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("detour run did not stop within 30s\n%s", stderr)
		}
	})
	urlRE := regexp.MustCompile(`serving the status page" url=(http://127\.0\.0\.1:\d+/)`)
	deadline := time.Now().Add(20 * time.Second)
	for s.url == "" {
		if m := urlRE.FindStringSubmatch(stderr.String()); m != nil {
			s.url = m[1]
			break
		}
		select {
		case code := <-done:
			t.Fatalf("detour run exited %d\n%s", code, stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("detour run did not serve the status page\n%s", stderr)
		}
	}
	// Wait until the agent has renewed the one and failed the other.
	s.waitPage(t, 60*time.Second, func(p statuspage.Page) bool {
		st := states(p)
		return st[s.names.ok] == statuspage.StateOK && st[s.names.failing] == statuspage.StateFailing && st[s.names.broken] == statuspage.StateBroken
	})
	return s
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func states(p statuspage.Page) map[string]string {
	out := map[string]string{}
	for _, c := range p.Certificates {
		out[c.Name] = c.State
	}
	return out
}

// get fetches path of the page with the given Authorization header ("":
// none) and returns the status code and body.
func (s *statusAgent) get(t *testing.T, path, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, strings.TrimSuffix(s.url, "/")+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// waitPage polls /status.json until cond holds.
func (s *statusAgent) waitPage(t *testing.T, timeout time.Duration, cond func(statuspage.Page) bool) statuspage.Page {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, body := s.get(t, "/status.json", s.auth)
		var p statuspage.Page
		if code == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &p); err != nil {
				t.Fatalf("/status.json: %v\n%s", err, body)
			}
			if cond(p) {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the page is not as expected: %d %s", timeout, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStatusPageBrowser loads the status page of an agent that renewed
// against Pebble in headless Chromium: what a person sees of each
// certificate (its state, the failing one's error with its fix, a
// timeline per certificate), a certificate's own page, and the same
// states with JavaScript disabled.
func TestStatusPageBrowser(t *testing.T) {
	t.Parallel()
	s := startStatusAgent(t)
	ctx := browser.Tab(t, browser.TabOptions{Headers: map[string]string{"Authorization": s.auth}})
	if err := chromedp.Do(ctx, chromedp.Navigate(s.url), chromedp.WaitVisible(chromedp.ID("certs"))); err != nil {
		t.Fatal(err)
	}
	s.checkOverview(t, ctx, true)
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "status-page.png")
	if err := os.WriteFile(file, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", file)
	if *updateScreenshot {
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "status-page.png"), shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The failing certificate's page: its attempt, with its steps and error.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`a[href="certificate/`+s.names.failing+`"]`)), chromedp.WaitVisible(chromedp.CSS("table.hist"))); err != nil {
		t.Fatal(err)
	}
	text := bodyText(t, ctx)
	wantIn(t, "the failing certificate's page", text, s.names.failing, "Failing", "Attempts", "failed at validation", "wait ", "order ", "validation ",
		"or use a DNS path (dns-01 needs no inbound port)", "Versions in the archive", "No version is stored.")
	// The good certificate's page: its version, and its deploy targets.
	if err := chromedp.Do(ctx, chromedp.Navigate(s.url+"certificate/"+s.names.ok), chromedp.WaitVisible(chromedp.CSS("table.vers"))); err != nil {
		t.Fatal(err)
	}
	text = bodyText(t, ctx)
	wantIn(t, "the good certificate's page", text, "renewed", "live", "output", "ok.pem (combined)", "hook", "true")
	if strings.Count(text, "ok\n")+strings.Count(text, "ok ") == 0 {
		t.Errorf("the good certificate's deploy targets show no ok result:\n%s", text)
	}

	// Without JavaScript the states are all there; the optional filter is not.
	nojs := browser.Tab(t, browser.TabOptions{NoJavaScript: true, Headers: map[string]string{"Authorization": s.auth}})
	if err := chromedp.Do(nojs, chromedp.Navigate(s.url), chromedp.WaitReady(chromedp.ID("certs"))); err != nil {
		t.Fatal(err)
	}
	s.checkOverview(t, nojs, false)
}

// checkOverview checks what the overview shows of each certificate; js
// says whether scripts run in the tab (the filter box shows only then).
func (s *statusAgent) checkOverview(t *testing.T, ctx context.Context, js bool) {
	t.Helper()
	table, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#certs")))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{s.names.ok: "OK", s.names.failing: "Failing", s.names.broken: "Broken"}
	for name, state := range want {
		row := lineWith(table, name)
		if !strings.Contains(row, state) {
			t.Errorf("the row of %s does not say %q: %q\n%s", name, state, row, table)
		}
	}
	wantIn(t, "the overview", table,
		"Error:", "refused", "or use a DNS path (dns-01 needs no inbound port)", // the CA's failure, explained
		"Fix:", "detour renew --force "+s.names.failing, // and what to do
		"cannot be read", "restore", // the broken record and its fix
		"days left")
	rows, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll("#certs tr.c")))
	if err != nil {
		t.Fatal(err)
	}
	timelines, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll("#certs tr.c i.tl")))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || len(timelines) != 3 {
		t.Errorf("%d certificate rows with %d timelines, want 3 and 3", len(rows), len(timelines))
	}
	// page.js shows the filter box; without it the box stays hidden.
	hidden, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(".tools[hidden] #filter"), chromedp.AtLeast(0)))
	if err != nil {
		t.Fatal(err)
	}
	if js != (len(hidden) == 0) {
		t.Errorf("JavaScript %v: the filter box is hidden: %v", js, len(hidden) == 1)
	}
}

func bodyText(t *testing.T, ctx context.Context) string {
	t.Helper()
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// lineWith returns the line of text holding s.
func lineWith(text, s string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// TestStatusPageAccess: the page asks for its credentials (no or wrong
// ones get 401), shares its listener with the metrics behind them, and no
// response carries a secret the configuration or the state holds.
func TestStatusPageAccess(t *testing.T) {
	t.Parallel()
	s := startStatusAgent(t)
	for _, auth := range []string{"", "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:wrong")),
		"Basic " + base64.StdEncoding.EncodeToString([]byte("root:"+s.secret.password))} {
		for _, p := range []string{"/", "/status.json", "/metrics", "/certificate/" + s.names.ok} {
			if code, _ := s.get(t, p, auth); code != http.StatusUnauthorized {
				t.Errorf("GET %s with Authorization %q: %d, want 401", p, auth, code)
			}
		}
	}
	code, metrics := s.get(t, "/metrics", s.auth)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	wantIn(t, "/metrics on the status page's listener", metrics, "detour_build_info{", "detour_certificate_not_before_timestamp_seconds{certificate=\""+s.names.ok)

	// Every response, against every secret.
	secrets := map[string]string{"EAB HMAC key": s.secret.eabHMAC, "TSIG secret": s.secret.tsig, "acme-dns password": s.secret.acmeDNSPassword,
		"status password": s.secret.password, "status password hash": s.secret.hash}
	keys, err := filepath.Glob(filepath.Join(s.state, "accounts", "*", "*", "*.key"))
	if err != nil || len(keys) == 0 {
		t.Fatalf("no account key in %s/accounts (%v)", s.state, err)
	}
	for _, k := range keys {
		data, err := os.ReadFile(k)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(data)
		if b == nil {
			t.Fatalf("%s holds no PEM", k)
		}
		body := base64.StdEncoding.EncodeToString(b.Bytes)
		secrets["account key "+k] = body
		secrets["account key line "+k] = strings.Split(string(data), "\n")[1]
	}
	pages := []string{"/", "/status.json", "/metrics", "/status", "/static/style.css", "/static/page.js"}
	for _, n := range []string{s.names.ok, s.names.failing, s.names.broken} {
		pages = append(pages, "/certificate/"+n, "/certificate/"+n+"/status.json")
	}
	for _, p := range pages {
		code, body := s.get(t, p, s.auth)
		if code != http.StatusOK {
			t.Errorf("GET %s: %d\n%s", p, code, body)
		}
		for what, secret := range secrets {
			if strings.Contains(body, secret) {
				t.Errorf("GET %s shows the %s", p, what)
			}
		}
	}
}

// TestStatusPageConfigCheck: a status page beyond loopback without
// credentials is refused by `detour config check`, at its line.
func TestStatusPageConfigCheck(t *testing.T) {
	t.Parallel()
	cfg := writeFile(t, "detour.toml", "email = \"ops@example.com\"\n\nstatus_listen = \"0.0.0.0:9403\"\n")
	r := run(t, "--config", cfg, "config", "check")
	if r.code != 1 {
		t.Fatalf("config check of an open status page: %v", r)
	}
	wantIn(t, "config check", r.stderr, cfg+":3: status_listen:", "without credentials", "status_user and status_password_bcrypt")
	// On loopback it passes.
	cfg = writeFile(t, "detour.toml", "status_listen = \"127.0.0.1:9403\"\n")
	mustRun(t, "--config", cfg, "config", "check")
}

// TestHashPassword: `detour config hash-password` prints a bcrypt hash of
// the password on standard input, which status_password_bcrypt takes. Not
// parallel: it replaces os.Stdin.
func TestHashPassword(t *testing.T) {
	withStdin := func(input string) result {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, _ = io.WriteString(w, input)
			w.Close()
		}()
		old := os.Stdin
		os.Stdin = r
		defer func() { os.Stdin = old; r.Close() }()
		return run(t, "config", "hash-password", "--cost", "4")
	}
	res := withStdin("a long passphrase\n")
	if res.code != 0 {
		t.Fatalf("hash-password: %v", res)
	}
	hash := strings.TrimSpace(res.stdout)
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("a long passphrase")); err != nil {
		t.Errorf("printed %q, which is no hash of the password: %v", hash, err)
	}
	cfg := writeFile(t, "detour.toml", fmt.Sprintf("status_listen = \"0.0.0.0:9403\"\nstatus_user = \"ops\"\nstatus_password_bcrypt = %q\n", hash))
	if r := run(t, "--config", cfg, "config", "check"); r.code != 0 || !strings.Contains(r.stdout, "warning:") {
		t.Errorf("config check with the printed hash (over plain HTTP beyond loopback: a warning): %v", r)
	}
	if r := withStdin("short\n"); r.code == 0 || !strings.Contains(r.stderr, "shorter than 8") {
		t.Errorf("a short password: %v", r)
	}
	if r := withStdin(""); r.code == 0 || !strings.Contains(r.stderr, "no password on standard input") {
		t.Errorf("no password: %v", r)
	}
}
