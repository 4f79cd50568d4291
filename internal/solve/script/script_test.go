package script_test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/script"
)

// TestHTTP01PresentCleanUp: the auth hook publishes each key
// authorization into a document root a real web server serves, with every
// variable the package documents (Detour's and certbot's); the cleanup
// hook gets the same ones and the auth hook's output, and removes it.
func TestHTTP01PresentCleanUp(t *testing.T) {
	root, logs := t.TempDir(), t.TempDir()
	auth, cleanup := publishHooks(t, root, logs)
	base := serveDir(t, "127.0.0.1:0", root)
	s, err := script.New(script.Options{Auth: auth, Cleanup: cleanup,
		Environ: func() []string { return append(os.Environ(), "CERTBOT_AUTH_OUTPUT=stale", "DETOUR_RECORD=stale") }})
	if err != nil {
		t.Fatal(err)
	}
	if s.Type() != solve.HTTP01 {
		t.Fatalf("type %s, want http-01", s.Type())
	}
	ctx := testCtx(t)
	for _, n := range []string{"a.example.com", "b.example.com"} {
		if err := s.Check(ctx, mustParse(t, n)); err != nil {
			t.Fatalf("Check(%s): %v", n, err)
		}
	}
	chA, chB := httpChallenge(t, "a.example.com", "tokenA"), httpChallenge(t, "b.example.com", "tokenB")
	for _, ch := range []solve.Challenge{chA, chB} {
		if err := s.Present(ctx, ch); err != nil {
			t.Fatalf("Present(%s): %v", ch.Identifier, err)
		}
		if code, body := fetch(t, base+ch.HTTP01Path()); code != http.StatusOK || body != ch.KeyAuthorization {
			t.Errorf("%s answers %d %q, want 200 %q", ch.HTTP01Path(), code, body, ch.KeyAuthorization)
		}
	}
	want := map[string]string{
		"DETOUR_ACTION": "auth", "DETOUR_CHALLENGE": "http-01", "DETOUR_DOMAIN": "a.example.com", "DETOUR_TOKEN": "tokenA",
		"DETOUR_VALIDATION": "tokenA.thumbprint", "DETOUR_REMAINING_CHALLENGES": "1", "DETOUR_ALL_DOMAINS": "a.example.com,b.example.com",
		"CERTBOT_DOMAIN": "a.example.com", "CERTBOT_VALIDATION": "tokenA.thumbprint", "CERTBOT_TOKEN": "tokenA",
		"CERTBOT_REMAINING_CHALLENGES": "1", "CERTBOT_ALL_DOMAINS": "a.example.com,b.example.com",
	}
	wantVars(t, filepath.Join(logs, "auth-a.example.com-tokenA"), want)
	want["DETOUR_DOMAIN"], want["DETOUR_TOKEN"], want["DETOUR_VALIDATION"] = "b.example.com", "tokenB", "tokenB.thumbprint"
	want["CERTBOT_DOMAIN"], want["CERTBOT_TOKEN"], want["CERTBOT_VALIDATION"] = "b.example.com", "tokenB", "tokenB.thumbprint"
	want["DETOUR_REMAINING_CHALLENGES"], want["CERTBOT_REMAINING_CHALLENGES"] = "0", "0"
	wantVars(t, filepath.Join(logs, "auth-b.example.com-tokenB"), want)

	for _, ch := range []solve.Challenge{chA, chB} {
		if err := s.CleanUp(ctx, ch); err != nil {
			t.Fatalf("CleanUp(%s): %v", ch.Identifier, err)
		}
		if code, _ := fetch(t, base+ch.HTTP01Path()); code != http.StatusNotFound {
			t.Errorf("%s answers %d after CleanUp, want 404", ch.HTTP01Path(), code)
		}
	}
	// The cleanup hook gets what the auth hook was given, and its output.
	want["DETOUR_ACTION"], want["CERTBOT_AUTH_OUTPUT"] = "cleanup", "published tokenB"
	wantVars(t, filepath.Join(logs, "cleanup-b.example.com-tokenB"), want)
}

// wantVars fails unless the dump in file holds exactly want.
func wantVars(t *testing.T, file string, want map[string]string) {
	t.Helper()
	got := readVars(t, file)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %q, want %q", filepath.Base(file), k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %s = %q is set, want it unset", filepath.Base(file), k, v)
		}
	}
}

// TestAuthFails: an auth hook that exits non-zero fails Present with the
// command, its exit code and its standard error; the cleanup hook still
// runs for it, and its own failure is CleanUp's, not Present's.
func TestAuthFails(t *testing.T) {
	dir := t.TempDir()
	auth := writeHook(t, dir, "auth", "echo 'publishing to the CDN' ; echo 'CDN API: 403 Forbidden' >&2; exit 3\n")
	cleanup := writeHook(t, dir, "cleanup", "echo 'nothing to remove' >&2; exit 1\n")
	log, logs := newLog()
	s, err := script.New(script.Options{Logger: log, Auth: auth, Cleanup: cleanup})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	ch := httpChallenge(t, "example.com", "tok")
	err = s.Present(ctx, ch)
	var he *script.HookError
	if !errors.As(err, &he) || he.ExitCode != 3 || he.Hook != "auth" {
		t.Fatalf("Present = %v, want a HookError of the auth hook with exit code 3", err)
	}
	wantIn(t, "Present's error", err.Error(), auth, "exit code 3", "CDN API: 403 Forbidden")
	err = s.CleanUp(ctx, ch)
	if !errors.As(err, &he) || he.Hook != "cleanup" || he.ExitCode != 1 {
		t.Fatalf("CleanUp = %v, want a HookError of the cleanup hook with exit code 1", err)
	}
	wantIn(t, "CleanUp's error", err.Error(), cleanup, "nothing to remove")
	// Both runs, with their output, are in the log.
	wantIn(t, "the log", logs.String(), "auth hook failed", "publishing to the CDN", "403 Forbidden", "exit_code=3",
		"cleanup hook failed", "nothing to remove")
}

// TestHookTimeout: a hook that runs past timeout is stopped, with the
// processes it started, and fails saying so; one that exits but leaves a process holding its output
// succeeds after a short grace, with a warning.
func TestHookTimeout(t *testing.T) {
	// Both written before either runs: a file open for writing while
	// another goroutine forks cannot be executed ("text file busy").
	sleeper := writeHook(t, t.TempDir(), "auth", "sleep 5\n")
	starter := writeHook(t, t.TempDir(), "auth", "sleep 4 &\necho started\n")
	t.Run("stopped", func(t *testing.T) {
		t.Parallel()
		s, err := script.New(script.Options{Auth: sleeper, Timeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = s.Present(testCtx(t), httpChallenge(t, "example.com", "tok"))
		var he *script.HookError
		if !errors.As(err, &he) || he.Timeout != 200*time.Millisecond {
			t.Fatalf("Present = %v, want a timeout", err)
		}
		wantIn(t, "Present's error", err.Error(), "did not finish within 200ms", "raise timeout")
		// The sleep it started went with it (its process group), instead
		// of holding the output until the grace period ends.
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Errorf("Present took %v after a 200ms timeout: the processes the hook started were not stopped with it", d)
		}
	})
	t.Run("background process keeps the output", func(t *testing.T) {
		t.Parallel()
		log, logs := newLog()
		s, err := script.New(script.Options{Logger: log, Auth: starter})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := s.Present(testCtx(t), httpChallenge(t, "example.com", "tok")); err != nil {
			t.Fatalf("Present: %v", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Present took %v", d)
		}
		wantIn(t, "the log", logs.String(), "keeps its output open")
	})
}

// TestOutputBounded: a hook printing without end neither blocks nor fills
// the log: the log shows the start and how much more there was, and
// CERTBOT_AUTH_OUTPUT holds at most 64 KiB.
func TestOutputBounded(t *testing.T) {
	dir, logDir := t.TempDir(), t.TempDir()
	auth := writeHook(t, dir, "auth", "head -c 1000000 /dev/zero | tr '\\0' a\nhead -c 300000 /dev/zero | tr '\\0' e >&2\n")
	cleanup := writeHook(t, dir, "cleanup", `printf '%s' "${#CERTBOT_AUTH_OUTPUT}" > "`+logDir+`/len"`+"\n")
	log, logs := newLog()
	s, err := script.New(script.Options{Logger: log, Auth: auth, Cleanup: cleanup})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	ch := httpChallenge(t, "example.com", "tok")
	if err := s.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if err := s.CleanUp(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(logDir, "len")); string(got) != "65536" {
		t.Errorf("CERTBOT_AUTH_OUTPUT holds %s bytes, want 65536", got)
	}
	l := logs.String()
	wantIn(t, "the log", l, "(997952 bytes more)", "(297952 bytes more)")
	if len(l) > 20000 {
		t.Errorf("the log holds %d bytes for two runs", len(l))
	}
}

// TestCheck: the preflight refuses hooks that are missing, not
// executable, or that others could change, saying what to run.
func TestCheck(t *testing.T) {
	ctx := testCtx(t)
	good := writeHook(t, t.TempDir(), "auth", "exit 0\n")
	groupWritable := writeHook(t, t.TempDir(), "auth", "exit 0\n")
	if err := os.Chmod(groupWritable, 0o775); err != nil {
		t.Fatal(err)
	}
	notExec := writeHook(t, t.TempDir(), "auth", "exit 0\n")
	if err := os.Chmod(notExec, 0o644); err != nil {
		t.Fatal(err)
	}
	openDir := t.TempDir()
	if err := os.Chmod(openDir, 0o777); err != nil {
		t.Fatal(err)
	}
	inOpenDir := writeHook(t, openDir, "auth", "exit 0\n")
	for _, tc := range []struct {
		name, auth, cleanup, id string
		want                    []string // nil: passes
		notApplicable           bool
	}{
		{name: "good", auth: good, cleanup: good, id: "example.com"},
		{name: "missing", auth: "/nonexistent/detour/auth", id: "example.com", want: []string{"the auth hook /nonexistent/detour/auth does not exist"}},
		{name: "missing with arguments", auth: "/usr/bin/hook --publish", id: "example.com", want: []string{"runs without a shell"}},
		{name: "group writable", auth: groupWritable, id: "example.com", want: []string{"writable by group or others (mode 0775)", "chmod go-w " + groupWritable}},
		{name: "group writable cleanup", auth: good, cleanup: groupWritable, id: "example.com", want: []string{"the cleanup hook", "chmod go-w " + groupWritable}},
		{name: "not executable", auth: notExec, id: "example.com", want: []string{"not executable", "chmod +x " + notExec}},
		{name: "a directory", auth: t.TempDir(), id: "example.com", want: []string{"not a regular file"}},
		{name: "directory others may write", auth: inOpenDir, id: "example.com", want: []string{"the directory " + openDir, "they could replace the hook", "chmod go-w " + openDir}},
		{name: "wildcard", auth: good, id: "*.example.com", notApplicable: true, want: []string{"dns-01"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := script.New(script.Options{Auth: tc.auth, Cleanup: tc.cleanup})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Check(ctx, mustParse(t, tc.id))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check passed, want an error mentioning %q", tc.want)
			}
			if errors.Is(err, solve.ErrNotApplicable) != tc.notApplicable {
				t.Errorf("Check = %v; not applicable: %v, want %v", err, errors.Is(err, solve.ErrNotApplicable), tc.notApplicable)
			}
			wantIn(t, "Check's error", err.Error(), tc.want...)
		})
	}
}

// TestCheckOwnerWhenRoot: Detour running as root warns, once, about a
// hook another user owns (that user could run commands as root).
func TestCheckOwnerWhenRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root runs hooks owned by others as root; the check is off for other users")
	}
	auth := writeHook(t, t.TempDir(), "auth", "exit 0\n")
	if err := os.Chown(auth, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	log, logs := newLog()
	s, err := script.New(script.Options{Logger: log, Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Check(testCtx(t), mustParse(t, "example.com")); err != nil {
			t.Fatalf("Check: %v (an owner other than root is a warning, not an error)", err)
		}
	}
	l := logs.String()
	wantIn(t, "the log", l, "owned by uid 65534, not root", "chown root "+auth)
	if n := strings.Count(l, "owned by uid"); n != 1 {
		t.Errorf("the warning is logged %d times, want once", n)
	}
}

// TestRefusedChallenges: New refuses what the kind cannot do, Present
// what a hook must not be given.
func TestRefusedChallenges(t *testing.T) {
	good := writeHook(t, t.TempDir(), "auth", "exit 0\n")
	for _, o := range []script.Options{
		{Auth: good, Challenge: solve.TLSALPN01},
		{Auth: "relative/auth"},
		{Auth: good, Cleanup: "/bin/rm -f /x; true"},
		{},
	} {
		if _, err := script.New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	s, err := script.New(script.Options{Auth: good})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Present(testCtx(t), httpChallenge(t, "example.com", "../../etc/passwd")); err == nil || !strings.Contains(err.Error(), "not base64url") {
		t.Errorf("Present with a token that is a path = %v, want a refusal", err)
	}
}
