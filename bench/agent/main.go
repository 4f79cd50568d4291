// Command agent measures Detour's renewal decision at scale, as section 4
// of /work/shared/BENCHMARKS.md asks: a synthetic state directory of N
// certificates, none due; how long `detour renew` takes to decide that
// nothing is due (and its peak RSS); and a running `detour run` agent's
// resident memory, start-up time and CPU while idle.
//
// Run from the repository root:
//
//	go run ./bench/agent                # 10,000 certificates, 10 s idle
//	go run ./bench/agent -n 1000 -idle 3s
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Flag names.
const (
	flagN      = "n"
	flagIdle   = "idle"
	flagRuns   = "runs"
	flagOutDir = "out-dir"
	flagBin    = "bin"
)

// report is what one run of the harness measured.
type report struct {
	Time         time.Time `json:"time"`
	Certificates int       `json:"certificates"`
	GoVersion    string    `json:"go_version"`
	CPUs         int       `json:"cpus"`
	SynthSeconds float64   `json:"synth_seconds"`

	RenewSeconds       []float64 `json:"renew_seconds"`
	RenewMedianSeconds float64   `json:"renew_median_seconds"`
	RenewMaxRSSMB      float64   `json:"renew_max_rss_mb"`

	AgentStartSeconds float64 `json:"agent_start_seconds"`
	AgentRSSMB        float64 `json:"agent_rss_mb"`
	AgentPeakRSSMB    float64 `json:"agent_peak_rss_mb"`
	IdleSeconds       float64 `json:"idle_seconds"`
	IdleCPUSeconds    float64 `json:"idle_cpu_seconds"`
	IdleCPUPercent    float64 `json:"idle_cpu_percent"`
	IdleWakeups       int64   `json:"idle_context_switches"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/agent:", err)
		os.Exit(1)
	}
}

func run() error {
	n := flag.Int(flagN, 10000, "certificates in the synthetic state directory")
	idle := flag.Duration(flagIdle, 10*time.Second, "how long to watch the idle agent")
	runs := flag.Int(flagRuns, 5, "`detour renew` runs (the median is reported)")
	outDir := flag.String(flagOutDir, "", "directory for the JSON report (default bench/results of the module)")
	bin := flag.String(flagBin, "", "detour binary (default: built from ./cmd/detour)")
	flag.Parse()

	root, err := moduleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "detour-agent-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if *bin == "" {
		*bin = filepath.Join(tmp, "detour")
		build := exec.Command("go", "build", "-o", *bin, "./cmd/detour")
		build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building detour: %w", err)
		}
	}
	rep := report{Time: time.Now().UTC(), Certificates: *n, GoVersion: runtime.Version(), CPUs: runtime.NumCPU()}
	state := filepath.Join(tmp, "state")
	begin := time.Now()
	if _, err := synthesize(state, *n, time.Now()); err != nil {
		return fmt.Errorf("writing the synthetic store: %w", err)
	}
	rep.SynthSeconds = time.Since(begin).Seconds()
	fmt.Printf("synthetic store: %d certificates in %.1fs\n", *n, rep.SynthSeconds)
	cfg := filepath.Join(tmp, "detour.toml")
	if err := os.WriteFile(cfg, nil, 0o600); err != nil {
		return err
	}
	base := []string{"--config", cfg, "--state-dir", state}

	// The no-op decision: `detour renew` with nothing due.
	want := fmt.Sprintf("%d certificate(s) not due yet", *n)
	for i := range *runs {
		cmd := exec.Command(*bin, append(base, "renew")...)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		t0 := time.Now()
		err := cmd.Run()
		el := time.Since(t0).Seconds()
		if err != nil || !strings.Contains(out.String(), want) {
			return fmt.Errorf("detour renew (run %d): %v\n%s", i+1, err, out.String())
		}
		rep.RenewSeconds = append(rep.RenewSeconds, el)
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			rep.RenewMaxRSSMB = max(rep.RenewMaxRSSMB, float64(ru.Maxrss)/1024)
		}
	}
	sorted := slices.Clone(rep.RenewSeconds)
	slices.Sort(sorted)
	rep.RenewMedianSeconds = sorted[len(sorted)/2]

	// The agent: start-up, then idle.
	if err := measureAgent(*bin, base, *idle, &rep); err != nil {
		return err
	}
	print(rep)
	if *outDir == "" {
		*outDir = filepath.Join(root, "bench", "results")
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(rep, "", "  ")
	out := filepath.Join(*outDir, "agent-"+rep.Time.Format("20060102T150405Z")+".json")
	if err := os.WriteFile(out, append(data, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Println("report:", out)
	return nil
}

// measureAgent starts `detour run`, waits for it to have scheduled every
// certificate, then samples its memory and CPU over idle.
func measureAgent(bin string, base []string, idle time.Duration, rep *report) error {
	ctx, cancel := context.WithTimeout(context.Background(), idle+5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(base, "run")...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	started := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			if !sent && strings.Contains(sc.Text(), "agent started") {
				started <- nil
				sent = true
			}
			if strings.Contains(sc.Text(), "level=ERROR") || strings.Contains(sc.Text(), "msg=renewing") {
				fmt.Fprintln(os.Stderr, "unexpected agent log:", sc.Text())
			}
		}
		if !sent {
			started <- errors.New("the agent exited before it started")
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case err := <-started:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return errors.New("the agent did not start within the time limit")
	}
	rep.AgentStartSeconds = time.Since(t0).Seconds()
	// Let the start-up garbage be collected before measuring the steady state.
	time.Sleep(2 * time.Second)
	pid := cmd.Process.Pid
	cpu0, sw0, err := procCPU(pid)
	if err != nil {
		return err
	}
	w0 := time.Now()
	time.Sleep(idle)
	cpu1, sw1, err := procCPU(pid)
	if err != nil {
		return err
	}
	rep.IdleSeconds = time.Since(w0).Seconds()
	rep.IdleCPUSeconds = cpu1 - cpu0
	rep.IdleCPUPercent = 100 * rep.IdleCPUSeconds / rep.IdleSeconds
	rep.IdleWakeups = sw1 - sw0
	rss, hwm, err := procMem(pid)
	if err != nil {
		return err
	}
	rep.AgentRSSMB, rep.AgentPeakRSSMB = rss, hwm
	return nil
}

// procCPU returns the user+system CPU seconds of pid and the voluntary +
// involuntary context switches of all its threads (from /proc; Linux only).
func procCPU(pid int) (float64, int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name (which may hold spaces): state is
	// field 3; utime and stime are fields 14 and 15.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	const hz = 100 // USER_HZ on Linux
	// Context switches are per thread: sum over every thread.
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
	return rss, hwm, nil
}

func print(r report) {
	fmt.Printf("\n%d certificates, none due (%s, %d CPUs)\n", r.Certificates, r.GoVersion, r.CPUs)
	fmt.Printf("  detour renew, deciding nothing is due: median %.3fs over %d runs (%v), peak RSS %.1f MB   [target < 1 s; certbot 2.1: 53 s at 10,000]\n",
		r.RenewMedianSeconds, len(r.RenewSeconds), fmtSeconds(r.RenewSeconds), r.RenewMaxRSSMB)
	fmt.Printf("  detour run: started (every certificate scheduled) in %.2fs; RSS %.1f MB (peak %.1f MB)   [target < 100 MB]\n",
		r.AgentStartSeconds, r.AgentRSSMB, r.AgentPeakRSSMB)
	fmt.Printf("  detour run idle: %.3f CPU-seconds over %.1fs = %.3f%% of one CPU, %d context switches   [target: about zero]\n",
		r.IdleCPUSeconds, r.IdleSeconds, r.IdleCPUPercent, r.IdleWakeups)
}

func fmtSeconds(s []float64) string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = fmt.Sprintf("%.3f", v)
	}
	return strings.Join(out, " ")
}

// moduleRoot finds the directory of go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root (run from the repository): %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the detour module; run from the repository checkout")
	}
	return filepath.Dir(mod), nil
}
