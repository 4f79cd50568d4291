package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// workload is one kind of load wrk puts through a front.
type workload struct {
	Name       string `json:"name"`
	Title      string `json:"title"`
	Path       string `json:"path"`
	CloseConns bool   `json:"connection_close"`
	Conns      int    `json:"connections"`
	TputUnit   string `json:"throughput_unit"`
	CPUUnit    string `json:"cpu_unit"`
}

// Workload names, as given to --workloads.
const (
	workNew       = "new"
	workKeepAlive = "keepalive"
	workBulk      = "bulk"
)

// throughput returns the run's throughput in TputUnit.
func (w workload) throughput(r wrkResult) float64 {
	if w.Name == workBulk {
		return float64(r.Bytes) / 1e6 / r.seconds()
	}
	return float64(r.Requests) / r.seconds()
}

// perUnit returns cpuSec per unit of work in CPUUnit: ms per new
// connection, µs per keep-alive request, s per GiB passed.
func (w workload) perUnit(cpuSec float64, r wrkResult) float64 {
	switch w.Name {
	case workBulk:
		if r.Bytes == 0 {
			return 0
		}
		return cpuSec / (float64(r.Bytes) / (1 << 30))
	case workNew:
		if r.Requests == 0 {
			return 0
		}
		return cpuSec * 1e3 / float64(r.Requests)
	default:
		if r.Requests == 0 {
			return 0
		}
		return cpuSec * 1e6 / float64(r.Requests)
	}
}

// runRecord is one (rep, workload, front) measurement, kept raw in the JSON.
type runRecord struct {
	Rep               int       `json:"rep"`
	Order             int       `json:"order"` // position of the front within this rep and workload
	Workload          string    `json:"workload"`
	Front             string    `json:"front"`
	Wrk               wrkResult `json:"wrk"`
	FrontCPUTicks     *uint64   `json:"front_cpu_ticks,omitempty"`
	FrontCPUSec       *float64  `json:"front_cpu_s,omitempty"`
	BackendCPUSec     float64   `json:"backend_cpu_s"`
	Throughput        float64   `json:"throughput"`
	FrontCPUPerUnit   *float64  `json:"front_cpu_per_unit,omitempty"`
	BackendCPUPerUnit float64   `json:"backend_cpu_per_unit"`
	WallSec           float64   `json:"wall_s"` // from just before wrk starts to just after it exits
	WrkCPUSec         float64   `json:"wrk_cpu_s"`
	MachineBusySec    float64   `json:"machine_busy_cpu_s"` // all CPUs, from /proc/stat
	StealSec          float64   `json:"steal_cpu_s"`
	IRQSec            float64   `json:"irq_softirq_cpu_s"`    // part of MachineBusySec charged to no process
	KernelThreadsSec  float64   `json:"kernel_threads_cpu_s"` // ksoftirqd, kworkers: children of kthreadd
	// BackgroundCores is the machine's busy CPU not used by the front, the
	// backend, wrk or kernel threads, per second of WallSec: load from
	// elsewhere that makes the run noisy.
	BackgroundCores float64 `json:"background_cores"`
	Error           string  `json:"error,omitempty"`
}

// summaryRow holds the medians over reps for one (workload, front).
type summaryRow struct {
	Workload           string   `json:"workload"`
	Front              string   `json:"front"`
	Unavailable        string   `json:"unavailable,omitempty"`
	Runs               int      `json:"runs"`
	Throughput         float64  `json:"throughput"`
	ThroughputVsDirect *float64 `json:"throughput_vs_direct,omitempty"`
	P50Ms              float64  `json:"p50_ms"`
	P99Ms              float64  `json:"p99_ms"`
	P99VsHAProxy       *float64 `json:"p99_vs_haproxy,omitempty"`
	CPUPerUnit         *float64 `json:"front_cpu_per_unit,omitempty"`
	CPUMin             *float64 `json:"front_cpu_per_unit_min,omitempty"`
	CPUMax             *float64 `json:"front_cpu_per_unit_max,omitempty"`
	CPUVsHAProxy       *float64 `json:"front_cpu_vs_haproxy,omitempty"`
	BackendCPUPerUnit  float64  `json:"backend_cpu_per_unit"`
	Errors             int64    `json:"wrk_errors"`
}

// median returns the median of xs (the mean of the middle two for an even
// count), or 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func ptr[T any](v T) *T { return &v }

// summarize computes the medians per (workload, front), and ratios against
// a peer taken rep by rep (the same run) before the median is taken.
func summarize(works []workload, fronts []*front, recs []runRecord) []summaryRow {
	find := func(rep int, work, fr string) *runRecord {
		for i := range recs {
			r := &recs[i]
			if r.Rep == rep && r.Workload == work && r.Front == fr && r.Error == "" {
				return r
			}
		}
		return nil
	}
	var rows []summaryRow
	for _, w := range works {
		for _, f := range fronts {
			row := summaryRow{Workload: w.Name, Front: f.name, Unavailable: f.unavailable}
			var tput, p50, p99, cpu, backend, vsDirect, vsHAP, p99vsHAP []float64
			for _, r := range recs {
				if r.Workload != w.Name || r.Front != f.name || r.Error != "" {
					continue
				}
				row.Runs++
				row.Errors += r.Wrk.Errors.total()
				tput = append(tput, r.Throughput)
				p50 = append(p50, r.Wrk.LatencyUS.P50/1e3)
				p99 = append(p99, r.Wrk.LatencyUS.P99/1e3)
				backend = append(backend, r.BackendCPUPerUnit)
				if d := find(r.Rep, w.Name, frontDirect); d != nil && d.Throughput > 0 {
					vsDirect = append(vsDirect, r.Throughput/d.Throughput)
				}
				h := find(r.Rep, w.Name, frontHAProxy)
				if h != nil && h.Wrk.LatencyUS.P99 > 0 {
					p99vsHAP = append(p99vsHAP, r.Wrk.LatencyUS.P99/h.Wrk.LatencyUS.P99)
				}
				if r.FrontCPUPerUnit != nil {
					cpu = append(cpu, *r.FrontCPUPerUnit)
					if h != nil && h.FrontCPUPerUnit != nil && *h.FrontCPUPerUnit > 0 {
						vsHAP = append(vsHAP, *r.FrontCPUPerUnit / *h.FrontCPUPerUnit)
					}
				}
			}
			row.Throughput, row.P50Ms, row.P99Ms = median(tput), median(p50), median(p99)
			row.BackendCPUPerUnit = median(backend)
			if len(vsDirect) > 0 && f.name != frontDirect {
				row.ThroughputVsDirect = ptr(median(vsDirect))
			}
			if len(p99vsHAP) > 0 && f.name != frontHAProxy {
				row.P99VsHAProxy = ptr(median(p99vsHAP))
			}
			if len(cpu) > 0 {
				row.CPUPerUnit, row.CPUMin, row.CPUMax = ptr(median(cpu)), ptr(slices.Min(cpu)), ptr(slices.Max(cpu))
			}
			if len(vsHAP) > 0 && f.name != frontHAProxy {
				row.CPUVsHAProxy = ptr(median(vsHAP))
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// noisyBackground is the median background load, in cores, above which
// the report warns that the figures are not to be trusted.
const noisyBackground = 0.2

// cpuFormat gives the precision for a workload's per-unit CPU.
func cpuFormat(w workload) string {
	if w.Name == workKeepAlive {
		return "%.1f"
	}
	return "%.2f"
}

func fmtOpt(format string, v *float64) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf(format, *v)
}

// writeMarkdown prints one table per workload.
func writeMarkdown(out io.Writer, m meta, works []workload, rows []summaryRow, recs []runRecord, fronts []*front) {
	fmt.Fprintf(out, "## Router benchmark, %s\n\n", m.Started)
	fmt.Fprintf(out, "%d CPUs, kernel %s; %s; %s; %s; CLK_TCK %d%s.\n", m.CPUs, m.Kernel, m.NginxVersion, m.HAProxyVersion, m.WrkVersion, m.ClockTicks, m.ClockTicksNote)
	workers := "each front's default (one per CPU)"
	if m.FrontWorkers > 0 {
		workers = fmt.Sprint(m.FrontWorkers)
	}
	fmt.Fprintf(out, "%s runs, %d reps interleaved, %d wrk threads, front threads/workers: %s; backend nginx: 1 worker.\n", m.Duration, m.Reps, m.Threads, workers)
	fmt.Fprintln(out, "Medians over reps, min–max in brackets; ratios are taken rep by rep (same run), then the median.")
	fmt.Fprintln(out, "A front shown with fewer runs than reps had runs fail (wrk completed nothing); see stderr and the JSON.")
	fmt.Fprintln(out)
	for _, f := range fronts {
		if f.unavailable != "" {
			fmt.Fprintf(out, "- %s: not available (%s)\n", f.name, f.unavailable)
		}
		for _, n := range f.notes {
			fmt.Fprintf(out, "- %s: %s\n", f.name, n)
		}
	}
	fmt.Fprintln(out)
	reps := m.Reps
	for _, w := range works {
		fmt.Fprintf(out, "### %s — %d connections\n\n", w.Title, w.Conns)
		fmt.Fprintf(out, "| front | %s | vs direct | p50 ms | p99 ms | p99 vs HAProxy | front CPU %s | CPU vs HAProxy | wrk errors |\n", w.TputUnit, w.CPUUnit)
		fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, r := range rows {
			if r.Workload != w.Name {
				continue
			}
			if r.Unavailable != "" {
				fmt.Fprintf(out, "| %s | not available (%s) | | | | | | | |\n", r.Front, r.Unavailable)
				continue
			}
			if r.Runs == 0 {
				fmt.Fprintf(out, "| %s | no successful run | | | | | | | |\n", r.Front)
				continue
			}
			name := r.Front
			if r.Runs < reps {
				name = fmt.Sprintf("%s (%d/%d runs)", r.Front, r.Runs, reps)
			}
			cf := cpuFormat(w)
			cpu := "—"
			if r.CPUPerUnit != nil {
				cpu = fmt.Sprintf(cf+" ("+cf+"–"+cf+")", *r.CPUPerUnit, *r.CPUMin, *r.CPUMax)
			}
			fmt.Fprintf(out, "| %s | %.0f | %s | %.2f | %.2f | %s | %s | %s | %d |\n",
				name, r.Throughput, fmtOpt("%.2f", r.ThroughputVsDirect), r.P50Ms, r.P99Ms,
				fmtOpt("%.2f", r.P99VsHAProxy), cpu, fmtOpt("%.2f", r.CPUVsHAProxy), r.Errors)
		}
		var bg []float64
		for _, r := range recs {
			if r.Workload == w.Name && r.Error == "" {
				bg = append(bg, r.BackgroundCores)
			}
		}
		if len(bg) > 0 {
			fmt.Fprintf(out, "\nBackground load (CPU used by none of front, backend, wrk, kernel threads): median %.2f, max %.2f cores.", median(bg), slices.Max(bg))
			if median(bg) > noisyBackground {
				fmt.Fprint(out, " **Something else was using the CPU: these figures are noisy; rerun on a quiet machine.**")
			}
			fmt.Fprintln(out)
		}
		fmt.Fprintln(out)
	}
}

// meta describes the run for the report and the JSON.
type meta struct {
	Started        string     `json:"started"`
	Command        []string   `json:"command"`
	CPUs           int        `json:"cpus"`
	Kernel         string     `json:"kernel"`
	NginxVersion   string     `json:"nginx_version"`
	HAProxyVersion string     `json:"haproxy_version"`
	WrkVersion     string     `json:"wrk_version"`
	ClockTicks     int        `json:"clock_ticks"`
	ClockTicksNote string     `json:"clock_ticks_note,omitempty"`
	Duration       string     `json:"duration"`
	Reps           int        `json:"reps"`
	Threads        int        `json:"threads"`
	Quick          bool       `json:"quick"`
	Fronts         []string   `json:"fronts"`
	Workloads      []workload `json:"workloads"`
	DetourCmd      string     `json:"detour_cmd"`
	DetourBCmd     string     `json:"detour_b_cmd,omitempty"`
	FrontWorkers   int        `json:"front_workers"` // 0: each front's default
	Unavailable    []string   `json:"unavailable,omitempty"`
	Notes          []string   `json:"notes,omitempty"`
}

// writeJSON stores meta, the raw records and the summary under dir and
// returns the file's path.
func writeJSON(dir, stamp string, m meta, recs []runRecord, rows []summaryRow) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating results dir: %w", err)
	}
	b, err := json.MarshalIndent(struct {
		Meta    meta         `json:"meta"`
		Runs    []runRecord  `json:"runs"`
		Summary []summaryRow `json:"summary"`
	}{m, recs, rows}, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encoding results: %w", err)
	}
	path := filepath.Join(dir, "router-"+strings.NewReplacer(":", "", "-", "").Replace(stamp)+".json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("writing results: %w", err)
	}
	return path, nil
}
