// Package systemd holds Detour's systemd units; its test checks them.
package systemd

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// unit is a parsed unit file: section -> key -> values (a key may repeat).
type unit map[string]map[string][]string

func parseUnit(t *testing.T, name string) unit {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is not key=value inside a section", name, n, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}

func (u unit) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// The services are hardened: no new privileges, a read-only system, and
// only the capabilities Detour's paths need.
func TestUnitsHardened(t *testing.T) {
	allowedCaps := []string{"CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN"}
	for _, name := range []string{"detour.service", "detour-renew.service", "detour-firewall-sweep.service"} {
		t.Run(name, func(t *testing.T) {
			u := parseUnit(t, name)
			want := map[string]string{
				"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
				"StateDirectory": "detour", "RestrictSUIDSGID": "yes", "ProtectKernelModules": "yes",
				"SystemCallArchitectures": "native", "User": "detour",
			}
			for k, v := range want {
				if got := u.get("Service", k); got != v {
					t.Errorf("%s=%q, want %q", k, got, v)
				}
			}
			for _, key := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
				caps := strings.Fields(u.get("Service", key))
				if len(caps) == 0 {
					t.Errorf("%s is not set: the unit would keep every capability", key)
				}
				for _, c := range caps {
					if !slices.Contains(allowedCaps, c) {
						t.Errorf("%s grants %s beyond %v", key, c, allowedCaps)
					}
				}
			}
			if exec := u.get("Service", "ExecStart"); !strings.HasPrefix(exec, "/usr/bin/detour ") {
				t.Errorf("ExecStart=%q", exec)
			}
		})
	}
	svc := parseUnit(t, "detour.service")
	if !strings.Contains(svc.get("Service", "ExecStart"), " run ") || svc.get("Service", "ExecReload") != "/bin/kill -HUP $MAINPID" {
		t.Errorf("detour.service must run the agent and reload with SIGHUP")
	}
	if parseUnit(t, "detour-renew.service").get("Service", "Type") != "oneshot" {
		t.Error("detour-renew.service must be a oneshot")
	}
	tm := parseUnit(t, "detour-renew.timer")
	if tm.get("Timer", "OnCalendar") == "" || tm.get("Timer", "Persistent") != "true" || tm.get("Install", "WantedBy") != "timers.target" {
		t.Errorf("timer: %v", tm)
	}
	sweep := parseUnit(t, "detour-firewall-sweep.service")
	if !strings.Contains(sweep.get("Service", "ExecStart"), " firewall close --stale ") || sweep.get("Service", "Type") != "oneshot" {
		t.Errorf("detour-firewall-sweep.service must run `detour firewall close --stale` once: %v", sweep["Service"])
	}
	st := parseUnit(t, "detour-firewall-sweep.timer")
	if st.get("Timer", "OnUnitActiveSec") == "" || st.get("Install", "WantedBy") != "timers.target" {
		t.Errorf("detour-firewall-sweep.timer must repeat: %v", st)
	}
}

// systemd itself accepts the units (systemd-analyze verify), with ExecStart
// pointed at an executable that exists here.
func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("this test needs systemd-analyze (Debian package systemd): %v", err)
	}
	dir := t.TempDir()
	units := []string{"detour.service", "detour-renew.service", "detour-renew.timer", "detour-firewall-sweep.service", "detour-firewall-sweep.timer"}
	for _, name := range units {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		// The binary is not installed here; any executable will do for
		// verify, which checks that ExecStart exists.
		text := strings.ReplaceAll(string(b), "/usr/bin/detour ", "/bin/true ")
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"verify", "--man=no"}
	for _, name := range units {
		args = append(args, filepath.Join(dir, name))
	}
	cmd := exec.Command(analyze, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// Warnings about the test host (no systemd running) are not about
		// the units; anything naming a unit file is.
		if strings.Contains(line, dir) {
			t.Errorf("systemd-analyze: %s", line)
		}
	}
}
