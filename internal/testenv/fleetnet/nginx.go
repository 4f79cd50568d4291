package fleetnet

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/testenv"
)

// NodeHeader is the response header every node's nginx adds, naming the
// node, also to what an extra location proxies (unless that location
// sets headers of its own: nginx does not inherit add_header then).
const NodeHeader = "X-Fleet-Node"

// NginxOptions configure StartNginx.
type NginxOptions struct {
	// CertFile and KeyFile, both or neither, are PEM files for a listener
	// on :443 besides :80.
	CertFile, KeyFile string
	// Extra is nginx configuration put in the server block, after the
	// location / that names the node: say
	//	location /.well-known/acme-challenge/ { proxy_pass http://127.0.0.1:8080; }
	// or a root for a webroot path.
	Extra string
}

// nginxConf is a node's whole nginx configuration: one server on :80
// (and :443) answering / with the node's name. Workers run as root, so
// they read whatever the test made.
const nginxConf = `user root;
worker_processes 1;
error_log {{.Dir}}/logs/error.log notice;
events { worker_connections 512; }
http {
    access_log {{.Dir}}/logs/access.log;
    client_body_temp_path {{.Dir}}/body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;
    server {
        listen 80;
{{- if .CertFile}}
        listen 443 ssl;
        ssl_certificate {{.CertFile}};
        ssl_certificate_key {{.KeyFile}};
{{- end}}
        server_name _;
        add_header ` + NodeHeader + ` {{.Name}} always;
        location / {
            default_type text/plain;
            return 200 "{{.Name}}\n";
        }
{{.Extra}}
    }
}
`

// StartNginx starts Debian's nginx in the node's namespace, with its
// configuration and logs in a fresh directory, and returns once it
// listens. It is stopped when the test ends; StopNginx stops it sooner,
// and StartNginx may then start it again.
func (n *Node) StartNginx(t testing.TB, opts NginxOptions) *testenv.Server {
	t.Helper()
	if (opts.CertFile == "") != (opts.KeyFile == "") {
		t.Fatal("fleetnet: NginxOptions needs both CertFile and KeyFile, or neither")
	}
	if n.Nginx != nil && n.Nginx.Alive() {
		t.Fatalf("fleetnet: nginx already runs on %s", n.Name)
	}
	dir := testenv.WorldReadableDir(t)
	data := map[string]any{"Name": n.Name, "CertFile": opts.CertFile, "KeyFile": opts.KeyFile, "Extra": opts.Extra}
	wait := []string{hostPort(n.Addr, 80)}
	if opts.CertFile != "" {
		wait = append(wait, hostPort(n.Addr, 443))
	}
	n.NS.Do(t, func(t testing.TB) {
		n.Nginx = testenv.StartNginx(t, dir, nginxConf, data, wait...)
	})
	return n.Nginx
}

// ReloadNginx has the node's nginx reread its configuration (the file
// n.Nginx.Conf) and returns once a worker of the new configuration runs.
// A configuration nginx refuses fails the test with its error.
func (n *Node) ReloadNginx(t testing.TB) {
	t.Helper()
	s := n.running(t)
	pid := s.MasterPID()
	// A SIGHUP before the master set its handlers would kill it; its
	// workers exist only after that.
	old := waitWorkers(t, s)
	logSize := fileSize(filepath.Join(s.Dir, "logs", "error.log"))
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatalf("signalling nginx on %s: %v", n.Name, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if log := readFrom(filepath.Join(s.Dir, "logs", "error.log"), logSize); strings.Contains(log, "[emerg]") {
			t.Fatalf("nginx on %s refused its configuration:\n%s", n.Name, log)
		}
		if news := workers(pid); len(news) > 0 && !subset(news, old) {
			return
		}
		if time.Now().After(deadline) || !s.Alive() {
			t.Fatalf("nginx on %s did not start a new worker after SIGHUP\n%s", n.Name, s.Output())
		}
		time.Sleep(10 * time.Millisecond) // nginx tells nothing but its log
	}
}

// StopNginx stops the node's nginx (SIGTERM to its process group) and
// returns once it exited; the balancer is not told.
func (n *Node) StopNginx(t testing.TB) {
	t.Helper()
	s := n.running(t)
	syscall.Kill(-s.MasterPID(), syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for s.Alive() {
		if time.Now().After(deadline) {
			syscall.Kill(-s.MasterPID(), syscall.SIGKILL)
			deadline = time.Now().Add(5 * time.Second)
		}
		time.Sleep(10 * time.Millisecond) // testenv.Server has no exit channel to wait on
	}
}

func (n *Node) running(t testing.TB) *testenv.Server {
	t.Helper()
	if n.Nginx == nil || !n.Nginx.Alive() {
		t.Fatalf("fleetnet: nginx does not run on %s: call StartNginx first", n.Name)
	}
	return n.Nginx
}

// waitWorkers waits until the master of s has a child (a worker) and
// returns them.
func waitWorkers(t testing.TB, s *testenv.Server) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if w := workers(s.MasterPID()); len(w) > 0 {
			return w
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx started no worker\n%s", s.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// workers returns the PIDs of ppid's children, from /proc/*/stat.
func workers(ppid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var pids []int
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...: comm may hold anything, even ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fs := strings.Fields(s[i+1:])
		if len(fs) < 2 || fs[1] != strconv.Itoa(ppid) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// subset reports whether every element of a is in b.
func subset(a, b []int) bool {
	for _, x := range a {
		found := false
		for _, y := range b {
			found = found || x == y
		}
		if !found {
			return false
		}
	}
	return true
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns the file's content from offset on.
func readFrom(path string, offset int64) string {
	b, _ := os.ReadFile(path)
	if int64(len(b)) < offset {
		return ""
	}
	return string(b[offset:])
}
