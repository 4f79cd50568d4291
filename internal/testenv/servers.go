package testenv

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// Server is a real web server (nginx, Apache or HAProxy from Debian's
// packages) started by a test with its configuration in a temporary
// directory. It runs in the foreground of its master process, which the
// test owns; Reload signals that master the way the server's own graceful
// reload does, so the master's PID stays the same.
type Server struct {
	Kind string // "nginx", "apache2", "haproxy"
	Dir  string // configuration and runtime directory
	Conf string // the configuration file

	cmd    *exec.Cmd
	done   chan struct{} // closed when the master has exited and was reaped
	output *syncBuffer
	reload syscall.Signal
}

// RequireBinary returns the path of a server binary, failing the test with
// the package to install when it is missing. Tests never skip for a missing
// tool: scripts/test.sh installs them.
func RequireBinary(t testing.TB, name, pkg string) string {
	t.Helper()
	for _, dir := range []string{"", "/usr/sbin/", "/sbin/", "/usr/bin/"} {
		p := dir + name
		if dir == "" {
			if lp, err := exec.LookPath(name); err == nil {
				return lp
			}
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("%s is not installed: install the Debian package %q (./scripts/test.sh does this)", name, pkg)
	return ""
}

// RequireFile fails the test, naming the Debian package to install, when
// the file at path (a server module, say) is missing.
func RequireFile(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing (%v): install the Debian package %q (./scripts/test.sh does this)", path, err, pkg)
	}
}

// WorldReadableDir returns a fresh temporary directory that worker
// processes running as another user (www-data) can read: the test's own
// temporary directories are 0700.
func WorldReadableDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "detour-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// nextStatic is the next candidate of StaticPort; 0 before first use.
var nextStatic atomic.Int32

// StaticPort returns a TCP port on 127.0.0.1, free a moment ago, from below
// the kernel's ephemeral port range (net.ipv4.ip_local_port_range), which
// neither listeners on port 0 nor outgoing connections are given. A test
// that reserves an address for a listener bound only later (a side port
// Detour opens while validating, a server started after other work) uses
// it, so that another test's listener on port 0 cannot take the port in
// the meantime. Ports are handed out once per process. Where the
// ephemeral range starts too low to leave room, it falls back to FreePort.
func StaticPort(t testing.TB) int {
	t.Helper()
	low := ephemeralLow()
	const span = 10000
	if low-span < 1024 {
		return FreePort(t)
	}
	nextStatic.CompareAndSwap(0, int32(low-span+rand.IntN(span/2)))
	for range 200 {
		p := int(nextStatic.Add(1))
		if p >= low {
			break
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // taken: try the next
		}
		ln.Close()
		return p
	}
	return FreePort(t)
}

// ephemeralLow returns the first port of the ephemeral range (Linux's
// default when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				return n
			}
		}
	}
	return 32768
}

// render executes a text/template with data.
func render(t testing.TB, tmpl string, data any) string {
	t.Helper()
	var b bytes.Buffer
	if err := template.Must(template.New("conf").Option("missingkey=error").Parse(tmpl)).Execute(&b, data); err != nil {
		t.Fatalf("rendering server config: %v", err)
	}
	return b.String()
}

// StartNginx starts nginx with conf (a text/template given .Dir) as its
// whole configuration, and waits until every address in wait accepts.
func StartNginx(t testing.TB, dir, conf string, data map[string]any, wait ...string) *Server {
	t.Helper()
	bin := RequireBinary(t, "nginx", "nginx")
	s := &Server{Kind: "nginx", Dir: dir, Conf: filepath.Join(dir, "nginx.conf"), reload: syscall.SIGHUP}
	data["Dir"] = dir
	writeConf(t, s.Conf, render(t, conf, data))
	os.MkdirAll(filepath.Join(dir, "logs"), 0o755)
	s.start(t, bin, "-p", dir, "-c", s.Conf, "-e", filepath.Join(dir, "logs", "error.log"), "-g", "daemon off; pid "+filepath.Join(dir, "nginx.pid")+";")
	s.waitFor(t, wait...)
	return s
}

// StartApache starts apache2 in the foreground with conf (a text/template
// given .Dir and .Modules, the module directory) and waits for wait.
func StartApache(t testing.TB, dir, conf string, data map[string]any, wait ...string) *Server {
	t.Helper()
	bin := RequireBinary(t, "apache2", "apache2")
	s := &Server{Kind: "apache2", Dir: dir, Conf: filepath.Join(dir, "apache2.conf"), reload: syscall.SIGUSR1}
	data["Dir"] = dir
	data["Modules"] = "/usr/lib/apache2/modules"
	writeConf(t, s.Conf, render(t, conf, data))
	s.start(t, bin, "-f", s.Conf, "-DFOREGROUND")
	s.waitFor(t, wait...)
	return s
}

// StartHAProxy starts haproxy in master-worker mode (-W: SIGUSR2 reloads the
// workers, the master stays) and waits for wait.
func StartHAProxy(t testing.TB, dir, conf string, data map[string]any, wait ...string) *Server {
	t.Helper()
	bin := RequireBinary(t, "haproxy", "haproxy")
	s := &Server{Kind: "haproxy", Dir: dir, Conf: filepath.Join(dir, "haproxy.cfg"), reload: syscall.SIGUSR2}
	data["Dir"] = dir
	writeConf(t, s.Conf, render(t, conf, data))
	s.start(t, bin, "-W", "-db", "-f", s.Conf)
	s.waitFor(t, wait...)
	// The worker serves before the master has heard it is ready, and a
	// SIGUSR2 in between can be lost: wait for the master's word.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.output.String(), "Loading success.") {
		if time.Now().After(deadline) {
			t.Fatalf("haproxy's master never reported its worker ready\n%s", s.Output())
		}
		time.Sleep(10 * time.Millisecond) // polling the master's output: no signal exists
	}
	return s
}

func writeConf(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *Server) start(t testing.TB, bin string, args ...string) {
	t.Helper()
	s.output = &syncBuffer{}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir = s.Dir
	s.cmd.Stdout, s.cmd.Stderr = s.output, s.output
	s.cmd.Env = append(os.Environ(), "APACHE_RUN_DIR="+s.Dir, "APACHE_LOG_DIR="+s.Dir, "APACHE_LOCK_DIR="+s.Dir, "APACHE_PID_FILE="+filepath.Join(s.Dir, "apache2.pid"))
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", s.Kind, err)
	}
	done := make(chan struct{})
	s.done = done
	go func() { s.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s\nerror log:\n%s", s.Kind, s.output.String(), s.errorLog())
		}
	})
}

func (s *Server) errorLog() string {
	for _, f := range []string{"logs/error.log", "error.log"} {
		if b, err := os.ReadFile(filepath.Join(s.Dir, f)); err == nil {
			return string(b)
		}
	}
	return ""
}

func (s *Server) waitFor(t testing.TB, addrs ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) || s.exited() {
				t.Fatalf("%s did not listen on %s: %v\noutput:\n%s\nerror log:\n%s", s.Kind, a, err, s.output.String(), s.errorLog())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// exited reports whether the master process has exited.
func (s *Server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Output returns what the server wrote to its stdout and stderr so far,
// and its error log, for failure messages.
func (s *Server) Output() string {
	return fmt.Sprintf("output:\n%s\nerror log:\n%s", s.output.String(), s.errorLog())
}

// MasterPID is the PID of the server's master process.
func (s *Server) MasterPID() int { return s.cmd.Process.Pid }

// Alive reports whether the master process still runs.
func (s *Server) Alive() bool { return !s.exited() && s.cmd.Process.Signal(syscall.Signal(0)) == nil }

// ReloadCommand is a shell command that gracefully reloads this server, for
// deploy hooks.
func (s *Server) ReloadCommand() string {
	return fmt.Sprintf("kill -%s %d", strings.TrimPrefix(signalName(s.reload), "SIG"), s.MasterPID())
}

func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGHUP:
		return "HUP"
	case syscall.SIGUSR1:
		return "USR1"
	case syscall.SIGUSR2:
		return "USR2"
	}
	return strconv.Itoa(int(sig))
}

// Load requests url repeatedly from concurrency workers until stop is
// called (or limit requests were made), counting failures: any transport
// error or a status other than want. It is bounded in count and time.
type Load struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// StartLoad begins requesting url with client.
func StartLoad(client *http.Client, url string, want int, concurrency int) *Load {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	l := &Load{cancel: cancel}
	for range concurrency {
		l.wg.Go(func() {
			for n := 0; n < 100000 && ctx.Err() == nil; n++ {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				resp, err := client.Do(req)
				if ctx.Err() != nil {
					return
				}
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != want {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, err.Error())
				} else {
					l.ok.Add(1)
				}
				// Paced after failures too: a server that is down must not
				// turn the loop into a busy one.
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return l
}

// Stop ends the load and returns the counts and the first failure.
func (l *Load) Stop() (ok, failed int64, first string) {
	l.cancel()
	l.wg.Wait()
	s, _ := l.firstErr.Load().(string)
	return l.ok.Load(), l.failed.Load(), s
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// BuildDetour builds the detour command into dir (made world-readable, so
// that a test may run it as another user) and returns its path. It is for
// a TestMain, which has no testing.TB: errors are returned.
func BuildDetour(dir string) (string, error) {
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "detour")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/detour-acme/detour/cmd/detour").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building detour (the go command must be on PATH): %v\n%s", err, out)
	}
	return bin, nil
}
