package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Reload tells a web server to pick up the new certificate: with
// `systemctl reload UNIT` where systemd runs the server, else by signalling
// the process in its pid file (nginx SIGHUP, Apache SIGUSR1 for a graceful
// restart, HAProxy's master SIGUSR2).
type Reload struct {
	// Server is "nginx", "apache" or "haproxy".
	Server string
	// Unit forces `systemctl reload Unit`.
	Unit string
	// PIDFile forces signalling the pid in this file.
	PIDFile string
	// Systemctl is the systemctl command; default "systemctl" from PATH.
	Systemctl string
	// SystemdDir is where a running systemd leaves its marker; default
	// /run/systemd/system (sd_booted(3)).
	SystemdDir string
	// Timeout bounds systemctl; default 1 minute.
	Timeout time.Duration
}

// server describes how to reload one kind of server.
type server struct {
	units    []string // candidate unit names, the first existing one is used
	pidFiles []string // candidate pid files
	signal   syscall.Signal
}

var servers = map[string]server{
	"nginx": {units: []string{"nginx"}, pidFiles: []string{"/run/nginx.pid", "/var/run/nginx.pid"}, signal: syscall.SIGHUP},
	"apache": {units: []string{"apache2", "httpd"},
		pidFiles: []string{"/run/apache2/apache2.pid", "/var/run/apache2/apache2.pid", "/run/httpd/httpd.pid", "/var/run/httpd/httpd.pid"},
		signal:   syscall.SIGUSR1},
	// HAProxy in master-worker mode (-W, as packaged) reloads on SIGUSR2
	// to the master.
	"haproxy": {units: []string{"haproxy"}, pidFiles: []string{"/run/haproxy.pid", "/var/run/haproxy.pid"}, signal: syscall.SIGUSR2},
}

// unitDirs are where unit files live, to pick between candidate names.
var unitDirs = []string{"/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"}

// Method returns how r will reload: "systemd UNIT" or "signal PIDFILE".
func (r Reload) Method() (method, target string, err error) {
	s, ok := servers[r.Server]
	if !ok {
		return "", "", fmt.Errorf("unknown server %q: Detour reloads nginx, apache and haproxy; use a deploy hook for others", r.Server)
	}
	switch {
	case r.PIDFile != "":
		return "signal", r.PIDFile, nil
	case r.Unit != "":
		return "systemd", r.Unit, nil
	}
	sdDir := r.SystemdDir
	if sdDir == "" {
		sdDir = "/run/systemd/system"
	}
	if fi, err := os.Stat(sdDir); err == nil && fi.IsDir() {
		unit := s.units[0]
		for _, u := range s.units {
			if unitExists(u) {
				unit = u
				break
			}
		}
		return "systemd", unit, nil
	}
	for _, p := range s.pidFiles {
		if _, err := os.Stat(p); err == nil {
			return "signal", p, nil
		}
	}
	return "", "", fmt.Errorf("cannot reload %s: systemd is not running and none of %s exists; set pid_file (or unit) in the reload entry",
		r.Server, strings.Join(s.pidFiles, ", "))
}

func unitExists(u string) bool {
	for _, d := range unitDirs {
		if _, err := os.Stat(filepath.Join(d, u+".service")); err == nil {
			return true
		}
	}
	return false
}

// Run reloads the server.
func (r Reload) Run(ctx context.Context) error {
	method, target, err := r.Method()
	if err != nil {
		return err
	}
	if method == "signal" {
		return r.signal(target)
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	bin := r.Systemctl
	if bin == "" {
		bin = "systemctl"
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "reload", target)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("reloading %s with `%s reload %s` failed (%v): %s; check `systemctl status %s`, or set pid_file to signal it instead",
			r.Server, bin, target, err, tail(out.Bytes()), target)
	}
	return nil
}

// signal sends the server's reload signal to the pid in file.
func (r Reload) signal(file string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("reloading %s: reading its pid file: %w; is it running? set pid_file to where it writes its pid", r.Server, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("reloading %s: pid file %s holds %q, not a process id", r.Server, file, strings.TrimSpace(string(raw)))
	}
	sig := servers[r.Server].signal
	if err := waitHandled(pid, sig, r.handledWait()); err != nil {
		return fmt.Errorf("reloading %s: %w", r.Server, err)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("reloading %s: no process %d (from %s); the pid file is stale, is %s running?", r.Server, pid, file, r.Server)
		}
		return fmt.Errorf("reloading %s: sending %v to %d: %w (Detour must run as the server's user or as root)", r.Server, sig, pid, err)
	}
	return nil
}

func (r Reload) handledWait() time.Duration {
	if r.Timeout > 0 && r.Timeout < 10*time.Second {
		return r.Timeout
	}
	return 10 * time.Second
}

// waitHandled waits until process pid catches sig, as read from
// /proc/PID/status. A server that is still starting (or re-executing, as
// HAProxy's master does on every reload) ignores or blocks its reload signal
// for a moment: a signal sent then is lost, or, at the default disposition,
// ends the server (SIGHUP, SIGUSR1 and SIGUSR2 all terminate a process that
// has no handler). Without /proc (not Linux) it returns at once.
func waitHandled(pid int, sig syscall.Signal, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		caught, ignored, known := disposition(pid, sig)
		if !known || caught {
			return nil
		}
		if time.Now().After(deadline) {
			how := "has no handler for it, so the signal would end the process"
			if ignored {
				how = "ignores it"
			}
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			return fmt.Errorf("process %d (%s) %s after %v; Detour sent nothing. "+
				"Is the pid file the server's (for HAProxy: the master's, started with -W)?",
				pid, strings.TrimSpace(string(comm)), how, wait)
		}
		time.Sleep(20 * time.Millisecond) // polling /proc: the kernel offers no notification
	}
}

// disposition reads whether pid catches or ignores sig. known is false when
// the kernel does not say (no /proc, or the process is gone: kill reports
// that).
func disposition(pid int, sig syscall.Signal) (caught, ignored, known bool) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false, false, false
	}
	bit := uint64(1) << (uint(sig) - 1)
	var cgt, ign uint64
	var haveCgt, haveIgn bool
	for line := range strings.SplitSeq(string(raw), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(value), 16, 64)
		switch {
		case err != nil:
		case name == "SigCgt":
			cgt, haveCgt = v, true
		case name == "SigIgn":
			ign, haveIgn = v, true
		}
	}
	if !haveCgt || !haveIgn {
		return false, false, false
	}
	return cgt&bit != 0, ign&bit != 0, true
}
