package cli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/testenv"
)

// TestImport drives real certbot and lego (Debian's packages) against the
// in-process CA to make their state: certbot with the standalone and the
// webroot authenticators (the webroot certificate renewed once, so that
// its archive holds two versions) and with the manual one running hook
// scripts, lego with its own http-01 server for two certificates. Then `detour import` takes each over, and `detour
// renew --force` renews each with the imported account while the CA is
// told which certificate is replaced: a proxy in front of the CA records
// every newOrder request, its account (the JWS kid) and its "replaces".
func TestImport(t *testing.T) {
	certbot := testenv.RequireBinary(t, "certbot", "certbot")
	lego := testenv.RequireBinary(t, "lego", "lego")
	// Fresh names: the CA may hand out a valid authorization of a name
	// validated before, which would skip validating the path at all.
	tag := fmt.Sprintf("%06x", rand.IntN(1<<24))
	cbStandalone, cbWeb, cbWeb2 := "cbs-"+tag+".detour.test", "cbw-"+tag+".detour.test", "www.cbw-"+tag+".detour.test"
	cbManual := "cbm-" + tag + ".detour.test"
	lg1, lg2 := "lg1-"+tag+".detour.test", "lg2-"+tag+".detour.test"
	// lego 4.9 polls an authorization again only after 5 s (the CA sends
	// no Retry-After with a challenge): each of its runs takes 0.1 or 5 s.
	env := newEnv(t, cbStandalone, cbWeb, cbWeb2, cbManual, lg1, lg2)
	ca := newOrderRecorder(t, env.CA.DirectoryURL(), env.CA.HTTPClient().Transport)
	_, port, _ := net.SplitHostPort(env.HTTPAddr)
	webroot := t.TempDir()

	// certbot's state: a standalone certificate, then a webroot one
	// served by a web server on the port the CA validates, renewed once.
	cb := t.TempDir()
	runCertbot := func(args ...string) {
		t.Helper()
		args = append(args, "--non-interactive", "--server", ca.dir, "--config-dir", cb,
			"--work-dir", filepath.Join(t.TempDir(), "work"), "--logs-dir", filepath.Join(t.TempDir(), "logs"))
		runTool(t, certbot, []string{"REQUESTS_CA_BUNDLE=" + ca.roots}, args...)
	}
	runCertbot("certonly", "--standalone", "--agree-tos", "--register-unsafely-without-email",
		"--http-01-port", port, "--http-01-address", "127.0.0.1", "-d", cbStandalone)

	// lego's state: two certificates through its own http-01 server.
	lg := t.TempDir()
	for _, name := range []string{lg1, lg2} {
		runTool(t, lego, []string{"LEGO_CA_CERTIFICATES=" + ca.roots}, "--server", ca.dir, "--accept-tos", "--email", "lego@detour.test",
			"--path", lg, "--http", "--http.port", env.HTTPAddr, "-d", name, "run")
	}

	web := serveDir(t, env.HTTPAddr, webroot)
	runCertbot("certonly", "--webroot", "-w", webroot, "-d", cbWeb, "-d", cbWeb2, "--deploy-hook", "true")
	runCertbot("renew", "--cert-name", cbWeb, "--force-renewal", "--no-random-sleep-on-renew")
	if got := archiveCerts(t, cb, cbWeb); len(got) != 2 {
		t.Fatalf("certbot's archive of %s holds %v, want two versions", cbWeb, got)
	}
	// The manual authenticator: hook scripts publish into the same
	// document root (Detour's renewal must run them unchanged).
	hookLog := filepath.Join(t.TempDir(), "hooks.log")
	authHook, cleanupHook := certbotHooks(t, webroot, hookLog)
	runCertbot("certonly", "--manual", "--manual-auth-hook", authHook, "--manual-cleanup-hook", cleanupHook,
		"--preferred-challenges", "http", "-d", cbManual)
	wantHookRuns(t, hookLog, "auth "+cbManual+" certbot", "cleanup "+cbManual+" published ")
	cbSum, lgSum := treeSum(t, cb), treeSum(t, lg)
	cfg := emptyConfig(t)

	t.Run("dry run writes nothing", func(t *testing.T) {
		state := filepath.Join(t.TempDir(), "state")
		r := mustRun(t, "--config", cfg, "--state-dir", state, "import", "certbot", cb, "--dry-run", "--ca-roots", ca.roots)
		wantIn(t, "dry run", r.stdout, "dry run: nothing written", cbStandalone+": would import", cbWeb+": would import",
			"standalone challenge=http-01 listen=127.0.0.1:"+port, "webroot challenge=http-01 root="+webroot,
			cbManual+": would import", "exec auth="+authHook+" challenge=http-01 cleanup="+cleanupHook,
			"versions: 1, 2 (the last is live)", "accounts/127.0.0.1_")
		if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a dry run created the state directory (%v)", err)
		}
	})

	state := filepath.Join(t.TempDir(), "state")
	// certbot 2.1 and lego 4.9 name no ACME profile; Detour's renewals do.
	profile := env.CA.DefaultProfile()
	importArgs := []string{"--config", cfg, "--state-dir", state, "import", "certbot", cb, "--ca-roots", ca.roots, "--profile", profile}
	r := mustRun(t, importArgs...)
	wantIn(t, "import", r.stdout, cbStandalone+": imported", cbWeb+": imported", cbManual+": imported")
	if rec := loadRecord(t, state, cbWeb); rec.Profile != profile {
		t.Errorf("the record of %s asks for profile %q, want %q", cbWeb, rec.Profile, profile)
	}
	if got := archiveCerts(t, state, cbWeb); len(got) != 2 {
		t.Errorf("Detour's archive of %s holds %v after the import, want both versions", cbWeb, got)
	}
	if !sameFile(t, filepath.Join(state, "live", cbWeb, "cert.pem"), filepath.Join(cb, "live", cbWeb, "cert.pem")) {
		t.Errorf("Detour's live %s is not certbot's live version", cbWeb)
	}
	if treeSum(t, cb) != cbSum {
		t.Error("the import changed certbot's directory")
	}

	t.Run("second import changes nothing", func(t *testing.T) {
		before := treeSum(t, state)
		r := mustRun(t, importArgs...)
		wantIn(t, "second import", r.stdout, cbStandalone+": already imported", cbWeb+": already imported", "nothing to do")
		dry := mustRun(t, append(importArgs, "--dry-run")...)
		wantIn(t, "dry run after the import", dry.stdout, cbWeb+": already imported")
		if treeSum(t, state) != before {
			t.Error("a second import, or a dry run, changed the state directory")
		}
	})

	// Renewals: with the imported account, replacing the imported
	// certificate. The webroot one while the web server runs, the
	// standalone ones once its port is free.
	acctURL := certbotAccountURL(t, cb)
	ca.checkRenewal(t, state, cfg, cbWeb, acctURL, filepath.Join(cb, "live", cbWeb, "cert.pem"))
	ca.checkRenewal(t, state, cfg, cbManual, acctURL, filepath.Join(cb, "live", cbManual, "cert.pem"))
	// certbot's scripts ran for Detour, with certbot's variables (and
	// Detour's): its probe and the CA's challenge, each cleaned up.
	wantHookRuns(t, hookLog, "auth "+cbManual+" certbot", "cleanup "+cbManual+" published ",
		"auth "+cbManual+" http-01", "cleanup "+cbManual+" published ", "auth "+cbManual+" http-01", "cleanup "+cbManual+" published ")
	web.Close()
	ca.checkRenewal(t, state, cfg, cbStandalone, acctURL, filepath.Join(cb, "live", cbStandalone, "cert.pem"))

	r = mustRun(t, "--config", cfg, "--state-dir", state, "import", "lego", lg, "--server", ca.dir,
		"--http", "--http.port", env.HTTPAddr, "--ca-roots", ca.roots, "--profile", profile)
	wantIn(t, "lego import", r.stdout, lg1+": imported", lg2+": imported", "standalone challenge=http-01 listen="+env.HTTPAddr)
	legoURL := legoAccountURL(t, lg)
	for _, name := range []string{lg1, lg2} {
		ca.checkRenewal(t, state, cfg, name, legoURL, filepath.Join(lg, "certificates", name+".crt"))
	}
	if treeSum(t, cb) != cbSum || treeSum(t, lg) != lgSum {
		t.Error("importing or renewing changed certbot's or lego's directory")
	}

	t.Run("unknown authenticator", func(t *testing.T) {
		dir := copyTree(t, cb)
		conf := filepath.Join(dir, "renewal", cbStandalone+".conf")
		line := editLine(t, conf, "authenticator = standalone", "authenticator = madeup")
		state := filepath.Join(t.TempDir(), "state")
		r := run(t, "--config", cfg, "--state-dir", state, "import", "certbot", dir, "--ca-roots", ca.roots)
		if r.code != 1 {
			t.Errorf("exit %d, want 1 (not everything imported): %v", r.code, r)
		}
		wantIn(t, "import with an unknown authenticator", r.stdout, cbStandalone+": NOT MAPPED", cbWeb+": imported",
			fmt.Sprintf("why: authenticator = madeup (%s:%d): an authenticator the import does not know", conf, line),
			"do:  choose a path for it (detour paths lists them), add a [[certificate]] named \""+cbStandalone+"\"", "1 not mapped")
		if _, err := os.Stat(filepath.Join(state, "renewal", cbStandalone+".json")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the unmapped certificate was imported (%v)", err)
		}
	})

	t.Run("corrupt renewal configuration", func(t *testing.T) {
		dir := copyTree(t, cb)
		conf := filepath.Join(dir, "renewal", cbWeb+".conf")
		line := editLine(t, conf, "[renewalparams]", "[renewalparams")
		state := filepath.Join(t.TempDir(), "state")
		r := run(t, "--config", cfg, "--state-dir", state, "import", "certbot", dir, "--ca-roots", ca.roots)
		if r.code != 1 {
			t.Errorf("exit %d, want 1: %v", r.code, r)
		}
		wantIn(t, "import with a corrupt configuration", r.stdout, cbWeb+": UNREADABLE", fmt.Sprintf("%s:%d: ", conf, line),
			cbStandalone+": imported")
	})
}

// certbotHooks writes a manual auth hook that publishes
// $CERTBOT_VALIDATION under root as $CERTBOT_TOKEN and a cleanup hook that
// removes it; each appends a line to log: the action, $CERTBOT_DOMAIN and
// $DETOUR_CHALLENGE (or "certbot") or $CERTBOT_AUTH_OUTPUT.
func certbotHooks(t *testing.T, root, log string) (auth, cleanup string) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\nset -e\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	acme := filepath.Join(root, ".well-known", "acme-challenge")
	auth = write("auth", fmt.Sprintf(`mkdir -p %[1]q
printf '%%s' "$CERTBOT_VALIDATION" > %[1]q/"$CERTBOT_TOKEN"
echo "auth $CERTBOT_DOMAIN ${DETOUR_CHALLENGE:-certbot}" >> %[2]q
echo "published $CERTBOT_TOKEN"
`, acme, log))
	cleanup = write("cleanup", fmt.Sprintf(`rm %[1]q/"$CERTBOT_TOKEN"
echo "cleanup $CERTBOT_DOMAIN $CERTBOT_AUTH_OUTPUT" >> %[2]q
`, acme, log))
	return auth, cleanup
}

// wantHookRuns fails unless the lines of log begin, in order, with each
// of want, and there are no others.
func wantHookRuns(t *testing.T, log string, want ...string) {
	t.Helper()
	raw, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	ok := len(lines) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = strings.HasPrefix(lines[i], want[i])
	}
	if !ok {
		t.Errorf("the hooks ran\n%s\nwant lines starting with\n%s", raw, strings.Join(want, "\n"))
	}
}

// runTool runs an ACME client with env added to the environment.
func runTool(t *testing.T, bin string, env []string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	t.Logf("%s %s: %s", filepath.Base(bin), args[0], time.Since(start).Round(time.Millisecond))
}

// serveDir serves dir over HTTP on addr, as a web server serves a
// document root; Close stops it.
func serveDir(t *testing.T, addr, dir string) *http.Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir)), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return srv
}

// orderRecorder is a TLS reverse proxy in front of the CA's ACME API that
// records every newOrder request. The CA builds its URLs from the Host of
// each request, so clients given dir see only the proxy.
type orderRecorder struct {
	dir, roots string
	mu         sync.Mutex
	orders     []order
}

// order is what a newOrder request asked (RFC 8555 §7.4, RFC 9773 §5).
type order struct {
	account, replaces string
	identifiers       []string
}

func newOrderRecorder(t *testing.T, directory string, transport http.RoundTripper) *orderRecorder {
	t.Helper()
	target, err := url.Parse(directory)
	if err != nil {
		t.Fatal(err)
	}
	rec := &orderRecorder{}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: target.Scheme, Host: target.Host})
			r.Out.Host = r.In.Host
		},
		Transport: transport,
	}
	var newOrderPath atomic.Pointer[string] // set once the directory is read through the proxy
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := newOrderPath.Load(); r.Method == http.MethodPost && p != nil && r.URL.Path == *p {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			rec.record(t, body)
		}
		proxy.ServeHTTP(w, r)
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	rec.dir = srv.URL + target.Path
	rec.roots = filepath.Join(t.TempDir(), "proxy-roots.pem")
	if err := os.WriteFile(rec.roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Get(rec.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d struct {
		NewOrder string `json:"newOrder"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(d.NewOrder)
	if err != nil || u.Host != strings.TrimPrefix(srv.URL, "https://") {
		t.Fatalf("the CA's newOrder URL %q does not point at the proxy %s", d.NewOrder, srv.URL)
	}
	newOrderPath.Store(&u.Path)
	return rec
}

// record decodes a newOrder JWS (flattened JSON, RFC 7515 §7.2.2).
func (o *orderRecorder) record(t *testing.T, body []byte) {
	var jws struct{ Protected, Payload string }
	var hdr struct {
		Kid string `json:"kid"`
	}
	var payload struct {
		Identifiers []struct{ Value string } `json:"identifiers"`
		Replaces    string                   `json:"replaces"`
	}
	decode := func(part string, v any) {
		raw, err := base64.RawURLEncoding.DecodeString(part)
		if err == nil {
			err = json.Unmarshal(raw, v)
		}
		if err != nil {
			t.Errorf("a newOrder request does not decode: %v", err)
		}
	}
	if err := json.Unmarshal(body, &jws); err != nil {
		t.Errorf("a newOrder request is not a JWS: %v", err)
		return
	}
	decode(jws.Protected, &hdr)
	decode(jws.Payload, &payload)
	ord := order{account: hdr.Kid, replaces: payload.Replaces}
	for _, id := range payload.Identifiers {
		ord.identifiers = append(ord.identifiers, id.Value)
	}
	o.mu.Lock()
	o.orders = append(o.orders, ord)
	o.mu.Unlock()
}

// lastOrder returns the last newOrder for name.
func (o *orderRecorder) lastOrder(name string) (order, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.orders) - 1; i >= 0; i-- {
		for _, id := range o.orders[i].identifiers {
			if id == name {
				return o.orders[i], true
			}
		}
	}
	return order{}, false
}

// checkRenewal runs `detour renew --force name` and checks that the CA
// got an order from account replacing the certificate in certFile (the
// source's live one), and that Detour serves the new one.
func (o *orderRecorder) checkRenewal(t *testing.T, state, cfg, name, account, certFile string) {
	t.Helper()
	before := loadRecord(t, state, name)
	mustRun(t, "--config", cfg, "--state-dir", state, "renew", "--force", name)
	ord, ok := o.lastOrder(name)
	if !ok {
		t.Fatalf("the CA saw no order for %s", name)
	}
	want := ariID(t, certFile)
	if ord.account != account {
		t.Errorf("%s was renewed with account %s, want the imported %s", name, ord.account, account)
	}
	if ord.replaces != want || before.ARIID != want {
		t.Errorf("the renewal of %s sent replaces %q (record: %q), want the imported certificate's %q", name, ord.replaces, before.ARIID, want)
	}
	after := loadRecord(t, state, name)
	if after.Version != before.Version+1 || after.Account != account || after.Serial == before.Serial {
		t.Errorf("after the renewal of %s the record says version %d, account %s, serial %s (before: %d, %s)",
			name, after.Version, after.Account, after.Serial, before.Version, before.Serial)
	}
	checkLive(t, state, name)
}

// ariID returns the ARI identifier of the first certificate in file.
func ariID(t *testing.T, file string) string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(raw)
	if b == nil {
		t.Fatalf("%s holds no PEM block", file)
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	id, err := acme.ARIID(leaf)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// certbotAccountURL returns the URL of certbot's one account.
func certbotAccountURL(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "accounts", "*", "*", "*", "regr.json"))
	if len(m) != 1 {
		t.Fatalf("certbot keeps %d accounts, want 1", len(m))
	}
	var regr struct{ URI string }
	readJSON(t, m[0], &regr)
	return regr.URI
}

// legoAccountURL returns the URL of lego's one account.
func legoAccountURL(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "accounts", "*", "*", "account.json"))
	if len(m) != 1 {
		t.Fatalf("lego keeps %d accounts, want 1", len(m))
	}
	var acct struct{ Registration struct{ URI string } }
	readJSON(t, m[0], &acct)
	return acct.Registration.URI
}

func readJSON(t *testing.T, file string, v any) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// treeSum hashes every name, mode, link target and content under dir.
func treeSum(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", p, info.Mode())
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "-> %s\n", target)
		case d.Type().IsRegular():
			raw, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(raw)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// copyTree copies dir (symbolic links as links) into a new directory.
func copyTree(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", dir, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	return dst
}

// editLine replaces the line old of file by new and returns its number.
func editLine(t *testing.T, file, old, new string) int {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	for i, l := range lines {
		if l == old {
			lines[i] = new
			if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
				t.Fatal(err)
			}
			return i + 1
		}
	}
	t.Fatalf("%s has no line %q", file, old)
	return 0
}

// sameFile reports whether two files hold the same bytes.
func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

// TestImportUsage: mistakes on the command line are named before any
// directory is read.
func TestImportUsage(t *testing.T) {
	cfg, state := emptyConfig(t), filepath.Join(t.TempDir(), "state")
	r := run(t, "--config", cfg, "--state-dir", state, "import", "lego", t.TempDir(), "--http.port", ":8080")
	if r.code != 2 || !strings.Contains(r.stderr, "--http.port is a setting of a challenge flag that is not given: add --http") {
		t.Errorf("--http.port without --http: %v", r)
	}
	r = run(t, "--config", cfg, "--state-dir", state, "import", "certbot", t.TempDir())
	if r.code != 1 || !strings.Contains(r.stderr, "is not certbot's configuration directory: it has no renewal/") {
		t.Errorf("a directory that is not certbot's: %v", r)
	}
	if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed import created the state directory (%v)", err)
	}
}
