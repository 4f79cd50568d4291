package snippet

// Helpers that run the real web servers (Debian packages nginx,
// libnginx-mod-stream, apache2 and haproxy) with configurations in a test's
// temporary directory, on 127.0.0.1 ports.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	apacheModules    = "/usr/lib/apache2/modules"
	nginxStreamModSO = "/usr/lib/nginx/modules/ngx_stream_module.so"
	startTimeout     = 15 * time.Second
)

// binary returns the path of a server binary or fails the test, saying
// which Debian package to install.
func binary(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	t.Fatalf("%s is not installed: install the Debian package %s (scripts/debian-packages.txt lists it; scripts/test.sh installs it)", name, pkg)
	return ""
}

// requireFile fails the test when a file a server needs is missing.
func requireFile(t *testing.T, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: install the Debian package %s (scripts/debian-packages.txt lists it)", path, pkg)
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// writeConf writes text to dir/name and returns the path.
func writeConf(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// configTest runs a server's configuration check and fails the test with
// its output and the configuration when it does not pass.
func configTest(t *testing.T, conf string, bin string, args ...string) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		text, _ := os.ReadFile(conf)
		t.Fatalf("%s %s: %v\n%s\nconfiguration:\n%s", bin, strings.Join(args, " "), err, out, text)
	}
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// server is a running server process.
type server struct {
	name string
	out  *lockedBuffer
	done chan struct{}
	logs []string // log files to show when something fails
}

// logText returns the process output and log files, for failure messages.
func (s *server) logText() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s output:\n%s", s.name, s.out.String())
	for _, l := range s.logs {
		text, _ := os.ReadFile(l)
		fmt.Fprintf(&b, "\n%s:\n%s", l, text)
	}
	return b.String()
}

// start runs bin in the foreground, stops it in t.Cleanup and waits until
// it accepts connections on addr.
func start(t *testing.T, addr string, logs []string, bin string, args ...string) *server {
	t.Helper()
	s := &server{name: filepath.Base(bin), out: &lockedBuffer{}, done: make(chan struct{}), logs: logs}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
	})
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-s.done:
			t.Fatalf("%s exited at start:\n%s", bin, s.logText())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not accept connections on %s after %v:\n%s", bin, addr, startTimeout, s.logText())
		}
		time.Sleep(20 * time.Millisecond) // polling an external process: no signal to wait for
	}
}

// nginxConf is a minimal complete nginx configuration. top goes at the top
// level (stream blocks, load_module), vhost inside a port-80-like server on
// listen.
func nginxConf(dir, top, listen, vhost string) string {
	user := ""
	if os.Geteuid() == 0 {
		// Workers must reach the side port's socket in the test's
		// private directory.
		user = "user root;"
	}
	var http string
	if vhost != "" {
		http = fmt.Sprintf(`http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen %[2]s;
        server_name _;
%[3]s
        location / { return 301 https://$host$request_uri; }
    }
}`, dir, listen, vhost)
	}
	return fmt.Sprintf(`%s
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log info;
%s
events { worker_connections 64; }
%s
`, user, dir, dir, top, http)
}

// nginxTest checks and starts nginx with conf; addr is where it listens.
func runNginx(t *testing.T, dir, conf, addr string) *server {
	t.Helper()
	bin := binary(t, "nginx", "nginx")
	p := writeConf(t, dir, "nginx.conf", conf)
	base := []string{"-p", dir + "/", "-c", p, "-e", filepath.Join(dir, "error.log")}
	configTest(t, p, bin, append([]string{"-t"}, base...)...)
	if addr == "" {
		return nil
	}
	return start(t, addr, []string{filepath.Join(dir, "error.log")}, bin, append(base, "-g", "daemon off;")...)
}

// apacheConf is a minimal complete Apache 2.4 configuration with vhost
// inside a VirtualHost on listen, followed by the usual redirects to HTTPS
// (mod_alias and mod_rewrite).
func apacheConf(dir, listen, vhost string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ServerRoot %s\nDefaultRuntimeDir %s\nPidFile %s/httpd.pid\nErrorLog %s/error.log\nLogLevel warn\n", dir, dir, dir, dir)
	fmt.Fprintf(&b, "Mutex file:%s default\nListen %s\nServerName localhost\n", dir, listen)
	if os.Geteuid() == 0 {
		b.WriteString("User #65534\nGroup #65534\n")
	}
	for _, m := range []string{"mpm_event", "authz_core", "alias", "rewrite", "headers", "proxy", "proxy_http"} {
		fmt.Fprintf(&b, "LoadModule %s_module %s/mod_%s.so\n", m, apacheModules, m)
	}
	fmt.Fprintf(&b, `<VirtualHost %s>
    ServerName example.com
%s
    Redirect permanent / https://example.com/
    RewriteEngine On
    RewriteRule ^ https://%%{HTTP_HOST}%%{REQUEST_URI} [R=301,L]
</VirtualHost>
`, listen, vhost)
	return b.String()
}

// runApache checks and starts Apache with conf.
func runApache(t *testing.T, dir, conf, addr string) *server {
	t.Helper()
	bin := binary(t, "apache2", "apache2")
	requireFile(t, filepath.Join(apacheModules, "mod_proxy_http.so"), "apache2")
	p := writeConf(t, dir, "httpd.conf", conf)
	configTest(t, p, bin, "-t", "-f", p)
	if addr == "" {
		return nil
	}
	return start(t, addr, []string{filepath.Join(dir, "error.log")}, bin, "-f", p, "-DFOREGROUND")
}

// haproxyConf is a minimal complete HAProxy configuration around body.
func haproxyConf(body string) string {
	return `global
    log stderr format raw local0 warning
defaults
    mode http
    log global
    retries 0 # fail fast when the side port is closed (the test checks that state)
    timeout connect 5s
    timeout client 10s
    timeout server 10s
` + body
}

// runHAProxy checks and starts HAProxy with conf.
func runHAProxy(t *testing.T, dir, conf, addr string) *server {
	t.Helper()
	bin := binary(t, "haproxy", "haproxy")
	p := writeConf(t, dir, "haproxy.cfg", conf)
	configTest(t, p, bin, "-c", "-f", p)
	if addr == "" {
		return nil
	}
	return start(t, addr, nil, bin, "-db", "-f", p)
}

// indent prefixes every line of s with n spaces.
func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n")
}

// hostPort joins 127.0.0.1 and port.
func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
