package httpprobe

// Who holds a listening socket, from /proc: the socket's inode from
// /proc/net/{tcp,tcp6,unix}, then the process with a descriptor for it.
// Reading other users' /proc/PID/fd needs root; without it the holder is
// unknown and the caller says so.

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/detour-acme/detour/internal/doctor/hostcheck"
)

// Holder is a process holding a listening socket.
type Holder struct {
	PID     int    `json:"pid"`
	Command string `json:"command"` // its command line, arguments joined by spaces
	Exe     string `json:"exe,omitempty"`
}

func (h Holder) String() string {
	return fmt.Sprintf("pid %d (%s)", h.PID, h.Command)
}

// procRoot is where /proc is; tests replace it.
var procRoot = "/proc"

// holdersOf returns the processes listening on address (network "tcp":
// host:port; "unix": a socket path). A TCP listener on the unspecified
// address of the port counts: it holds every address.
func holdersOf(network, address string) ([]Holder, error) {
	var inodes map[string]bool
	var err error
	switch network {
	case "unix":
		inodes, err = unixListeners(address)
	default:
		inodes, err = tcpListeners(address)
	}
	if err != nil {
		return nil, err
	}
	if len(inodes) == 0 {
		return nil, nil
	}
	return socketOwners(inodes)
}

// tcpListeners returns the inodes of the TCP sockets listening on
// address's port at its address or the unspecified one.
func tcpListeners(address string) (map[string]bool, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("finding who holds %s: %w", address, err)
	}
	out := map[string]bool{}
	var errs []error
	for _, f := range []string{"tcp", "tcp6"} {
		err := scanLines(filepath.Join(hostcheck.NetDir(procRoot), f), func(fields []string) {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(fields) < 10 || fields[3] != "0A" { // TCP_LISTEN
				return
			}
			local, ok := parseProcAddr(fields[1])
			if !ok || local.Port() != ap.Port() {
				return
			}
			a := local.Addr().Unmap()
			if a == ap.Addr().Unmap() || a.IsUnspecified() {
				out[fields[9]] = true
			}
		})
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

// unixListeners returns the inodes of the Unix sockets listening at path.
func unixListeners(path string) (map[string]bool, error) {
	out := map[string]bool{}
	err := scanLines(filepath.Join(hostcheck.NetDir(procRoot), "unix"), func(fields []string) {
		// Num RefCount Protocol Flags Type St Inode Path
		if len(fields) < 8 || fields[3] != "00010000" { // __SO_ACCEPTCON: listening
			return
		}
		if filepath.Clean(fields[7]) == filepath.Clean(path) {
			out[fields[6]] = true
		}
	})
	return out, err
}

// scanLines calls f with the fields of each line of file after the header.
func scanLines(file string, f func([]string)) error {
	fh, err := os.Open(file)
	if err != nil {
		return err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for first := true; sc.Scan(); first = false {
		if !first {
			f(strings.Fields(sc.Text()))
		}
	}
	return sc.Err()
}

// parseProcAddr parses an address of /proc/net/tcp{,6}: hex address words
// in host byte order (little-endian here), a colon, the hex port.
func parseProcAddr(s string) (netip.AddrPort, bool) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	b, err := hex.DecodeString(hexAddr)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.AddrPort{}, false
	}
	for i := 0; i < len(b); i += 4 { // each 32-bit word is little-endian
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a, uint16(port)), true
}

// socketOwners returns the processes with a descriptor for one of inodes.
func socketOwners(inodes map[string]bool) ([]Holder, error) {
	pids, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	var out []Holder
	for _, p := range pids {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join(procRoot, p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // gone, or not ours to read
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			inode, ok := strings.CutPrefix(link, "socket:[")
			if !ok || !inodes[strings.TrimSuffix(inode, "]")] {
				continue
			}
			out = append(out, processInfo(pid))
			break
		}
	}
	return out, nil
}

// processInfo reads a process's command line and executable.
func processInfo(pid int) Holder {
	h := Holder{PID: pid}
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		h.Command = strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
	}
	if h.Command == "" {
		if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
			h.Command = "[" + strings.TrimSpace(string(b)) + "]"
		}
	}
	h.Exe, _ = os.Readlink(filepath.Join(dir, "exe"))
	return h
}

// isDetour reports whether h looks like Detour itself.
func (h Holder) isDetour() bool {
	name := filepath.Base(strings.TrimSuffix(h.Exe, " (deleted)"))
	if name == "detour" {
		return true
	}
	argv0, _, _ := strings.Cut(h.Command, " ")
	return filepath.Base(argv0) == "detour"
}
