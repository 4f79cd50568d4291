package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// fleetConfig is what a node's configuration file says.
type fleetConfig struct {
	StateDir  string
	Endpoints []string
	KeyFile   string
	Prefix    string
	Node      string
	// CA, Roots, WebRoot and Domain, when CA is set, configure a
	// certificate "fleet" for Domain through a webroot path in WebRoot,
	// from the sandbox CA.
	CA, Roots, WebRoot, Domain string
}

func (c fleetConfig) write(file string) error {
	var eps []string
	for _, e := range c.Endpoints {
		eps = append(eps, strconv.Quote(e))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir = %q\n", c.StateDir)
	if c.CA != "" {
		fmt.Fprintf(&b, "email = \"bench@detour.test\"\nagree_tos = true\ndefault_ca = \"sandbox\"\n\n[ca.sandbox]\ndirectory = %q\nroot_bundle = %q\n", c.CA, c.Roots)
	}
	fmt.Fprintf(&b, "\n[store]\nkind = \"etcd\"\nendpoints = [%s]\nencryption_key_file = %q\nfleet = \"bench\"\nnode = %q\nprefix = %q\n",
		strings.Join(eps, ", "), c.KeyFile, c.Node, c.Prefix)
	if c.CA != "" {
		fmt.Fprintf(&b, "\n[path.web]\nkind = \"webroot\"\nroot = %q\n\n[[certificate]]\nname = \"fleet\"\ndomains = [%q]\npaths = [\"web\"]\n",
			c.WebRoot, c.Domain)
	}
	return os.WriteFile(file, []byte(b.String()), 0o600)
}

// node is a `detour run` process.
type node struct {
	name    string
	cmd     *exec.Cmd
	logFile string
	metrics string // host:port of its metrics listener
	done    chan error

	mu      sync.Mutex
	started bool // "agent started" was logged
	errs    []string
	relists int // the live-pointer watch given up as dead (etcdstore.WatchLive)
}

// startNode starts `detour run` with cfg; extra are global flags (the
// self-check's resolver and ports). Its log goes to logFile.
func startNode(bin, name, cfg, logFile string, extra []string) (*node, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := append([]string{"--config", cfg}, extra...)
	args = append(args, "run", "--metrics-listen", addr)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	n := &node{name: name, cmd: cmd, logFile: logFile, metrics: addr, done: make(chan error, 1)}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		defer f.Close()
		sc := bufio.NewScanner(io.TeeReader(stderr, f))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			n.mu.Lock()
			if strings.Contains(line, "agent started") {
				n.started = true
			}
			if strings.Contains(line, "watching the live certificates: etcd does not answer") {
				n.relists++
			}
			if strings.Contains(line, "level=ERROR") && len(n.errs) < 5 {
				n.errs = append(n.errs, line)
			}
			n.mu.Unlock()
		}
		_, _ = io.Copy(f, stderr)
	}()
	go func() {
		<-scanned
		n.done <- cmd.Wait()
	}()
	return n, nil
}

// waitStarted waits until the node logged "agent started".
func (n *node) waitStarted(ctx context.Context) error {
	for {
		n.mu.Lock()
		ok := n.started
		n.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case err := <-n.done:
			n.done <- err
			return fmt.Errorf("node %s exited (%v); its log: %s", n.name, err, n.logFile)
		case <-ctx.Done():
			return fmt.Errorf("node %s did not start: %w; its log: %s", n.name, ctx.Err(), n.logFile)
		case <-time.After(20 * time.Millisecond): // polling the log scanner's flag
		}
	}
}

// relistCount returns how often the node's watch of the live pointers was
// given up as dead (logged as etcd not answering).
func (n *node) relistCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.relists
}

// errorLines returns the first ERROR lines the node logged.
func (n *node) errorLines() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.errs...)
}

// stop sends SIGTERM and waits for the process.
func (n *node) stop() error {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.done:
		n.done <- err
		return err
	case <-time.After(30 * time.Second):
		_ = n.cmd.Process.Kill()
		return fmt.Errorf("node %s did not stop within 30s", n.name)
	}
}

// memory is a node's memory: resident set from /proc, and the Go
// runtime's own figures from its metrics endpoint.
type memory struct {
	RSSMB      float64 `json:"rss_mb"`
	PeakRSSMB  float64 `json:"peak_rss_mb"`
	HeapInuse  float64 `json:"go_heap_inuse_mb"`
	HeapAlloc  float64 `json:"go_heap_alloc_mb"`
	GoSysMB    float64 `json:"go_sys_mb"`
	Goroutines float64 `json:"goroutines"`
}

func (n *node) memory() (memory, error) {
	var m memory
	var err error
	if m.RSSMB, m.PeakRSSMB, err = procMem(n.cmd.Process.Pid); err != nil {
		return m, err
	}
	if n.metrics == "" {
		return m, nil
	}
	resp, err := http.Get("http://" + n.metrics + "/metrics")
	if err != nil {
		return m, fmt.Errorf("node %s metrics: %w", n.name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "go_memstats_heap_inuse_bytes":
			m.HeapInuse = v / (1 << 20)
		case "go_memstats_heap_alloc_bytes":
			m.HeapAlloc = v / (1 << 20)
		case "go_memstats_sys_bytes":
			m.GoSysMB = v / (1 << 20)
		case "go_goroutines":
			m.Goroutines = v
		}
	}
	return m, sc.Err()
}

// procCPU returns the user+system CPU seconds of pid and the voluntary +
// involuntary context switches of all its threads (Linux /proc), as
// bench/agent reads them.
func procCPU(pid int) (float64, int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	const hz = 100 // USER_HZ on Linux
	var switches int64
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		status, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && strings.HasSuffix(f[0], "ctxt_switches:") {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				switches += v
			}
		}
	}
	return (ut + st) / hz, switches, nil
}

// procMem returns VmRSS and VmHWM of pid in MB.
func procMem(pid int) (rss, hwm float64, err error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		}
	}
	if rss == 0 {
		return 0, 0, errors.New("no VmRSS in /proc/PID/status")
	}
	return rss, hwm, nil
}
