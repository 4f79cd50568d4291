package cli_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/detour-acme/detour/internal/cli"
	"github.com/detour-acme/detour/internal/testenv"
)

// openPTY opens a pseudo-terminal pair: what detour writes to tty, the
// test reads from ptm.
func openPTY(t *testing.T) (ptm, tty *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { ptm.Close() })
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlocking the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("naming the pseudo-terminal: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the pseudo-terminal's terminal end: %v", err)
	}
	return ptm, tty
}

// runOnTerminal is run with stderr a terminal.
func runOnTerminal(t *testing.T, args ...string) result {
	t.Helper()
	ptm, tty := openPTY(t)
	var screen bytes.Buffer
	read := make(chan error, 1)
	go func() {
		_, err := io.Copy(&screen, ptm)
		read <- err
	}()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if env, ok := envs.Load(t); ok {
		args = append(args, selfCheckArgs(env.(*testenv.Env))...)
	}
	var stdout bytes.Buffer
	code := cli.Run(ctx, args, &stdout, tty)
	tty.Close()
	// With the terminal end closed, reading the other end ends with EIO
	// once everything written has been read.
	if err := <-read; err != nil && !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading the terminal: %v", err)
	}
	return result{code: code, stdout: stdout.String(), stderr: strings.ReplaceAll(screen.String(), "\r\n", "\n")}
}

// progressLine is one line of live progress: the time, the step, the rest.
var progressLine = regexp.MustCompile(`^ *\d+\.\d\ds  (\S+) +(.*)$`)

// steps splits stderr into the progress lines' steps and texts, and the
// other lines.
func steps(stderr string) (kinds, texts, other []string) {
	for l := range strings.SplitSeq(strings.TrimRight(stderr, "\n"), "\n") {
		if m := progressLine.FindStringSubmatch(l); m != nil {
			kinds, texts = append(kinds, m[1]), append(texts, m[2])
		} else if l != "" {
			other = append(other, l)
		}
	}
	return kinds, texts, other
}

// TestIssueLiveProgress runs detour issue with stderr on a terminal: one
// line per step, in order, with the path chosen for the authorization and
// why; then with --log-format json on the terminal and with stderr not a
// terminal: the logs as always, no progress lines.
func TestIssueLiveProgress(t *testing.T) {
	t.Parallel()
	const name = "live.detour.test"
	env := newEnv(t, name)
	state, cfg := t.TempDir(), emptyConfig(t)
	marker := filepath.Join(t.TempDir(), "deployed")
	hook := "echo $DETOUR_VERSION > " + marker
	// The webroot is written but served by nothing: its probe fails, and
	// standalone-http is chosen.
	args := oneOff(env, cfg, state, "-d", name, "--path", "webroot,standalone-http", "--webroot", t.TempDir(), "--deploy-hook", hook)

	r := runOnTerminal(t, args...)
	if r.code != 0 {
		t.Fatalf("detour issue on a terminal: %v", r)
	}
	wantIn(t, "stdout", r.stdout, name+": version 1")
	kinds, texts, other := steps(r.stderr)
	want := []string{"account", "probe", "probe", "order", "authz", "self-check", "validation", "finalize", "stored", "deployed"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("progress steps %v, want %v:\n%s", kinds, want, r.stderr)
	}
	text := func(kind string, n int) string {
		for i, k := range kinds {
			if k == kind {
				if n == 0 {
					return texts[i]
				}
				n--
			}
		}
		return ""
	}
	checks := []struct {
		kind string
		n    int
		re   string
	}{
		{"account", 0, `^https://127\.0\.0\.1:\d+/\S+ \(registered now\)$`},
		{"probe", 0, `^` + name + `: path webroot failed a probe of Detour's own, fetched the way the CA will: .*nothing listens on port 80`},
		{"probe", 1, `^` + name + `: path standalone-http answered a probe`},
		{"order", 0, `^` + name + ` \(profile shortlived\)$`},
		{"authz", 0, `^` + name + `: path standalone-http \(http-01\), the first path whose check passed; passed over: webroot: its probe failed \(above\)$`},
		{"self-check", 0, `^` + name + `: path standalone-http answers as the CA will fetch it$`},
		{"validation", 0, `^` + name + `: valid after [1-9]\d* polls?$`},
		{"finalize", 0, `^certificate issued, serial [0-9a-f]+, valid until \d{4}-`},
		{"stored", 0, `^version 1 \(` + regexp.QuoteMeta(filepath.Join(state, "live", name)) + `\)$`},
		{"deployed", 0, "^hook `" + regexp.QuoteMeta(hook) + "` ok$"},
	}
	for _, c := range checks {
		if got := text(c.kind, c.n); !regexp.MustCompile(c.re).MatchString(got) {
			t.Errorf("%s line %q does not match %s", c.kind, got, c.re)
		}
	}
	if got, _ := os.ReadFile(marker); strings.TrimSpace(string(got)) != "1" {
		t.Errorf("deploy hook wrote %q, want 1", got)
	}
	// The steps replace the informational logs; warnings stay.
	for _, l := range other {
		if !strings.Contains(l, "level=WARN") {
			t.Errorf("on a terminal, a line that is neither a step nor a warning: %q", l)
		}
	}

	// --log-format json on a terminal, and a stderr that is no terminal:
	// the logs, unchanged.
	for _, tc := range []struct {
		name string
		run  func(*testing.T, ...string) result
		args []string
		log  string
	}{
		{"json on a terminal", runOnTerminal, append([]string{"--log-format", "json"}, args...), `"msg":"order created"`},
		{"not a terminal", run, args, `level=INFO msg="order created"`},
	} {
		r := tc.run(t, tc.args...)
		if r.code != 0 {
			t.Fatalf("%s: %v", tc.name, r)
		}
		kinds, _, _ := steps(r.stderr)
		if len(kinds) > 0 {
			t.Errorf("%s: progress lines %v:\n%s", tc.name, kinds, r.stderr)
		}
		wantIn(t, tc.name, r.stderr, tc.log, "certificate stored", "deployed")
	}
}
