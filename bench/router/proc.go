package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process started in its own process group, so that it and
// everything it forks (nginx workers, a shell's children) can be signalled
// together and are not hit by the terminal's Ctrl-C before the harness has
// had a chance to stop them in order.
type proc struct {
	name   string
	cmd    *exec.Cmd
	output *tailBuffer
	done   chan struct{} // closed once the process has been waited for
	err    error         // Wait's result; valid after done is closed
}

// startProc starts argv[0] with argv[1:] in dir, with env (nil: the
// harness's own). Its combined output is kept (the last 64 KiB) for error
// messages.
func startProc(name string, argv []string, dir string, env []string) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	out := &tailBuffer{max: 64 << 10}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If the harness dies without cleaning up, the leader goes too.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, argv[0], err)
	}
	p := &proc{name: name, cmd: cmd, output: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid returns the process id of the group leader.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has already exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the whole process group: SIGTERM, then SIGKILL after a grace
// period. It is safe to call more than once.
func (p *proc) stop() {
	pgid := p.pid()
	if !p.exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(3 * time.Second):
		}
	}
	// Stragglers (workers whose master was killed) and a leader that
	// ignored SIGTERM.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
	}
}

// tailBuffer is an io.Writer that keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

// Write appends b, dropping the oldest bytes beyond the limit.
func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

// String returns what is kept.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// lastLine returns the last non-empty line of s, for short error messages.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// procStat holds the fields of /proc/<pid>/stat the harness uses, times in
// clock ticks (proc(5)).
type procStat struct {
	pid, ppid                    int
	comm                         string
	utime, stime, cutime, cstime uint64
}

// parseProcStat parses the contents of /proc/<pid>/stat. The command name
// (field 2) is in parentheses and may itself contain spaces and
// parentheses, so the fields after it are found from the last ')'.
func parseProcStat(b []byte) (procStat, error) {
	var s procStat
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return s, errors.New("parsing /proc stat: no (comm) field")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:open])))
	if err != nil {
		return s, fmt.Errorf("parsing /proc stat pid: %w", err)
	}
	s.pid = pid
	s.comm = string(b[open+1 : closing])
	// rest[0] is field 3 (state); field n is rest[n-3].
	rest := strings.Fields(string(b[closing+1:]))
	if len(rest) < 15 {
		return s, fmt.Errorf("parsing /proc stat: %d fields after comm, want at least 15", len(rest))
	}
	if s.ppid, err = strconv.Atoi(rest[1]); err != nil {
		return s, fmt.Errorf("parsing /proc stat ppid: %w", err)
	}
	for i, dst := range []*uint64{&s.utime, &s.stime, &s.cutime, &s.cstime} {
		v, err := strconv.ParseUint(rest[11+i], 10, 64)
		if err != nil {
			return s, fmt.Errorf("parsing /proc stat field %d: %w", 14+i, err)
		}
		*dst = v
	}
	return s, nil
}

// cpuTicks is the CPU one process has used, counting its reaped children
// (cutime/cstime) so that a worker that exited during a run is not lost.
func (s procStat) cpuTicks() uint64 { return s.utime + s.stime + s.cutime + s.cstime }

// treeCPUTicks returns the user+system clock ticks used by root and every
// live descendant of it, read from /proc.
func treeCPUTicks(root int) (uint64, error) {
	stats, err := readAllStats("/proc")
	if err != nil {
		return 0, err
	}
	return sumTree(stats, root)
}

// readAllStats reads <procDir>/*/stat. Processes that vanish while it reads
// are skipped.
func readAllStats(procDir string) (map[int]procStat, error) {
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", procDir, err)
	}
	stats := make(map[int]procStat, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procDir, e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		s, err := parseProcStat(b)
		if err != nil {
			return nil, fmt.Errorf("reading process %d: %w", pid, err)
		}
		stats[pid] = s
	}
	return stats, nil
}

// sumTree adds up cpuTicks over root and its descendants in stats.
func sumTree(stats map[int]procStat, root int) (uint64, error) {
	if _, ok := stats[root]; !ok {
		return 0, fmt.Errorf("process %d is gone", root)
	}
	children := make(map[int][]int)
	for pid, s := range stats {
		children[s.ppid] = append(children[s.ppid], pid)
	}
	var total uint64
	queue := []int{root}
	seen := map[int]bool{}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		total += stats[pid].cpuTicks()
		queue = append(queue, children[pid]...)
	}
	return total, nil
}

// kthreadd is the pid of the parent of every kernel thread; the CPU of its
// tree is the kernel's own work (ksoftirqd processing loopback packets,
// kworkers), which a benchmark on loopback causes and is not load from
// elsewhere.
const kthreadd = 2

// clockTicks returns sysconf(_SC_CLK_TCK), asked of getconf(1) because Go
// has no sysconf; it falls back to 100, the value on every Linux port.
func clockTicks() (int, bool) {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && v > 0 {
			return v, true
		}
	}
	return 100, false
}

// machineCPU is the first line of /proc/stat: CPU time of the whole
// machine, in clock ticks, summed over CPUs.
type machineCPU struct {
	busy  uint64 // user+nice+system+irq+softirq+steal
	irq   uint64 // irq+softirq: not charged to any process
	steal uint64 // time the hypervisor ran someone else
}

// parseMachineCPU parses the aggregate "cpu" line of /proc/stat (proc(5)):
// user nice system idle iowait irq softirq steal [guest guest_nice]. Guest
// time is already counted in user and nice.
func parseMachineCPU(b []byte) (machineCPU, error) {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return machineCPU{}, fmt.Errorf("parsing /proc/stat: first line %q is not the cpu total", line)
	}
	var v [8]uint64
	for i := range v {
		n, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return machineCPU{}, fmt.Errorf("parsing /proc/stat cpu field %d: %w", i+1, err)
		}
		v[i] = n
	}
	return machineCPU{busy: v[0] + v[1] + v[2] + v[5] + v[6] + v[7], irq: v[5] + v[6], steal: v[7]}, nil
}

// readMachineCPU reads /proc/stat.
func readMachineCPU() (machineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, fmt.Errorf("reading /proc/stat: %w", err)
	}
	return parseMachineCPU(b)
}
