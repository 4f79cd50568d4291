package hostcheck

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/detour-acme/detour/internal/doctor/check"
)

// tcpListen is the kernel's TCP_LISTEN state as /proc/net/tcp prints it.
const tcpListen = "0A"

// listenSocket is one listening socket of /proc/net/tcp, tcp6 or unix.
type listenSocket struct {
	Addr  string // "0.0.0.0:80", "[::]:80"; a Unix socket's path
	Port  int    // 0 for a Unix socket
	Inode uint64
}

// parseProcNetTCP returns the listening sockets of a /proc/net/tcp or
// /proc/net/tcp6 table. The kernel prints each address as 32-bit words in
// the host's byte order (%08X), the port in host order (%04X).
func parseProcNetTCP(data []byte) ([]listenSocket, error) {
	var out []listenSocket
	sc := bufio.NewScanner(bytes.NewReader(data))
	first := true
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if first {
			first = false
			if len(f) > 0 && f[0] == "sl" {
				continue
			}
		}
		if len(f) < 10 {
			continue
		}
		if f[3] != tcpListen {
			continue
		}
		host, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			return nil, fmt.Errorf("reading local address %q: no port", f[1])
		}
		ip, err := parseProcAddr(host)
		if err != nil {
			return nil, err
		}
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("reading port %q: %w", portHex, err)
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("reading inode %q: %w", f[9], err)
		}
		out = append(out, listenSocket{
			Addr:  net.JoinHostPort(ip.String(), strconv.Itoa(int(port))),
			Port:  int(port),
			Inode: inode,
		})
	}
	return out, sc.Err()
}

// parseProcAddr decodes an address of /proc/net/tcp (8 hex digits) or
// tcp6 (32).
func parseProcAddr(s string) (netip.Addr, error) {
	b, err := hex.DecodeString(s)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.Addr{}, fmt.Errorf("reading address %q: want 8 or 32 hex digits", s)
	}
	// Each 32-bit word was printed as a number in host byte order: turn
	// it back into the bytes the kernel holds (network order).
	out := make([]byte, len(b))
	for i := 0; i < len(b); i += 4 {
		binary.NativeEndian.PutUint32(out[i:], binary.BigEndian.Uint32(b[i:]))
	}
	a, _ := netip.AddrFromSlice(out)
	return a, nil
}

// unixListening is the flags column of /proc/net/unix for a listening
// socket (__SO_ACCEPTCON).
const unixListening = "00010000"

// parseProcNetUnix returns the listening sockets of /proc/net/unix that
// have a path ("@..." for an abstract one), Addr being the path. A line
// is "Num RefCount Protocol Flags Type St Inode Path".
func parseProcNetUnix(data []byte) ([]listenSocket, error) {
	var out []listenSocket
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[3] != unixListening {
			continue // the header, an unnamed socket, or not listening
		}
		inode, err := strconv.ParseUint(f[6], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("reading inode %q: %w", f[6], err)
		}
		out = append(out, listenSocket{Addr: strings.Join(f[7:], " "), Inode: inode})
	}
	return out, sc.Err()
}

// procInfo is what /proc says about one process.
type procInfo struct {
	PID     int
	PPID    int
	Command string
	Exe     string
}

// readProc reads a process's command line ("[name]" when it has none),
// executable and parent.
func readProc(root string, pid int) procInfo {
	dir := filepath.Join(root, strconv.Itoa(pid))
	p := procInfo{PID: pid}
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		p.Command = strings.TrimSpace(strings.ReplaceAll(string(bytes.TrimRight(b, "\x00")), "\x00", " "))
	}
	if p.Command == "" {
		if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
			p.Command = "[" + strings.TrimSpace(string(b)) + "]"
		}
	}
	if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		p.Exe = strings.TrimSuffix(exe, " (deleted)")
	}
	if b, err := os.ReadFile(filepath.Join(dir, "stat")); err == nil {
		p.PPID = parseStatPPID(string(b))
	}
	return p
}

// parseStatPPID returns the parent PID from /proc/<pid>/stat: "pid (comm)
// state ppid ...", where comm may hold spaces and parentheses.
func parseStatPPID(stat string) int {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// socketHolders maps each wanted socket inode to the PIDs whose file
// descriptors point at it. Processes whose descriptors cannot be read are
// counted in hidden.
func socketHolders(root string, inodes map[uint64]bool) (map[uint64][]int, int, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: %w", root, err)
	}
	out := map[uint64][]int{}
	hidden := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		fdDir := filepath.Join(root, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			if errors.Is(err, fs.ErrPermission) {
				hidden++
			}
			continue
		}
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || !strings.HasPrefix(l, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]"), 10, 64)
			if err != nil || !inodes[ino] {
				continue
			}
			if !slices.Contains(out[ino], pid) {
				out[ino] = append(out[ino], pid)
			}
		}
	}
	return out, hidden, nil
}

// masters picks, of the processes holding one socket, the masters: those
// whose parent does not hold it, each replaced by its parent for as long
// as that parent runs the same executable (HAProxy's master in
// master-worker mode leaves the listeners to its worker). PID 1 is left
// out when others hold the socket too: systemd holds the sockets of the
// services it socket-activates, and the service is the answer.
func masters(root string, pids []int) []procInfo {
	if len(pids) > 1 {
		pids = slices.DeleteFunc(slices.Clone(pids), func(p int) bool { return p == 1 })
	}
	info := map[int]procInfo{}
	for _, pid := range pids {
		info[pid] = readProc(root, pid)
	}
	var out []procInfo
	for _, pid := range slices.Sorted(slices.Values(pids)) {
		p := info[pid]
		if _, held := info[p.PPID]; held && p.PPID != pid {
			continue
		}
		for range 8 { // a bound against a cycle in a crafted tree
			if p.PPID <= 1 || p.Exe == "" {
				break
			}
			parent := readProc(root, p.PPID)
			if parent.Exe != p.Exe {
				break
			}
			p = parent
		}
		if !slices.ContainsFunc(out, func(q procInfo) bool { return q.PID == p.PID }) {
			out = append(out, p)
		}
	}
	return out
}

// readHolders finds who listens on each port. Every port gets an entry
// (empty when nothing listens); a socket whose process cannot be seen gets
// a Holder with PID 0.
func readHolders(root string, ports []int) (map[int][]Holder, int, error) {
	holders := map[int][]Holder{}
	want := map[int]bool{}
	for _, p := range ports {
		holders[p] = []Holder{}
		want[p] = true
	}
	socks, err := readTCPSockets(root)
	if err != nil {
		return holders, 0, err
	}
	socks = slices.DeleteFunc(socks, func(s listenSocket) bool { return !want[s.Port] })
	hs, hidden, err := socketsHolders(root, socks)
	if err != nil {
		return holders, hidden, err
	}
	for _, h := range hs {
		holders[h.Port] = append(holders[h.Port], h)
	}
	return holders, hidden, nil
}

// HoldersOf returns who listens on address, from the procfs at root
// ("/proc"), in the reading thread's network namespace (NetDir). For
// network "unix" address is a socket path; for any other ("tcp", "tcp4",
// "tcp6") it is host:port, and a socket on the port's unspecified address
// (0.0.0.0 or ::) counts too: it holds every address. The holders are
// those Check reports for a port: for each socket the server's master
// process (the workers that also hold it are in PIDs), or one Holder with
// PID 0 when no process holding it can be seen (reading another user's
// descriptors takes root). Nothing listening there: none, and no error.
func HoldersOf(root, network, address string) ([]Holder, error) {
	var socks []listenSocket
	switch network {
	case "unix":
		file := filepath.Join(NetDir(root), "unix")
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("reading listening sockets: %w", err)
		}
		ss, err := parseProcNetUnix(b)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", file, err)
		}
		for _, s := range ss {
			if filepath.Clean(s.Addr) == filepath.Clean(address) {
				socks = append(socks, s)
			}
		}
	default:
		want, err := netip.ParseAddrPort(address)
		if err != nil {
			return nil, fmt.Errorf("finding who holds %s: %w", address, err)
		}
		ss, err := readTCPSockets(root)
		if err != nil {
			return nil, err
		}
		for _, s := range ss {
			got, err := netip.ParseAddrPort(s.Addr)
			if err != nil || got.Port() != want.Port() {
				continue
			}
			if a := got.Addr().Unmap(); a == want.Addr().Unmap() || a.IsUnspecified() {
				socks = append(socks, s)
			}
		}
	}
	hs, _, err := socketsHolders(root, socks)
	return hs, err
}

// readTCPSockets returns root's listening TCP sockets, IPv4 and IPv6 (a
// kernel without IPv6 has no tcp6 table).
func readTCPSockets(root string) ([]listenSocket, error) {
	var socks []listenSocket
	var errs []error
	for _, name := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(filepath.Join(NetDir(root), name))
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) || name == "tcp" {
				errs = append(errs, fmt.Errorf("reading listening sockets: %w", err))
			}
			continue
		}
		ss, err := parseProcNetTCP(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("reading %s: %w", filepath.Join(NetDir(root), name), err))
			continue
		}
		socks = append(socks, ss...)
	}
	return socks, errors.Join(errs...)
}

// socketsHolders returns who holds each of socks, in their order: a
// Holder for each master process (see masters), or one with PID 0 when no
// process holding the socket can be seen; and how many processes'
// descriptors could not be read.
func socketsHolders(root string, socks []listenSocket) ([]Holder, int, error) {
	if len(socks) == 0 {
		return nil, 0, nil
	}
	inodes := map[uint64]bool{}
	for _, s := range socks {
		inodes[s.Inode] = true
	}
	byInode, hidden, err := socketHolders(root, inodes)
	if err != nil {
		return nil, hidden, err
	}
	var out []Holder
	for _, s := range socks {
		pids := byInode[s.Inode]
		if len(pids) == 0 {
			out = append(out, Holder{Port: s.Port, Addr: s.Addr, Server: ServerUnknown})
			continue
		}
		for _, m := range masters(root, pids) {
			out = append(out, Holder{
				Port: s.Port, Addr: s.Addr, PID: m.PID, Command: m.Command, Exe: m.Exe,
				Server: serverKind(m.Exe, m.Command), PIDs: slices.Sorted(slices.Values(pids)),
			})
		}
	}
	return out, hidden, nil
}

// serverKind names the server a process runs, from its executable, else
// its command line (nginx renames its processes "nginx: master process
// ...").
func serverKind(exe, command string) string {
	if k := kindOf(filepath.Base(exe)); k != "" && exe != "" {
		return k
	}
	cmd := strings.TrimPrefix(command, "nginx: master process ")
	if strings.HasPrefix(command, "nginx:") {
		return ServerNginx
	}
	if f := strings.Fields(cmd); len(f) > 0 {
		if k := kindOf(filepath.Base(f[0])); k != "" {
			return k
		}
	}
	return ServerUnknown
}

func kindOf(base string) string {
	switch base {
	case "nginx", "openresty":
		return ServerNginx
	case "apache2", "httpd", "apache":
		return ServerApache
	case "haproxy":
		return ServerHAProxy
	case "caddy":
		return ServerCaddy
	case "traefik":
		return ServerTraefik
	case "lighttpd":
		return ServerLighttpd
	case "detour":
		return ServerDetour
	}
	return ""
}

// serverTitle is how a server kind is named to people.
func serverTitle(kind string) string {
	switch kind {
	case ServerNginx:
		return "nginx"
	case ServerApache:
		return "Apache"
	case ServerHAProxy:
		return "HAProxy"
	case ServerCaddy:
		return "Caddy"
	case ServerTraefik:
		return "Traefik"
	case ServerLighttpd:
		return "lighttpd"
	case ServerDetour:
		return "Detour"
	}
	return "an unidentified program"
}

// checkPorts reports who holds each port: "port.<N>".
func checkPorts(opts Options) (map[int][]Holder, []check.Result) {
	holders, hidden, err := readHolders(opts.ProcRoot, opts.Ports)
	var results []check.Result
	for _, port := range opts.Ports {
		name := "port." + strconv.Itoa(port)
		if err != nil {
			r := check.New(name, "", check.Skipped, "could not read the listening sockets")
			r.Add("%v", err)
			results = append(results, r)
			continue
		}
		hs := holders[port]
		if len(hs) == 0 {
			r := check.New(name, "", check.Info, fmt.Sprintf("free: a standalone path can bind port %d", port))
			r.Add("no socket listens on TCP port %d in %s/net/tcp or tcp6", port, opts.ProcRoot)
			results = append(results, r)
			continue
		}
		var who []string
		for _, h := range hs {
			w := serverTitle(h.Server)
			if h.PID != 0 {
				w += fmt.Sprintf(" (pid %d)", h.PID)
			}
			if !slices.Contains(who, w) {
				who = append(who, w)
			}
		}
		r := check.New(name, "", check.Info, fmt.Sprintf("held by %s", strings.Join(who, ", ")))
		for _, h := range hs {
			if h.PID == 0 {
				r.Add("%s listens, held by a process whose descriptors this user cannot read (run doctor as root to see it)", h.Addr)
				continue
			}
			r.Add("%s listens, held by pid %d (%s): %s", h.Addr, h.PID, h.Exe, h.Command)
			if len(h.PIDs) > 1 || (len(h.PIDs) == 1 && h.PIDs[0] != h.PID) {
				r.Add("  processes holding the socket: %s", joinInts(h.PIDs))
			}
		}
		if hidden > 0 {
			r.Add("%d processes' descriptors could not be read", hidden)
		}
		results = append(results, r)
	}
	return holders, results
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// NetDir is the directory of root's network tables. For the real /proc it
// is /proc/thread-self/net, the tables of the reading thread's network
// namespace: /proc/net follows the process's main thread, which a
// goroutine locked to it may have moved into another namespace.
func NetDir(root string) string {
	if root == "/proc" {
		if _, err := os.Stat("/proc/thread-self/net"); err == nil {
			return "/proc/thread-self/net"
		}
	}
	return filepath.Join(root, "net")
}
