package hostcheck

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/doctor/check"
)

// Lines of /proc/net/tcp and tcp6 as Linux 6.x prints them (captured on
// x86-64, the inodes changed): listening sockets on 0.0.0.0:80,
// 127.0.0.1:18080, 0.0.0.0:443, an established connection to :80,
// 0.0.0.0:8080, 0.0.0.0:8081, [::]:80 and [::1]:443.
const (
	procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000008f1c953 100 0 0 10 0                  
   1: 0100007F:46A0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000008f1c953 100 0 0 10 0                  
   2: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1004 1 0000000033d0d402 100 0 1 10 0                  
   3: 0F02000A:0050 0100000A:C350 01 00000000:00000000 02:000AFC7E 00000000    33        0 1003 2 00000000a6e2c1b8 20 4 30 10 -1                 
   4: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1005 1 0000000033d0d402 100 0 1 10 0                  
   5: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1006 1 0000000033d0d402 100 0 1 10 0                  
`
	procNetTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 00000000cd28e047 100 0 0 10 0
   1: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 00000000cd28e047 100 0 0 10 0
`
	// Lines of /proc/net/unix: /run/detour/http.sock listening and
	// connected, an abstract socket listening, an unnamed one.
	procNetUnix = `Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01  3001 /run/detour/http.sock
0000000000000000: 00000003 00000000 00000000 0001 03  3002 /run/detour/http.sock
0000000000000000: 00000002 00000000 00010000 0001 01  3003 @/tmp/.X11-unix/X0
0000000000000000: 00000003 00000000 00000000 0001 03  3004
`
)

func TestParseProcNetTCP(t *testing.T) {
	got, err := parseProcNetTCP([]byte(procNetTCP))
	if err != nil {
		t.Fatal(err)
	}
	want := []listenSocket{{"0.0.0.0:80", 80, 1001}, {"127.0.0.1:18080", 18080, 1002}, {"0.0.0.0:443", 443, 1004},
		{"0.0.0.0:8080", 8080, 1005}, {"0.0.0.0:8081", 8081, 1006}}
	if !slices.Equal(got, want) {
		t.Errorf("tcp: %+v\nwant %+v", got, want)
	}
	got, err = parseProcNetTCP([]byte(procNetTCP6))
	if err != nil {
		t.Fatal(err)
	}
	want = []listenSocket{{"[::]:80", 80, 2001}, {"[::1]:443", 443, 2002}}
	if !slices.Equal(got, want) {
		t.Errorf("tcp6: %+v\nwant %+v", got, want)
	}
	a, err := parseProcAddr("0000000000000000FFFF00000100007F")
	if err != nil || a.String() != "::ffff:127.0.0.1" {
		t.Errorf("mapped: %v %v", a, err)
	}
	for _, bad := range []string{"0: 0100007F 00000000:0000 0A 0 0 0 0 0 5 x", "0: 0100007:0050 00000000:0000 0A 0 0 0 0 0 5 x", "0: 0100007F:0050 00000000:0000 0A 0 0 0 0 0 x y"} {
		if _, err := parseProcNetTCP([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if p := parseStatPPID("42 (nginx: (worker) x) S 7 42 42 0 -1"); p != 7 {
		t.Errorf("ppid %d", p)
	}
}

// fakeProc lays out a directory like /proc: net/tcp and tcp6, and for
// each process its cmdline, exe link, stat and fd links.
type fakeProcess struct {
	pid, ppid int
	exe, cmd  string // cmd: arguments separated by NUL
	sockets   []int
}

func fakeProc(t *testing.T, procs []fakeProcess) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "net"), 0o755))
	must(os.WriteFile(filepath.Join(root, "net", "tcp"), []byte(procNetTCP), 0o644))
	must(os.WriteFile(filepath.Join(root, "net", "tcp6"), []byte(procNetTCP6), 0o644))
	must(os.WriteFile(filepath.Join(root, "net", "unix"), []byte(procNetUnix), 0o644))
	must(os.MkdirAll(filepath.Join(root, "self"), 0o755)) // not a PID: skipped
	for _, p := range procs {
		dir := filepath.Join(root, strconv.Itoa(p.pid))
		must(os.MkdirAll(filepath.Join(dir, "fd"), 0o755))
		must(os.WriteFile(filepath.Join(dir, "cmdline"), []byte(p.cmd+"\x00"), 0o644))
		must(os.WriteFile(filepath.Join(dir, "stat"), []byte(strconv.Itoa(p.pid)+" ("+filepath.Base(p.exe)+") S "+strconv.Itoa(p.ppid)+" 1 1 0 -1"), 0o644))
		must(os.Symlink(p.exe, filepath.Join(dir, "exe")))
		must(os.Symlink("/dev/null", filepath.Join(dir, "fd", "0")))
		must(os.Symlink("pipe:[77]", filepath.Join(dir, "fd", "1")))
		for i, s := range p.sockets {
			must(os.Symlink("socket:["+strconv.Itoa(s)+"]", filepath.Join(dir, "fd", strconv.Itoa(i+3))))
		}
	}
	return root
}

func TestHolders(t *testing.T) {
	root := fakeProc(t, []fakeProcess{
		// systemd socket-activates caddy on :8081: the service is the
		// holder, not PID 1.
		{pid: 1, ppid: 0, exe: "/usr/lib/systemd/systemd", cmd: "/sbin/init", sockets: []int{1006}},
		{pid: 500, ppid: 1, exe: "/usr/bin/caddy", cmd: "/usr/bin/caddy\x00run", sockets: []int{1006}},
		// socat listens on :8080 and its child, another program, inherited
		// the socket: the parent is the holder.
		{pid: 400, ppid: 1, exe: "/usr/bin/socat", cmd: "socat\x00TCP-LISTEN:8080,fork\x00EXEC:/usr/local/bin/app", sockets: []int{1005}},
		{pid: 401, ppid: 400, exe: "/usr/local/bin/app", cmd: "/usr/local/bin/app", sockets: []int{1005}},
		// nginx: the master and its workers all hold :80 (IPv4 and IPv6).
		{pid: 100, ppid: 1, exe: "/usr/sbin/nginx", cmd: "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;", sockets: []int{1001, 2001}},
		{pid: 101, ppid: 100, exe: "/usr/sbin/nginx", cmd: "nginx: worker process", sockets: []int{1001, 2001}},
		{pid: 102, ppid: 100, exe: "/usr/sbin/nginx", cmd: "nginx: worker process", sockets: []int{2001, 1001}},
		// haproxy -W: only the worker holds :443; its master is reported.
		{pid: 200, ppid: 1, exe: "/usr/sbin/haproxy", cmd: "/usr/sbin/haproxy\x00-Ws\x00-f\x00/etc/haproxy/haproxy.cfg"},
		{pid: 201, ppid: 200, exe: "/usr/sbin/haproxy (deleted)", cmd: "/usr/sbin/haproxy\x00-Ws\x00-f\x00/etc/haproxy/haproxy.cfg", sockets: []int{1004}},
		// Something on a port not checked.
		{pid: 300, ppid: 1, exe: "/usr/bin/python3", cmd: "python3\x00-m\x00http.server", sockets: []int{1002}},
	})
	holders, hidden, err := readHolders(root, []int{80, 443, 25, 8080, 8081})
	if err != nil || hidden != 0 {
		t.Fatal(err, hidden)
	}
	nginx := func(addr string) Holder {
		return Holder{Port: 80, Addr: addr, PID: 100, Command: "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;",
			Exe: "/usr/sbin/nginx", Server: ServerNginx, PIDs: []int{100, 101, 102}}
	}
	want := map[int][]Holder{
		80: {nginx("0.0.0.0:80"), nginx("[::]:80")},
		443: {
			{Port: 443, Addr: "0.0.0.0:443", PID: 200, Command: "/usr/sbin/haproxy -Ws -f /etc/haproxy/haproxy.cfg", Exe: "/usr/sbin/haproxy", Server: ServerHAProxy, PIDs: []int{201}},
			{Port: 443, Addr: "[::1]:443", Server: ServerUnknown}, // nobody visible holds it
		},
		25:   {},
		8080: {{Port: 8080, Addr: "0.0.0.0:8080", PID: 400, Command: "socat TCP-LISTEN:8080,fork EXEC:/usr/local/bin/app", Exe: "/usr/bin/socat", Server: ServerUnknown, PIDs: []int{400, 401}}},
		8081: {{Port: 8081, Addr: "0.0.0.0:8081", PID: 500, Command: "/usr/bin/caddy run", Exe: "/usr/bin/caddy", Server: ServerCaddy, PIDs: []int{1, 500}}},
	}
	if len(holders) != len(want) {
		t.Fatalf("holders %+v", holders)
	}
	for port, w := range want {
		g := holders[port]
		if g == nil || len(g) != len(w) {
			t.Errorf("port %d: %+v, want %+v", port, g, w)
			continue
		}
		for i := range w {
			if !holderEqual(g[i], w[i]) {
				t.Errorf("port %d holder %d:\ngot  %+v\nwant %+v", port, i, g[i], w[i])
			}
		}
	}

	_, rs := checkPorts(Options{ProcRoot: root, Ports: []int{80, 443, 25}})
	if len(rs) != 3 {
		t.Fatalf("%d results", len(rs))
	}
	if r := rs[0]; r.Name != "port.80" || r.Status != check.Info || r.Summary != "held by nginx (pid 100)" ||
		!strings.Contains(strings.Join(r.Evidence, "\n"), "0.0.0.0:80 listens, held by pid 100 (/usr/sbin/nginx): nginx: master process") {
		t.Errorf("port.80: %s", r)
	}
	if r := rs[1]; !strings.Contains(r.Summary, "HAProxy (pid 200)") || !strings.Contains(strings.Join(r.Evidence, "\n"), "cannot read") {
		t.Errorf("port.443: %s", r)
	}
	if r := rs[2]; r.Name != "port.25" || r.Status != check.Info || !strings.HasPrefix(r.Summary, "free: a standalone path can bind") {
		t.Errorf("port.25: %s", r)
	}
	_, rs = checkPorts(Options{ProcRoot: filepath.Join(root, "missing"), Ports: []int{80}})
	if rs[0].Status != check.Skipped {
		t.Errorf("no /proc: %s", rs[0])
	}
}

func TestParseProcAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:2092":                         "127.0.0.1:8338",
		"00000000:0050":                         "0.0.0.0:80",
		"00000000000000000000000001000000:1F90": "[::1]:8080",
		"B80D0120000000000000000001000000:01BB": "[2001:db8::1]:443",
	} {
		line := "0: " + in + " 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 7"
		got, err := parseProcNetTCP([]byte(line))
		if err != nil || len(got) != 1 || got[0].Addr != want {
			t.Errorf("local address %s = %+v, %v; want %s", in, got, err, want)
		}
	}
}

func TestParseProcNetUnix(t *testing.T) {
	got, err := parseProcNetUnix([]byte(procNetUnix))
	if err != nil {
		t.Fatal(err)
	}
	want := []listenSocket{{Addr: "/run/detour/http.sock", Inode: 3001}, {Addr: "@/tmp/.X11-unix/X0", Inode: 3003}}
	if !slices.Equal(got, want) {
		t.Errorf("unix: %+v\nwant %+v", got, want)
	}
	if _, err := parseProcNetUnix([]byte("0000000000000000: 00000002 00000000 00010000 0001 01 x /a.sock")); err == nil {
		t.Error("a bad inode parsed")
	}
}

// TestHoldersOfFake asks who holds an address: the address itself or the
// port's unspecified one, the master for its workers, PID 0 for a socket
// nobody visible holds, a Unix socket's path.
func TestHoldersOfFake(t *testing.T) {
	root := fakeProc(t, []fakeProcess{
		{pid: 100, ppid: 1, exe: "/usr/sbin/nginx", cmd: "nginx: master process /usr/sbin/nginx", sockets: []int{1001, 2001}},
		{pid: 101, ppid: 100, exe: "/usr/sbin/nginx", cmd: "nginx: worker process", sockets: []int{1001, 2001}},
		{pid: 200, ppid: 1, exe: "/usr/sbin/haproxy", cmd: "/usr/sbin/haproxy\x00-Ws"},
		{pid: 201, ppid: 200, exe: "/usr/sbin/haproxy", cmd: "/usr/sbin/haproxy\x00-Ws", sockets: []int{1004}},
		{pid: 300, ppid: 1, exe: "/usr/bin/python3", cmd: "python3\x00-m\x00http.server", sockets: []int{1002}},
		// A process whose command line is empty is named by its comm.
		{pid: 600, ppid: 1, exe: "/usr/local/bin/detour", sockets: []int{3001}},
	})
	if err := os.WriteFile(filepath.Join(root, "600", "comm"), []byte("detour\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// An IPv6 socket on an IPv4-mapped address, [::ffff:127.0.0.1]:8082,
	// that nobody visible holds.
	mapped := "   2: 0000000000000000FFFF00000100007F:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2003 1 0 100 0 0 10 0\n"
	if err := os.WriteFile(filepath.Join(root, "net", "tcp6"), []byte(procNetTCP6+mapped), 0o644); err != nil {
		t.Fatal(err)
	}
	nginx := "nginx: master process /usr/sbin/nginx"
	tests := []struct {
		network, address string
		want             []string // Addr pid command, one per holder
	}{
		{"tcp", "127.0.0.1:80", []string{"0.0.0.0:80 100 " + nginx, "[::]:80 100 " + nginx}},
		{"tcp", "[::1]:443", []string{"0.0.0.0:443 200 /usr/sbin/haproxy -Ws", "[::1]:443 0 "}},
		{"tcp", "127.0.0.1:18080", []string{"127.0.0.1:18080 300 python3 -m http.server"}},
		{"tcp6", "[::ffff:127.0.0.1]:18080", []string{"127.0.0.1:18080 300 python3 -m http.server"}},
		{"tcp", "127.0.0.1:8082", []string{"[::ffff:127.0.0.1]:8082 0 "}},
		{"tcp", "10.0.0.1:18080", nil},
		{"tcp", "127.0.0.1:25", nil},
		{"unix", "/run/detour/http.sock", []string{"/run/detour/http.sock 600 [detour]"}},
		{"unix", "/run/detour/../detour/http.sock", []string{"/run/detour/http.sock 600 [detour]"}},
		{"unix", "/run/other.sock", nil},
	}
	for _, tt := range tests {
		hs, err := HoldersOf(root, tt.network, tt.address)
		if err != nil {
			t.Errorf("%s %s: %v", tt.network, tt.address, err)
			continue
		}
		var got []string
		for _, h := range hs {
			got = append(got, h.Addr+" "+strconv.Itoa(h.PID)+" "+h.Command)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s %s:\ngot  %q\nwant %q", tt.network, tt.address, got, tt.want)
		}
	}
	if _, err := HoldersOf(root, "tcp", "localhost:80"); err == nil {
		t.Error("a host name was taken for an address")
	}
	if _, err := HoldersOf(filepath.Join(root, "missing"), "unix", "/run/detour/http.sock"); err == nil {
		t.Error("no /proc: no error")
	}
}

func holderEqual(a, b Holder) bool {
	return a.Port == b.Port && a.Addr == b.Addr && a.PID == b.PID && a.Command == b.Command && a.Exe == b.Exe &&
		a.Server == b.Server && slices.Equal(a.PIDs, b.PIDs)
}

func TestServerKind(t *testing.T) {
	tests := []struct{ exe, cmd, want string }{
		{"/usr/sbin/nginx", "", ServerNginx},
		{"", "nginx: worker process", ServerNginx},
		{"/usr/sbin/apache2", "/usr/sbin/apache2 -k start", ServerApache},
		{"/usr/sbin/httpd", "", ServerApache},
		{"/usr/bin/caddy", "caddy run", ServerCaddy},
		{"/usr/local/bin/traefik", "", ServerTraefik},
		{"/usr/sbin/lighttpd", "", ServerLighttpd},
		{"/usr/local/bin/detour", "detour agent", ServerDetour},
		{"/usr/bin/python3", "python3 -m http.server 80", ServerUnknown},
		{"", "/usr/sbin/haproxy -f x", ServerHAProxy},
		{"", "", ServerUnknown},
	}
	for _, tc := range tests {
		if got := serverKind(tc.exe, tc.cmd); got != tc.want {
			t.Errorf("serverKind(%q, %q) = %q, want %q", tc.exe, tc.cmd, got, tc.want)
		}
	}
}
