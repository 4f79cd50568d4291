package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// wrkMarker starts the line the Lua done() hook prints.
const wrkMarker = "WRKJSON "

// wrkScript is the Lua script given to wrk: it only adds a done() hook that
// prints the summary and latency percentiles as one JSON line. Latencies
// are in microseconds, as wrk keeps them.
const wrkScript = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "` + wrkMarker + `{\"requests\":%.0f,\"bytes\":%.0f,\"duration_us\":%.0f," ..
    "\"errors\":{\"connect\":%.0f,\"read\":%.0f,\"write\":%.0f,\"status\":%.0f,\"timeout\":%.0f}," ..
    "\"latency_us\":{\"mean\":%.1f,\"max\":%.0f,\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f}}\n",
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
`

// wrkErrors are wrk's error counters; status counts non-2xx/3xx responses.
type wrkErrors struct {
	Connect int64 `json:"connect"`
	Read    int64 `json:"read"`
	Write   int64 `json:"write"`
	Status  int64 `json:"status"`
	Timeout int64 `json:"timeout"`
}

// total returns the sum of all counters.
func (e wrkErrors) total() int64 { return e.Connect + e.Read + e.Write + e.Status + e.Timeout }

// wrkLatency holds latency figures in microseconds.
type wrkLatency struct {
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
}

// wrkResult is what one wrk run reported.
type wrkResult struct {
	Requests   int64      `json:"requests"`
	Bytes      int64      `json:"bytes"`
	DurationUS float64    `json:"duration_us"`
	Errors     wrkErrors  `json:"errors"`
	LatencyUS  wrkLatency `json:"latency_us"`
}

// seconds returns the measured run time.
func (r wrkResult) seconds() float64 { return r.DurationUS / 1e6 }

// parseWrkOutput finds the line printed by wrkScript in wrk's output.
func parseWrkOutput(out string) (wrkResult, error) {
	var r wrkResult
	for line := range strings.SplitSeq(out, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), wrkMarker)
		if !ok {
			continue
		}
		if err := json.Unmarshal([]byte(rest), &r); err != nil {
			return r, fmt.Errorf("parsing wrk summary line: %w", err)
		}
		if r.DurationUS <= 0 {
			return r, errors.New("parsing wrk summary line: zero duration")
		}
		return r, nil
	}
	return r, fmt.Errorf("wrk printed no %q line; its output was:\n%s", strings.TrimSpace(wrkMarker), out)
}

// wrkRun describes one wrk invocation.
type wrkRun struct {
	wrk        string // path to wrk
	script     string // path to the file holding wrkScript
	url        string
	threads    int
	conns      int
	duration   time.Duration
	closeConns bool // send "Connection: close": one request per connection
}

// args returns wrk's command line.
func (w wrkRun) args() []string {
	secs := max(1, int(w.duration.Round(time.Second)/time.Second))
	threads := min(w.threads, w.conns) // wrk refuses more threads than connections
	a := []string{
		"-t", strconv.Itoa(threads),
		"-c", strconv.Itoa(w.conns),
		"-d", strconv.Itoa(secs) + "s",
		"--timeout", "10s",
		"--latency",
		"-s", w.script,
	}
	if w.closeConns {
		a = append(a, "-H", "Connection: close")
	}
	return append(a, w.url)
}

// run executes wrk, bounded by its duration plus a margin, and parses its
// summary. It also returns the CPU wrk itself used.
func (w wrkRun) run(ctx context.Context) (wrkResult, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, w.duration+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.wrk, w.args()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return wrkResult{}, 0, fmt.Errorf("running wrk against %s: %w", w.url, ctx.Err())
		}
		return wrkResult{}, 0, fmt.Errorf("running wrk against %s: %w\n%s", w.url, err, out)
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	r, err := parseWrkOutput(string(out))
	return r, cpu, err
}
