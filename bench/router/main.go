// Command router measures TLS front proxies on loopback as section 1 of
// /work/shared/BENCHMARKS.md describes: an nginx HTTPS backend (TLS 1.3,
// ECDSA P-256, no session resumption), fronts that pass TLS through while
// routing the tls-alpn-01 ALPN protocol "acme-tls/1" (RFC 8737 section 3)
// to a stub, and wrk as the client. For each front and workload it reports
// the front's own CPU per unit of work next to HAProxy's from the same run.
//
// Run from the repository root:
//
//	go run ./bench/router --quick
//
// See README.md in this directory for the flags and how to read the output.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Flag names.
const (
	flagFronts       = "fronts"
	flagWorkloads    = "workloads"
	flagDuration     = "duration"
	flagQuick        = "quick"
	flagReps         = "reps"
	flagThreads      = "threads"
	flagConnsNew     = "conns-new"
	flagConnsKeep    = "conns-keepalive"
	flagConnsBulk    = "conns-bulk"
	flagPause        = "pause"
	flagDetourCmd    = "detour-cmd"
	flagDetourBCmd   = "detour-b-cmd"
	flagOutDir       = "out-dir"
	flagNginx        = "nginx"
	flagHAProxy      = "haproxy"
	flagWrk          = "wrk"
	flagStreamModule = "nginx-stream-module"
	flagMaxTime      = "max-time"
	flagFrontWorkers = "front-workers"
)

const (
	defaultDetourCmd    = "detour router --listen {{front}} --backend {{backend}}"
	defaultStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"
	quickDuration       = 2 * time.Second
	bulkSize            = 1 << 20
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if len(os.Args) > 1 && os.Args[1] == naiveFrontCommand {
		err = runNaiveFront(ctx, os.Args[2:])
	} else {
		err = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	interrupted := ctx.Err() != nil
	stop()
	switch {
	case err == nil:
	case interrupted && errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "router bench: interrupted; processes stopped and temp dir removed")
		os.Exit(130)
	default:
		fmt.Fprintf(os.Stderr, "router bench: %v\n", err)
		os.Exit(1)
	}
}

// options holds the parsed flags.
type options struct {
	fronts, workloads          []string
	duration, pause, maxTime   time.Duration
	quick                      bool
	reps, threads              int
	connsNew, connsKeep, bulkC int
	detourCmd, outDir          string
	detourBCmd                 string
	nginx, haproxy, wrk        string
	streamModule               string
	frontWorkers               int
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fronts := fs.String(flagFronts, strings.Join(allFronts, ","), "comma-separated fronts to measure: "+strings.Join(allFronts, ", "))
	works := fs.String(flagWorkloads, strings.Join([]string{workNew, workKeepAlive, workBulk}, ","), "comma-separated workloads: new, keepalive, bulk")
	fs.DurationVar(&o.duration, flagDuration, 10*time.Second, "length of each wrk run (whole seconds)")
	fs.BoolVar(&o.quick, flagQuick, false, "smoke test: 2 s runs (unless --duration is given)")
	fs.IntVar(&o.reps, flagReps, 3, "repetitions; fronts are interleaved within each and medians reported")
	fs.IntVar(&o.threads, flagThreads, 2, "wrk threads")
	fs.IntVar(&o.connsNew, flagConnsNew, 32, "wrk connections for the new-connection workload")
	fs.IntVar(&o.connsKeep, flagConnsKeep, 32, "wrk connections for the keep-alive workload")
	fs.IntVar(&o.bulkC, flagConnsBulk, 8, "wrk connections for the 1 MiB bulk workload")
	fs.DurationVar(&o.pause, flagPause, 500*time.Millisecond, "idle time between runs")
	fs.StringVar(&o.detourCmd, flagDetourCmd, defaultDetourCmd, "command of the detour front; placeholders {{front}}, {{backend}}, {{stub}}, {{detour}}; a first word \"detour\" is the binary built from ./cmd/detour")
	fs.StringVar(&o.detourBCmd, flagDetourBCmd, "", "command of the detour-b front (as --detour-cmd), to compare two builds or settings in the same run; add detour-b to --fronts")
	fs.StringVar(&o.outDir, flagOutDir, "", "directory for the JSON results (default <repo>/bench/results)")
	fs.StringVar(&o.nginx, flagNginx, "nginx", "nginx binary")
	fs.StringVar(&o.haproxy, flagHAProxy, "haproxy", "haproxy binary")
	fs.StringVar(&o.wrk, flagWrk, "wrk", "wrk binary")
	fs.StringVar(&o.streamModule, flagStreamModule, defaultStreamModule, "ngx_stream_module.so to load (skipped when the file does not exist, for an nginx with stream built in)")
	fs.IntVar(&o.frontWorkers, flagFrontWorkers, 0, "threads/processes of each front (HAProxy nbthread, nginx worker_processes, GOMAXPROCS of Go fronts); 0 keeps each one's default, one per CPU")
	fs.DurationVar(&o.maxTime, flagMaxTime, 45*time.Minute, "upper bound on the whole benchmark")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q: everything is set by flags (see -h)", fs.Args())
	}
	durationSet := false
	fs.Visit(func(f *flag.Flag) { durationSet = durationSet || f.Name == flagDuration })
	if o.quick && !durationSet {
		o.duration = quickDuration
	}
	o.fronts = splitList(*fronts)
	o.workloads = splitList(*works)
	for _, f := range o.fronts {
		if !slices.Contains(knownFronts, f) {
			return o, fmt.Errorf("--%s: unknown front %q: use some of %s", flagFronts, f, strings.Join(knownFronts, ", "))
		}
		if f == frontDetourB && o.detourBCmd == "" {
			return o, fmt.Errorf("--%s: front %s needs --%s, the command to compare", flagFronts, frontDetourB, flagDetourBCmd)
		}
	}
	for _, w := range o.workloads {
		if w != workNew && w != workKeepAlive && w != workBulk {
			return o, fmt.Errorf("--%s: unknown workload %q: use some of new, keepalive, bulk", flagWorkloads, w)
		}
	}
	switch {
	case len(o.fronts) == 0 || len(o.workloads) == 0:
		return o, fmt.Errorf("--%s and --%s must each name at least one", flagFronts, flagWorkloads)
	case o.duration < time.Second:
		return o, fmt.Errorf("--%s %s: wrk runs whole seconds, use at least 1s", flagDuration, o.duration)
	case o.frontWorkers < 0:
		return o, fmt.Errorf("--%s must be 0 (defaults) or more", flagFrontWorkers)
	case o.reps < 1 || o.threads < 1 || o.connsNew < 1 || o.connsKeep < 1 || o.bulkC < 1:
		return o, errors.New("--reps, --threads and the connection counts must be at least 1")
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// repoRoot walks up from the working directory to the detour module root.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the working directory: %w", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/detour-acme/detour") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("%s is not inside the detour repository: run the benchmark from the checkout", dir)
		}
	}
}

// lookTool resolves a binary, saying how to install it when it is missing.
func lookTool(name, pkg string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("finding %s: %w (install it: apt-get install -y %s)", name, err, pkg)
	}
	return p, nil
}

// version returns the first line of a tool's version output.
func version(bin string, args ...string) string {
	out, _ := exec.Command(bin, args...).CombinedOutput() // wrk -v exits 1
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	line, _, _ = strings.Cut(line, " Copyright")
	line, _, _ = strings.Cut(line, " - https")
	return strings.TrimSpace(line)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.maxTime)
	defer cancel()

	root, err := repoRoot()
	if err != nil {
		return err
	}
	if o.outDir == "" {
		o.outDir = filepath.Join(root, "bench", "results")
	}
	b := &bench{repoRoot: root, progress: stderr, frontWorkers: o.frontWorkers}
	if b.nginx, err = lookTool(o.nginx, "nginx"); err != nil {
		return err
	}
	if slices.Contains(o.fronts, frontHAProxy) {
		if b.haproxy, err = lookTool(o.haproxy, "haproxy"); err != nil {
			return err
		}
	}
	wrk, err := lookTool(o.wrk, "wrk")
	if err != nil {
		return err
	}
	if _, err := os.Stat(o.streamModule); err == nil {
		b.streamModule = o.streamModule
	}

	if b.dir, err = os.MkdirTemp("", "detour-router-bench-"); err != nil {
		return fmt.Errorf("creating temp dir: %w", err)
	}
	defer os.RemoveAll(b.dir)
	// nginx workers run as nobody when started by root: they must read the pages.
	if err := os.Chmod(b.dir, 0o755); err != nil {
		return fmt.Errorf("opening temp dir to nginx workers: %w", err)
	}
	b.certPath, b.keyPath = filepath.Join(b.dir, "cert.pem"), filepath.Join(b.dir, "key.pem")
	if b.certDER, err = writeCert(b.certPath, b.keyPath); err != nil {
		return err
	}
	if b.stub, err = startStub(); err != nil {
		return err
	}
	defer b.stub.ln.Close()

	small := []byte("<!doctype html><title>bench</title><p>" + strings.Repeat("small page for the router benchmark. ", 14) + "</p>\n")
	backend, err := b.startBackend(ctx, small, bulkSize)
	if err != nil {
		return err
	}
	defer backend.stop()

	var fronts []*front
	defer func() {
		for _, f := range fronts {
			if f.proc != nil {
				f.proc.stop()
			}
		}
	}()
	for _, name := range o.fronts {
		cmd := o.detourCmd
		if name == frontDetourB {
			cmd = o.detourBCmd
		}
		f, err := b.startFront(ctx, name, cmd)
		if err != nil {
			return err
		}
		fronts = append(fronts, f)
		if f.unavailable != "" {
			fmt.Fprintf(stderr, "%s: not available (%s)\n", f.name, f.unavailable)
			continue
		}
		b.checkRouting(ctx, f)
		fmt.Fprintf(stderr, "%s listening on %s\n", f.name, f.addr)
	}

	script := filepath.Join(b.dir, "report.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		return fmt.Errorf("writing wrk script: %w", err)
	}
	works := buildWorkloads(o)
	ticks, ticksOK := clockTicks()
	m := meta{
		Started: time.Now().UTC().Format("2006-01-02T15:04:05Z"), Command: append([]string{"go", "run", "./bench/router"}, args...),
		CPUs: runtime.NumCPU(), Kernel: kernelRelease(), ClockTicks: ticks,
		NginxVersion: version(b.nginx, "-v"), WrkVersion: version(wrk, "-v"),
		Duration: o.duration.String(), Reps: o.reps, Threads: o.threads, Quick: o.quick,
		Fronts: o.fronts, Workloads: works, DetourCmd: o.detourCmd, DetourBCmd: o.detourBCmd, FrontWorkers: o.frontWorkers,
	}
	if b.haproxy != "" {
		m.HAProxyVersion = version(b.haproxy, "-v")
	}
	if !ticksOK {
		m.ClockTicksNote = " (getconf failed, assumed)"
	}

	recs, err := measureAll(ctx, o, b, backend, fronts, works, wrk, script, ticks)
	if err != nil {
		return err
	}
	for _, f := range fronts {
		if f.unavailable != "" {
			m.Unavailable = append(m.Unavailable, fmt.Sprintf("%s: not available (%s)", f.name, f.unavailable))
		}
		for _, n := range f.notes {
			m.Notes = append(m.Notes, f.name+": "+n)
		}
	}
	rows := summarize(works, fronts, recs)
	writeMarkdown(stdout, m, works, rows, recs, fronts)
	path, err := writeJSON(o.outDir, m.Started, m, recs, rows)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Raw figures: %s\n", path)
	return nil
}

func buildWorkloads(o options) []workload {
	var ws []workload
	for _, name := range o.workloads {
		switch name {
		case workNew:
			ws = append(ws, workload{Name: workNew, Title: "(a) New TLS connection per request (Connection: close, small page)",
				Path: "/index.html", CloseConns: true, Conns: o.connsNew, TputUnit: "conn/s", CPUUnit: "ms/conn"})
		case workKeepAlive:
			ws = append(ws, workload{Name: workKeepAlive, Title: "(b) Keep-alive requests (small page)",
				Path: "/index.html", Conns: o.connsKeep, TputUnit: "req/s", CPUUnit: "µs/req"})
		case workBulk:
			ws = append(ws, workload{Name: workBulk, Title: "(c) Bulk: 1 MiB file over keep-alive",
				Path: "/bulk.bin", Conns: o.bulkC, TputUnit: "MB/s", CPUUnit: "s/GiB"})
		}
	}
	return ws
}

func kernelRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

// measureAll runs every (rep, workload, front), rotating the order of the
// fronts from one rep to the next so that none always runs first.
func measureAll(ctx context.Context, o options, b *bench, backend *proc, fronts []*front, works []workload, wrk, script string, ticks int) ([]runRecord, error) {
	var recs []runRecord
	for rep := range o.reps {
		for _, w := range works {
			for i := range fronts {
				f := fronts[(i+rep)%len(fronts)]
				if f.unavailable != "" {
					continue
				}
				if err := sleepCtx(ctx, o.pause); err != nil {
					return nil, err
				}
				r, err := measureOne(ctx, o, backend, f, w, wrk, script, ticks)
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				r.Rep, r.Order = rep+1, i+1
				if err != nil {
					r.Error = err.Error()
					fmt.Fprintf(b.progress, "rep %d %s %s: %v\n", rep+1, w.Name, f.name, err)
				} else {
					cpu := "—"
					if r.FrontCPUPerUnit != nil {
						cpu = fmt.Sprintf(cpuFormat(w)+" %s", *r.FrontCPUPerUnit, w.CPUUnit)
					}
					fmt.Fprintf(b.progress, "rep %d %-9s %-12s %9.0f %-6s p99 %7.2f ms  front CPU %-13s background %.2f cores\n",
						rep+1, w.Name, f.name, r.Throughput, w.TputUnit, r.Wrk.LatencyUS.P99/1e3, cpu, r.BackgroundCores)
				}
				recs = append(recs, r)
				if f.proc != nil && f.proc.exited() {
					f.unavailable = "exited during the benchmark: " + lastLine(f.proc.output.String())
				}
			}
		}
	}
	return recs, nil
}

// measureOne runs wrk once against f and reads the CPU the front and the
// backend used meanwhile.
func measureOne(ctx context.Context, o options, backend *proc, f *front, w workload, wrk, script string, ticks int) (runRecord, error) {
	r := runRecord{Workload: w.Name, Front: f.name}
	run := wrkRun{wrk: wrk, script: script, url: "https://" + f.addr + w.Path, threads: o.threads,
		conns: w.Conns, duration: o.duration, closeConns: w.CloseConns}
	var frontBefore uint64
	var err error
	if f.proc != nil {
		if frontBefore, err = treeCPUTicks(f.proc.pid()); err != nil {
			return r, fmt.Errorf("reading %s CPU: %w", f.name, err)
		}
	}
	backendBefore, err := treeCPUTicks(backend.pid())
	if err != nil {
		return r, fmt.Errorf("reading backend CPU: %w", err)
	}
	kthreadsBefore, err := treeCPUTicks(kthreadd)
	if err != nil {
		return r, fmt.Errorf("reading kernel threads' CPU: %w", err)
	}
	start := time.Now()
	machineBefore, err := readMachineCPU()
	if err != nil {
		return r, err
	}
	res, wrkCPU, err := run.run(ctx)
	if err != nil {
		return r, err
	}
	machineAfter, err := readMachineCPU()
	if err != nil {
		return r, err
	}
	r.WallSec = time.Since(start).Seconds()
	kthreadsAfter, err := treeCPUTicks(kthreadd)
	if err != nil {
		return r, fmt.Errorf("reading kernel threads' CPU: %w", err)
	}
	if kthreadsAfter > kthreadsBefore {
		r.KernelThreadsSec = float64(kthreadsAfter-kthreadsBefore) / float64(ticks)
	}
	backendAfter, err := treeCPUTicks(backend.pid())
	if err != nil {
		return r, fmt.Errorf("reading backend CPU: %w", err)
	}
	r.Wrk = res
	r.WrkCPUSec = wrkCPU.Seconds()
	r.MachineBusySec = float64(machineAfter.busy-machineBefore.busy) / float64(ticks)
	r.StealSec = float64(machineAfter.steal-machineBefore.steal) / float64(ticks)
	r.IRQSec = float64(machineAfter.irq-machineBefore.irq) / float64(ticks)
	r.Throughput = w.throughput(res)
	if backendAfter > backendBefore {
		r.BackendCPUSec = float64(backendAfter-backendBefore) / float64(ticks)
	}
	r.BackendCPUPerUnit = w.perUnit(r.BackendCPUSec, res)
	if f.proc != nil {
		after, err := treeCPUTicks(f.proc.pid())
		if err != nil {
			return r, fmt.Errorf("reading %s CPU: %w", f.name, err)
		}
		var d uint64
		if after > frontBefore { // a worker that exited unreaped can make the sum shrink
			d = after - frontBefore
		}
		sec := float64(d) / float64(ticks)
		r.FrontCPUTicks, r.FrontCPUSec = &d, &sec
		r.FrontCPUPerUnit = ptr(w.perUnit(sec, res))
	}
	other := r.MachineBusySec - r.WrkCPUSec - r.BackendCPUSec - r.KernelThreadsSec
	if r.FrontCPUSec != nil {
		other -= *r.FrontCPUSec
	}
	r.BackgroundCores = max(0, other) / r.WallSec
	if res.Requests == 0 {
		return r, fmt.Errorf("wrk completed no request (errors %+v)", res.Errors)
	}
	return r, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
