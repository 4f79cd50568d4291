// Command fleet measures Detour's fleet mode, as section 6 of
// /work/shared/BENCHMARKS.md and issue 11 ask: how long a certificate
// stored in etcd takes to be served by every node (3 and 10 nodes), the
// etcd requests and bytes of one renewal, a node's memory with 10,000
// certificates in etcd, and the no-op renewal decision over 10,000
// certificates in etcd against the same decision on the filesystem store.
//
// Everything runs on this host: a 3-member etcd cluster embedded in this
// process, the sandbox CA (Pebble) in-process, and each node a real
// `detour run` process with its own state directory and etcd client.
//
// Run from the repository root:
//
//	go run ./bench/fleet                      # everything, defaults
//	go run ./bench/fleet -phases converge -nodes 3,10 -rounds 3 -reps 40
//	go run ./bench/fleet -phases decide,memory -certs 1000
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/store/etcdstore"
)

// Flag names.
const (
	flagPhases   = "phases"
	flagNodes    = "nodes"
	flagCerts    = "certs"
	flagRounds   = "rounds"
	flagReps     = "reps"
	flagFullReps = "full-reps"
	flagRuns     = "runs"
	flagMemRuns  = "mem-runs"
	flagIdle     = "idle"
	flagBg       = "bg"
	flagRestart  = "restart-window"
	flagMembers  = "etcd-members"
	flagFsync    = "etcd-fsync"
	flagOutDir   = "out-dir"
	flagBin      = "bin"
)

// Phases.
const (
	phaseDecide   = "decide"
	phaseMemory   = "memory"
	phaseConverge = "converge"
)

// report is what one run of the harness measured.
type report struct {
	Time        time.Time `json:"time"`
	GoVersion   string    `json:"go_version"`
	CPUs        int       `json:"cpus"`
	EtcdMembers int       `json:"etcd_members"`
	EtcdFsync   bool      `json:"etcd_fsync"`

	Certificates     int     `json:"certificates,omitempty"`
	SynthFSSeconds   float64 `json:"synth_fs_seconds,omitempty"`
	SynthEtcdSeconds float64 `json:"synth_etcd_seconds,omitempty"`

	Decide        []decideRun `json:"decide,omitempty"`
	DecideSummary *decideSum  `json:"decide_summary,omitempty"`

	Memory []memRun `json:"memory,omitempty"`

	Fleets   []fleetRound  `json:"fleets,omitempty"`
	Converge []convergeSum `json:"converge_summary,omitempty"`
}

// decideSum compares the two stores' no-op decisions.
type decideSum struct {
	FSMedianSeconds   float64 `json:"fs_median_seconds"`
	EtcdMedianSeconds float64 `json:"etcd_median_seconds"`
	// Ratio is the median of the per-pair ratios etcd/fs (each pair run
	// back to back).
	Ratio        float64 `json:"ratio_etcd_over_fs"`
	FSMaxRSSMB   float64 `json:"fs_max_rss_mb"`
	EtcdMaxRSSMB float64 `json:"etcd_max_rss_mb"`
}

// convergeSum pools every round of one node count.
type convergeSum struct {
	Nodes          int       `json:"nodes"`
	Samples        int       `json:"samples"`
	MedianMS       float64   `json:"median_ms"`
	P99MS          float64   `json:"p99_ms"`
	FirstNodeMS    float64   `json:"first_node_median_ms"`
	PutMedianMS    float64   `json:"put_median_ms"`
	RoundMediansMS []float64 `json:"round_medians_ms"`
	FullSamples    int       `json:"full_samples"`
	FullMedianMS   float64   `json:"full_converge_median_ms"`
	FullP99MS      float64   `json:"full_converge_p99_ms"`
	FullWallMS     float64   `json:"full_wall_median_ms"`
	// Traffic per renewal: the median over rounds of each figure.
	StoreRequests float64 `json:"store_renewal_requests"`
	StoreBytes    float64 `json:"store_renewal_bytes"`
	FullRequests  float64 `json:"full_renewal_requests"`
	FullBytes     float64 `json:"full_renewal_bytes"`
	BgRequestsSec float64 `json:"background_requests_per_second"`
	NodeRSSMB     float64 `json:"node_rss_median_mb"`
}

func main() {
	if os.Getenv(launchEnv) != "" && len(os.Args) > 1 {
		os.Exit(launch(os.Args[1:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "bench/fleet:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	phases := flag.String(flagPhases, "decide,memory,converge", "phases to run: decide, memory, converge")
	nodesFlag := flag.String(flagNodes, "3,10", "fleet sizes for the convergence figures (comma-separated)")
	certs := flag.Int(flagCerts, 10000, "certificates in etcd (and the state directory) for the decide and memory phases")
	rounds := flag.Int(flagRounds, 3, "convergence rounds; each starts a fleet of every size, interleaved")
	reps := flag.Int(flagReps, 40, "store-level renewals per fleet and round")
	fullReps := flag.Int(flagFullReps, 5, "full renewals (`detour renew --force` from the sandbox CA) per fleet and round")
	runs := flag.Int(flagRuns, 7, "`detour renew` runs per store (interleaved pairs)")
	memRuns := flag.Int(flagMemRuns, 3, "`detour run` starts per store for the memory figures")
	idle := flag.Duration(flagIdle, 5*time.Second, "idle CPU window of the memory phase")
	restart := flag.Duration(flagRestart, 60*time.Second, "how long the memory phase watches an etcd node restarted over its deployed state (0: no restart)")
	bg := flag.Duration(flagBg, 10*time.Second, "idle window measuring a fleet's background etcd traffic")
	members := flag.Int(flagMembers, 3, "etcd members")
	fsync := flag.Bool(flagFsync, false, "let etcd fsync (off: the figures leave the disk out, as the tests do)")
	outDir := flag.String(flagOutDir, "", "directory for the JSON report (default bench/results of the module)")
	bin := flag.String(flagBin, "", "detour binary (default: built from ./cmd/detour)")
	flag.Parse()
	want := map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		switch p = strings.TrimSpace(p); p {
		case phaseDecide, phaseMemory, phaseConverge:
			want[p] = true
		default:
			return fmt.Errorf("-%s: unknown phase %q; use decide, memory, converge", flagPhases, p)
		}
	}
	var sizes []int
	for _, s := range strings.Split(*nodesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 99 {
			return fmt.Errorf("-%s: %q is not a node count between 1 and 99", flagNodes, s)
		}
		sizes = append(sizes, n)
	}

	root, err := moduleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "detour-fleet-bench-")
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
	rep := report{Time: time.Now().UTC(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), EtcdMembers: *members, EtcdFsync: *fsync}

	c, err := startCluster(filepath.Join(tmp, "etcd"), *members, *fsync)
	if err != nil {
		return err
	}
	defer c.close()
	fmt.Printf("etcd: %d members at %s\n", *members, strings.Join(c.endpoints, " "))
	keyFile := filepath.Join(tmp, "fleet.key")
	if err := etcdstore.NewKeyFile(keyFile); err != nil {
		return err
	}
	keys, err := etcdstore.LoadKeys(keyFile)
	if err != nil {
		return err
	}

	if want[phaseDecide] || want[phaseMemory] {
		sc, fsSecs, etcdSecs, err := setupScale(ctx, filepath.Join(tmp, "scale"), *bin, *certs, c, keys, keyFile)
		if err != nil {
			return err
		}
		rep.Certificates, rep.SynthFSSeconds, rep.SynthEtcdSeconds = *certs, fsSecs, etcdSecs
		fmt.Printf("synthetic certificates: %d, state directory in %.1fs, etcd in %.1fs\n", *certs, fsSecs, etcdSecs)
		if want[phaseDecide] {
			if err := decidePhase(sc, *runs, &rep); err != nil {
				return err
			}
		}
		if want[phaseMemory] {
			for i := range *memRuns {
				for _, kind := range []string{"fs", "etcd"} {
					m, err := sc.memory(ctx, kind, i+1, *idle, *restart)
					if err != nil {
						return fmt.Errorf("memory (%s): %w", kind, err)
					}
					fmt.Printf("  detour run on %-4s: RSS %.1f MB (peak %.1f), Go heap in use %.1f MB; started %.2fs, deployed %.1fs (node CPU %.1fs, harness CPU %.1fs); idle CPU %.3fs/%.0fs\n",
						kind, m.Memory.RSSMB, m.Memory.PeakRSSMB, m.Memory.HeapInuse, m.StartSeconds, m.DeploySeconds, m.DeployCPUSeconds, m.HarnessCPUSeconds,
						m.IdleCPUSeconds, m.IdleSeconds)
					if m.RestartMemory != nil {
						fmt.Printf("    restarted over its deployed state: %.1f CPU-seconds in %.0fs, watch given up %d times, quiet after %.1fs (0: never); RSS %.1f MB, Go heap in use %.1f MB\n",
							m.RestartCPUSeconds, m.RestartWindow, m.RestartRelists, m.RestartQuietAfter, m.RestartMemory.RSSMB, m.RestartMemory.HeapInuse)
					}
					rep.Memory = append(rep.Memory, m)
				}
			}
		}
	}

	if want[phaseConverge] {
		if err := convergePhase(ctx, c, *bin, tmp, keys, keyFile, sizes, *rounds, *reps, *fullReps, *bg, &rep); err != nil {
			return err
		}
	}

	printReport(rep)
	if *outDir == "" {
		*outDir = filepath.Join(root, "bench", "results")
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(rep, "", "  ")
	out := filepath.Join(*outDir, "fleet-"+rep.Time.Format("20060102T150405Z")+".json")
	if err := os.WriteFile(out, append(data, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Println("report:", out)
	return nil
}

// decidePhase runs `detour renew` on both stores in back-to-back pairs,
// alternating which goes first.
func decidePhase(sc *scaleEnv, runs int, rep *report) error {
	// One unmeasured run each: page cache, etcd's own caches.
	for _, kind := range []string{"fs", "etcd"} {
		if _, err := sc.decide(kind); err != nil {
			return err
		}
	}
	var fs, et, ratios []float64
	sum := &decideSum{}
	for i := range runs {
		order := []string{"fs", "etcd"}
		if i%2 == 1 {
			order = []string{"etcd", "fs"}
		}
		got := map[string]decideRun{}
		for _, kind := range order {
			r, err := sc.decide(kind)
			if err != nil {
				return err
			}
			got[kind] = r
			rep.Decide = append(rep.Decide, r)
		}
		fs, et = append(fs, got["fs"].Seconds), append(et, got["etcd"].Seconds)
		ratios = append(ratios, got["etcd"].Seconds/got["fs"].Seconds)
		sum.FSMaxRSSMB = max(sum.FSMaxRSSMB, got["fs"].MaxRSS)
		sum.EtcdMaxRSSMB = max(sum.EtcdMaxRSSMB, got["etcd"].MaxRSS)
		fmt.Printf("  renew pair %d: fs %.3fs, etcd %.3fs (%d requests, %.1f MB from etcd)\n", i+1, got["fs"].Seconds, got["etcd"].Seconds,
			int(got["etcd"].Etcd.Requests), got["etcd"].Etcd.BytesOut/1e6)
	}
	sum.FSMedianSeconds, sum.EtcdMedianSeconds, sum.Ratio = median(fs), median(et), median(ratios)
	rep.DecideSummary = sum
	return nil
}

// convergePhase starts the sandbox CA and runs the fleets, every size in
// each round.
func convergePhase(ctx context.Context, c *cluster, bin, tmp string, keys etcdstore.Keys, keyFile string, sizes []int, rounds, reps, fullReps int, bg time.Duration, rep *report) error {
	sbx, err := sandbox.Start(ctx, sandbox.EnvOptions{})
	if err != nil {
		return fmt.Errorf("starting the sandbox CA: %w", err)
	}
	defer sbx.Close()
	const domain = "fleet.detour.test"
	sbx.AddName(domain)
	roots := filepath.Join(tmp, "ca-roots.pem")
	if err := sbx.CA.WriteTLSRoots(roots); err != nil {
		return err
	}
	// The CA validates http-01 here; tls-alpn-01 is not used.
	sbx.TLSListener.Close()
	cs := &challengeServer{}
	srv := &http.Server{Handler: cs, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(sbx.HTTPListener)
	defer srv.Close()
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	env := &fleetEnv{bin: bin, dir: filepath.Join(tmp, "fleets"), cluster: c, keys: keys, keyFile: keyFile,
		ca: sbx.CA.DirectoryURL(), roots: roots, domain: domain, http: cs, bg: bg, reps: reps, fullReps: fullReps,
		selfArgs: []string{"--resolver", sbx.DNSAddr, "--check-http-port", port(sbx.HTTPListener.Addr().String()),
			"--check-tls-port", port(sbx.TLSListener.Addr().String())}}
	for r := 1; r <= rounds; r++ {
		for _, n := range sizes {
			fmt.Printf("round %d, %d nodes\n", r, n)
			res, err := runFleet(ctx, env, r, n)
			if err != nil {
				return fmt.Errorf("round %d, %d nodes: %w", r, n, err)
			}
			fmt.Printf("  started in %.1fs; store→all nodes median %.1f ms (max %.1f); full renew median %.0f ms, then all nodes %.1f ms; per renewal %.0f / %.0f requests (store / full)\n",
				res.StartSeconds, median(res.ConvergeMS), slices.Max(res.ConvergeMS), median(res.FullWallMS), median(res.FullConvergeMS),
				res.StorePerRenewal.Requests, res.FullPerRenewal.Requests)
			rep.Fleets = append(rep.Fleets, res)
		}
	}
	for _, n := range sizes {
		s := convergeSum{Nodes: n}
		var conv, first, put, full, wall, sr, sb, fr, fb, bgr, rss []float64
		for _, f := range rep.Fleets {
			if f.Nodes != n {
				continue
			}
			conv, first, put = append(conv, f.ConvergeMS...), append(first, f.FirstNodeMS...), append(put, f.PutMS...)
			full, wall = append(full, f.FullConvergeMS...), append(wall, f.FullWallMS...)
			s.RoundMediansMS = append(s.RoundMediansMS, median(f.ConvergeMS))
			sr, sb = append(sr, f.StorePerRenewal.Requests), append(sb, f.StorePerRenewal.BytesIn+f.StorePerRenewal.BytesOut)
			fr, fb = append(fr, f.FullPerRenewal.Requests), append(fb, f.FullPerRenewal.BytesIn+f.FullPerRenewal.BytesOut)
			bgr, rss = append(bgr, f.Background.Requests), append(rss, f.NodeRSSMB...)
		}
		s.Samples, s.MedianMS, s.P99MS, s.FirstNodeMS, s.PutMedianMS = len(conv), median(conv), percentile(conv, 99), median(first), median(put)
		s.FullSamples, s.FullMedianMS, s.FullP99MS, s.FullWallMS = len(full), median(full), percentile(full, 99), median(wall)
		s.StoreRequests, s.StoreBytes, s.FullRequests, s.FullBytes = median(sr), median(sb), median(fr), median(fb)
		s.BgRequestsSec, s.NodeRSSMB = median(bgr), median(rss)
		rep.Converge = append(rep.Converge, s)
	}
	return nil
}

func printReport(r report) {
	fmt.Printf("\nfleet benchmark (%s, %d CPUs, etcd %d members in-process, fsync %v)\n", r.GoVersion, r.CPUs, r.EtcdMembers, r.EtcdFsync)
	if d := r.DecideSummary; d != nil {
		fmt.Printf("  no-op decision over %d certificates (`detour renew`, %d interleaved pairs): fs %.3fs, etcd %.3fs; etcd/fs %.2f   [target ≤ 2]\n",
			r.Certificates, len(r.Decide)/2, d.FSMedianSeconds, d.EtcdMedianSeconds, d.Ratio)
		fmt.Printf("    peak RSS: fs %.1f MB, etcd %.1f MB\n", d.FSMaxRSSMB, d.EtcdMaxRSSMB)
	}
	if len(r.Memory) > 0 {
		by := map[string][]memRun{}
		for _, m := range r.Memory {
			by[m.Store] = append(by[m.Store], m)
		}
		for _, kind := range []string{"fs", "etcd"} {
			var rss, heap, dep []float64
			for _, m := range by[kind] {
				rss, heap, dep = append(rss, m.Memory.RSSMB), append(heap, m.Memory.HeapInuse), append(dep, m.DeploySeconds)
			}
			fmt.Printf("  detour run on %-4s with %d certificates: RSS median %.1f MB, Go heap in use %.1f MB over %d runs", kind, r.Certificates, median(rss), median(heap), len(rss))
			if kind == "etcd" {
				fmt.Printf("; all deployed after %.1fs", median(dep))
			}
			fmt.Println()
		}
	}
	for _, s := range r.Converge {
		fmt.Printf("  %2d nodes: stored → every node serving: median %.1f ms, p99 %.1f ms (%d renewals; round medians %v); first node %.1f ms\n",
			s.Nodes, s.MedianMS, s.P99MS, s.Samples, s.RoundMediansMS, s.FirstNodeMS)
		fmt.Printf("            full `detour renew --force`: %.0f ms wall, then every node %.1f ms (p99 %.1f, %d renewals)\n",
			s.FullWallMS, s.FullMedianMS, s.FullP99MS, s.FullSamples)
		fmt.Printf("            etcd per renewal: store-level %.0f requests, %.1f kB; full %.0f requests, %.1f kB; idle %.2f requests/s; node RSS %.1f MB\n",
			s.StoreRequests, s.StoreBytes/1e3, s.FullRequests, s.FullBytes/1e3, s.BgRequestsSec, s.NodeRSSMB)
	}
	if len(r.Converge) >= 2 {
		a, b := r.Converge[0], r.Converge[len(r.Converge)-1]
		fmt.Printf("  convergence %d→%d nodes: median ×%.2f, p99 ×%.2f\n", a.Nodes, b.Nodes, b.MedianMS/a.MedianMS, b.P99MS/a.P99MS)
	}
}

// median returns the median of v (0 for none).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile returns the p-th percentile of v by the nearest rank (with
// fewer than 100 samples, p99 is the largest).
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	rank := int(math.Ceil(float64(len(s)) * p / 100))
	return s[min(max(rank, 1), len(s))-1]
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
