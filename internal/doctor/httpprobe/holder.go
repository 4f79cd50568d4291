package httpprobe

// Who holds a listening socket: hostcheck reads it from /proc. Reading
// other users' /proc/PID/fd needs root; without it the holder is unknown
// and the caller says so.

import (
	"fmt"
	"path/filepath"
	"slices"
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

// procRoot is where /proc is.
const procRoot = "/proc"

// holdersOf returns the processes listening on address (network "tcp":
// host:port; "unix": a socket path), each once. A TCP listener on the
// unspecified address of the port counts: it holds every address. Sockets
// whose process cannot be seen are left out.
func holdersOf(network, address string) ([]Holder, error) {
	hs, err := hostcheck.HoldersOf(procRoot, network, address)
	return processes(hs), err
}

// processes returns the processes of hs, each once (a server listening on
// both 0.0.0.0 and :: holds two sockets), leaving out the sockets whose
// process cannot be seen.
func processes(hs []hostcheck.Holder) []Holder {
	var out []Holder
	for _, h := range hs {
		if h.PID == 0 || slices.ContainsFunc(out, func(o Holder) bool { return o.PID == h.PID }) {
			continue
		}
		out = append(out, Holder{PID: h.PID, Command: h.Command, Exe: h.Exe})
	}
	return out
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
