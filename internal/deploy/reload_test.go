package deploy

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReloadMethod(t *testing.T) {
	withSystemd := t.TempDir()
	none := filepath.Join(t.TempDir(), "absent")
	pid := filepath.Join(t.TempDir(), "x.pid")
	tests := []struct {
		name         string
		r            Reload
		method, what string
		err          string
	}{
		{"systemd running", Reload{Server: "nginx", SystemdDir: withSystemd}, "systemd", "nginx", ""},
		{"haproxy under systemd", Reload{Server: "haproxy", SystemdDir: withSystemd}, "systemd", "haproxy", ""},
		{"unit forced", Reload{Server: "apache", Unit: "httpd-custom", SystemdDir: none}, "systemd", "httpd-custom", ""},
		{"pid file forced", Reload{Server: "nginx", PIDFile: pid, SystemdDir: withSystemd}, "signal", pid, ""},
		{"unknown server", Reload{Server: "caddy"}, "", "", "use a deploy hook"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, what, err := tc.r.Method()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || m != tc.method || what != tc.what {
				t.Errorf("Method = %q %q %v, want %q %q", m, what, err, tc.method, tc.what)
			}
		})
	}
}

// systemctl is called as `systemctl reload UNIT`; a failure says what to
// check.
func TestReloadSystemctl(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	ok := filepath.Join(dir, "systemctl")
	if err := os.WriteFile(ok, []byte("#!/bin/sh\necho \"$@\" >> "+log+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "systemctl-bad")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho 'Unit nginx.service not loaded.' >&2\nexit 5\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := Reload{Server: "nginx", Systemctl: ok, SystemdDir: dir}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(log); string(got) != "reload nginx\n" {
		t.Errorf("systemctl called with %q", got)
	}
	r.Systemctl = bad
	if err := r.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "not loaded") || !strings.Contains(err.Error(), "pid_file") {
		t.Errorf("err = %v", err)
	}
	if err := (Reload{Server: "nginx", PIDFile: filepath.Join(dir, "none.pid")}).Run(context.Background()); err == nil || !strings.Contains(err.Error(), "is it running") {
		t.Errorf("missing pid file: %v", err)
	}
}

// A real nginx and a real HAProxy pick up a new certificate after Detour's
// reload by signal: the serial served over TLS changes.
func TestReloadRealServers(t *testing.T) {
	tests := []struct {
		server, bin, pkg string
		start            func(t *testing.T, bin, dir, addr string, info Info) (pidFile string)
		output           string // written before each reload, when the server reads an output
	}{
		{"nginx", "nginx", "nginx", startNginx, ""},
		{"haproxy", "haproxy", "haproxy", startHAProxy, "combined.pem"},
	}
	for _, tc := range tests {
		t.Run(tc.server, func(t *testing.T) {
			bin := lookPath(t, tc.bin, tc.pkg)
			dir := t.TempDir()
			info, first := testLive(t, "reload.example")
			var outs []Output
			if tc.output != "" {
				outs = []Output{{Path: filepath.Join(dir, tc.output), Format: FormatCombined}}
				for _, o := range outs {
					if err := o.Write(info); err != nil {
						t.Fatal(err)
					}
				}
			}
			addr := freeAddr(t)
			pidFile := tc.start(t, bin, dir, addr, info)
			waitServed(t, dir, addr, first.SerialNumber)

			next, second := testLive(t, "reload.example")
			for _, f := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
				b, _ := os.ReadFile(filepath.Join(next.LiveDir, f))
				if err := os.WriteFile(filepath.Join(info.LiveDir, f), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			plan := Plan{Outputs: outs, Reloads: []Reload{{Server: tc.server, PIDFile: pidFile}}}
			if err := plan.Run(context.Background(), info, nil); err != nil {
				t.Fatal(err)
			}
			waitServed(t, dir, addr, second.SerialNumber)
		})
	}
}

func startNginx(t *testing.T, bin, dir, addr string, info Info) string {
	pid := filepath.Join(dir, "nginx.pid")
	conf := fmt.Sprintf(`daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events {}
http {
  access_log off;
  client_body_temp_path %[1]s; proxy_temp_path %[1]s; fastcgi_temp_path %[1]s; uwsgi_temp_path %[1]s; scgi_temp_path %[1]s;
  server {
    listen %[2]s ssl;
    ssl_certificate %[3]s/fullchain.pem;
    ssl_certificate_key %[3]s/privkey.pem;
    return 200 "ok";
  }
}
`, dir, addr, info.LiveDir)
	startServer(t, dir, conf, pid, bin, "-c", filepath.Join(dir, "server.conf"), "-p", dir)
	return pid
}

func startHAProxy(t *testing.T, bin, dir, addr string, _ Info) string {
	pid := filepath.Join(dir, "haproxy.pid")
	conf := fmt.Sprintf(`global
  pidfile %[1]s/haproxy.pid
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
frontend tls
  bind %[2]s ssl crt %[1]s/combined.pem
  http-request return status 200 content-type text/plain string ok
`, dir, addr)
	// -W: master-worker mode, which reloads on SIGUSR2 (as packaged).
	startServer(t, dir, conf, pid, bin, "-W", "-db", "-f", filepath.Join(dir, "server.conf"), "-p", pid)
	// The worker serves before the master has heard it is ready; a
	// SIGUSR2 in between can be lost (seen once in CI). The master
	// says "Loading success." once it has.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, _ := os.ReadFile(filepath.Join(dir, "server.out")); strings.Contains(string(b), "Loading success.") {
			return pid
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "server.out"))
			t.Fatalf("haproxy's master never reported its worker ready:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond) // polling the master's log: no signal exists
	}
}

// startServer writes conf, starts the server in the foreground and waits
// for its pid file.
func startServer(t *testing.T, dir, conf, pidFile, bin string, args ...string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "server.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "server.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	// Its own process group, so that cleanup reaches the workers too; output
	// to a file, so that no pipe outlives the master.
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	output := func() string { b, _ := os.ReadFile(logFile.Name()); return string(b) }
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(pidFile); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("%s exited: %v\n%s", bin, err, output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s wrote no pid file %s:\n%s", bin, pidFile, output())
		}
		time.Sleep(20 * time.Millisecond) // polling for the pid file: no signal exists
	}
}

// waitServed polls addr until the certificate it serves has serial.
func waitServed(t *testing.T, dir, addr string, serial *big.Int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "reload.example"})
		if err == nil {
			got := c.ConnectionState().PeerCertificates[0].SerialNumber
			c.Close()
			if got.Cmp(serial) == 0 {
				return
			}
			last = "serial " + got.Text(16)
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond) // polling the server: reloads are asynchronous
	}
	out, _ := os.ReadFile(filepath.Join(dir, "server.out"))
	t.Fatalf("%s never served serial %s (last: %s); the server's output:\n%s", addr, serial.Text(16), last, out)
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

func lookPath(t *testing.T, bin, pkg string) string {
	t.Helper()
	for _, dir := range []string{"", "/usr/sbin/", "/sbin/"} {
		if p, err := exec.LookPath(dir + bin); err == nil {
			return p
		}
	}
	t.Fatalf("this test needs %s (Debian package %s)", bin, pkg)
	return ""
}

// A reload signal goes only to a process that catches it: one that would
// die of it (no handler) or ignore it gets none, and the error says why.
func TestReloadSignalOnlyWhenCaught(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the disposition of a signal is read from /proc/PID/status, on Linux only (elsewhere Detour signals at once)")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Fatalf("Linux without /proc mounted: %v", err)
	}
	dir := t.TempDir()
	start := func(script string) (pidFile string, alive func() bool) {
		cmd := exec.Command("sh", "-c", script)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
		pidFile = filepath.Join(dir, fmt.Sprintf("%d.pid", cmd.Process.Pid))
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
		return pidFile, func() bool {
			select {
			case <-done:
				return false
			default:
				return true
			}
		}
	}
	got := filepath.Join(dir, "got")
	cases := []struct {
		name, script, err string
	}{
		{"default", "sleep 60", "no handler for it"},
		{"ignored", `trap "" HUP; while :; do sleep 0.05; done`, "ignores it"},
		{"caught", `trap "echo hup >> ` + got + `" HUP; while :; do sleep 0.05; done`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pid, alive := start(tc.script)
			if tc.err == "" {
				// The shell installs its trap a moment after it starts.
				time.Sleep(100 * time.Millisecond)
			}
			err := Reload{Server: "nginx", PIDFile: pid, Timeout: 300 * time.Millisecond}.Run(context.Background())
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				deadline := time.Now().Add(5 * time.Second)
				for b, _ := os.ReadFile(got); !strings.Contains(string(b), "hup"); b, _ = os.ReadFile(got) {
					if time.Now().After(deadline) {
						t.Fatal("the process never received SIGHUP")
					}
					time.Sleep(20 * time.Millisecond) // polling the trap's file
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "sent nothing") {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
			time.Sleep(50 * time.Millisecond)
			if !alive() {
				t.Fatal("the process is gone: it was signalled")
			}
		})
	}
}
