package main

import (
	"context"
	"io"
	"math"
	"net"
	"strings"
	"testing"
)

const wrkSample = `Running 2s test @ https://127.0.0.1:41717/index.html
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.37ms    3.27ms  35.20ms   85.71%
    Req/Sec     0.98k   120.00     1.20k    70.00%
  Latency Distribution
     50%    4.00ms
     99%   15.83ms
  3928 requests in 2.01s, 3.40MB read
Requests/sec:   1954.23
Transfer/sec:      1.69MB
WRKJSON {"requests":3928,"bytes":3566624,"duration_us":2010012,"errors":{"connect":0,"read":2,"write":0,"status":1,"timeout":0},"latency_us":{"mean":4371.2,"max":35200,"p50":4000,"p90":8100,"p99":15830}}
`

func TestParseWrkOutput(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    wrkResult
		wantErr string
	}{
		{
			name: "full output",
			out:  wrkSample,
			want: wrkResult{Requests: 3928, Bytes: 3566624, DurationUS: 2010012,
				Errors:    wrkErrors{Read: 2, Status: 1},
				LatencyUS: wrkLatency{Mean: 4371.2, Max: 35200, P50: 4000, P90: 8100, P99: 15830}},
		},
		{name: "no summary line", out: "Running 2s test\nunable to connect to 127.0.0.1:1 Connection refused\n", wantErr: "printed no"},
		{name: "broken JSON", out: "WRKJSON {\"requests\":\n", wantErr: "parsing wrk summary"},
		{name: "zero duration", out: `WRKJSON {"requests":1,"bytes":1,"duration_us":0}`, wantErr: "zero duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWrkOutput(tt.out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
			if got.Errors.total() != 3 {
				t.Errorf("total errors = %d, want 3", got.Errors.total())
			}
		})
	}
}

func TestWrkArgs(t *testing.T) {
	tests := []struct {
		name       string
		run        wrkRun
		want       string
		wantHeader bool
	}{
		{"new connections", wrkRun{script: "s.lua", url: "https://x/", threads: 2, conns: 32, duration: 2e9, closeConns: true},
			"-t 2 -c 32 -d 2s", true},
		{"threads capped by connections", wrkRun{script: "s.lua", url: "https://x/", threads: 4, conns: 1, duration: 10e9},
			"-t 1 -c 1 -d 10s", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(tt.run.args(), " ")
			if !strings.HasPrefix(got, tt.want) || !strings.HasSuffix(got, "https://x/") || !strings.Contains(got, "--latency") {
				t.Errorf("args = %q, want prefix %q, --latency and the URL last", got, tt.want)
			}
			if has := strings.Contains(got, "Connection: close"); has != tt.wantHeader {
				t.Errorf("Connection: close present = %v, want %v", has, tt.wantHeader)
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    procStat
		wantErr bool
	}{
		{
			name: "nginx worker",
			in:   "4242 (nginx) S 4241 4241 4241 0 -1 4194624 1200 0 0 0 150 75 3 4 20 0 1 0 12345 20000000 800 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
			want: procStat{pid: 4242, ppid: 4241, comm: "nginx", utime: 150, stime: 75, cutime: 3, cstime: 4},
		},
		{
			name: "comm with spaces and parentheses",
			in:   "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 11 22 33 44 20 0 1 0 1 1 1 1",
			want: procStat{pid: 7, ppid: 1, comm: "a) b (c)", utime: 11, stime: 22, cutime: 33, cstime: 44},
		},
		{name: "truncated", in: "7 (x) R 1 7 7 0", wantErr: true},
		{name: "no comm", in: "7 x R 1", wantErr: true},
		{name: "bad number", in: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 zz 22 33 44 20", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parsed %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSumTree(t *testing.T) {
	stats := map[int]procStat{
		1:  {pid: 1, ppid: 0, utime: 1000},
		10: {pid: 10, ppid: 1, utime: 5, stime: 5, cutime: 2}, // master; 2 ticks from a reaped worker
		11: {pid: 11, ppid: 10, utime: 100, stime: 50},        // worker
		12: {pid: 12, ppid: 11, utime: 1},                     // worker's child
		20: {pid: 20, ppid: 1, utime: 999},                    // unrelated
	}
	tests := []struct {
		name    string
		root    int
		want    uint64
		wantErr bool
	}{
		{name: "tree", root: 10, want: 163},
		{name: "leaf", root: 12, want: 1},
		{name: "gone", root: 99, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sumTree(stats, tt.root)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ticks = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	w := workload{Name: workKeepAlive}
	fronts := []*front{{name: frontDirect}, {name: frontHAProxy}, {name: frontNaiveGo}, {name: frontDetour, unavailable: "router command missing"}}
	rec := func(rep int, fr string, tput, p99 float64, cpu *float64) runRecord {
		return runRecord{Rep: rep, Workload: w.Name, Front: fr, Throughput: tput, FrontCPUPerUnit: cpu,
			Wrk: wrkResult{LatencyUS: wrkLatency{P99: p99}}}
	}
	recs := []runRecord{
		rec(1, frontDirect, 100, 1000, nil), rec(1, frontHAProxy, 80, 2000, ptr(30.0)), rec(1, frontNaiveGo, 60, 8000, ptr(60.0)),
		rec(2, frontDirect, 200, 1000, nil), rec(2, frontHAProxy, 100, 4000, ptr(10.0)), rec(2, frontNaiveGo, 100, 4000, ptr(40.0)),
		rec(3, frontDirect, 150, 1000, nil), rec(3, frontHAProxy, 90, 3000, ptr(20.0)), rec(3, frontNaiveGo, 45, 6000, ptr(30.0)),
		{Rep: 3, Workload: w.Name, Front: frontNaiveGo, Error: "wrk failed"},
	}
	rows := summarize([]workload{w}, fronts, recs)
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rows))
	}
	byName := map[string]summaryRow{}
	for _, r := range rows {
		byName[r.Front] = r
	}
	tests := []struct {
		name string
		got  *float64
		want float64
	}{
		// Per-rep ratios 2, 4, 1.5: median 2, unlike the ratio of medians (40/20).
		{"naive CPU vs HAProxy", byName[frontNaiveGo].CPUVsHAProxy, 2},
		{"naive CPU median", byName[frontNaiveGo].CPUPerUnit, 40},
		{"naive CPU min", byName[frontNaiveGo].CPUMin, 30},
		{"naive p99 vs HAProxy", byName[frontNaiveGo].P99VsHAProxy, 2},
		{"naive throughput vs direct", byName[frontNaiveGo].ThroughputVsDirect, 0.5},
		{"haproxy throughput vs direct", byName[frontHAProxy].ThroughputVsDirect, 0.6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got == nil || math.Abs(*tt.got-tt.want) > 1e-9 {
				t.Errorf("got %v, want %v", fmtOpt("%g", tt.got), tt.want)
			}
		})
	}
	t.Run("no self ratios, no CPU for direct, failed runs left out", func(t *testing.T) {
		if h := byName[frontHAProxy]; h.CPUVsHAProxy != nil || h.P99VsHAProxy != nil {
			t.Errorf("haproxy has a ratio to itself: %+v", h)
		}
		if d := byName[frontDirect]; d.CPUPerUnit != nil || d.ThroughputVsDirect != nil {
			t.Errorf("direct has front CPU or a ratio to itself: %+v", d)
		}
		if n := byName[frontNaiveGo].Runs; n != 3 {
			t.Errorf("naive runs = %d, want 3", n)
		}
		if d := byName[frontDetour]; d.Unavailable == "" || d.Runs != 0 {
			t.Errorf("detour row = %+v, want unavailable with no runs", d)
		}
	})
}

func TestDetourUnavailable(t *testing.T) {
	tests := []struct {
		name   string
		script string
		want   string
	}{
		{"router command missing", `echo 'detour: unknown command "router" for "detour"' >&2; exit 1`, "router command missing"},
		{"other failure", `echo 'detour: binding listener: address in use' >&2; exit 1`, "exited: detour: binding listener: address in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, err := freeAddr()
			if err != nil {
				t.Fatal(err)
			}
			p, err := startProc("detour", []string{"/bin/sh", "-c", tt.script}, t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer p.stop()
			err = waitReady(context.Background(), p, addr)
			if err == nil {
				t.Fatal("waitReady succeeded for a command that exits")
			}
			if got := unavailableReason(err); got != tt.want {
				t.Errorf("reason = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestExpandCommand(t *testing.T) {
	tests := []struct {
		tmpl string
		want string
	}{
		{defaultDetourCmd, "/tmp/d router --listen 127.0.0.1:1 --backend 127.0.0.1:2"},
		{"{{detour}} router --acme {{stub}}", "/tmp/d router --acme 127.0.0.1:3"},
		{"/opt/other  --to {{backend}}", "/opt/other --to 127.0.0.1:2"},
	}
	for _, tt := range tests {
		t.Run(tt.tmpl, func(t *testing.T) {
			got := strings.Join(expandCommand(tt.tmpl, "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "/tmp/d"), " ")
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestConfigs(t *testing.T) {
	d := confData{Dir: "/d", Listen: "127.0.0.1:1", Backend: "127.0.0.1:2", Stub: "127.0.0.1:3", Cert: "c", Key: "k"}
	tests := []struct {
		name    string
		tmpl    string
		data    confData
		want    []string
		notWant []string
	}{
		{"backend", "backend", d, []string{"worker_processes 1;", "ssl_protocols TLSv1.3;", "ssl_session_cache off;", "ssl_session_tickets off;"}, nil},
		{"haproxy", "haproxy", d, []string{"mode tcp", "inspect-delay", "req.ssl_alpn acme-tls/1", "req.ssl_sni", "server stub 127.0.0.1:3", "server web 127.0.0.1:2"}, []string{"splice-", "nbthread"}},
		{"haproxy with workers", "haproxy", confData{Workers: 1}, []string{"nbthread 1"}, nil},
		{"nginx stream", "stream", d, []string{"ssl_preread on;", "$ssl_preread_alpn_protocols", "acme-tls/1", "worker_processes auto;"}, []string{"load_module"}},
		{"nginx stream with module", "stream", confData{Module: "/m.so", Workers: 2}, []string{"load_module /m.so;", "worker_processes 2;"}, nil},
	}
	tmpls := map[string]func(confData) (string, error){
		"backend": func(c confData) (string, error) { return render(backendTmpl, c) },
		"haproxy": func(c confData) (string, error) { return render(haproxyTmpl, c) },
		"stream":  func(c confData) (string, error) { return render(streamTmpl, c) },
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tmpls[tt.tmpl](tt.data)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("config lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(got, w) {
					t.Errorf("config has %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestNaiveFront(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() { // echo, upper-cased, until the client half-closes
		c, err := backend.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		_, _ = c.Write([]byte(strings.ToUpper(string(b))))
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serveNaive(ctx, ln, backend.Addr().String()) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("client hello")); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "CLIENT HELLO" {
		t.Errorf("got %q through the front, want %q", got, "CLIENT HELLO")
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("serveNaive after cancel: %v", err)
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantDur string
		wantErr bool
	}{
		{"defaults", nil, "10s", false},
		{"quick", []string{"--quick"}, "2s", false},
		{"quick with explicit duration", []string{"--quick", "--duration", "5s"}, "5s", false},
		{"unknown front", []string{"--fronts", "direct,envoy"}, "", true},
		{"unknown workload", []string{"--workloads", "h3"}, "", true},
		{"sub-second run", []string{"--duration", "500ms"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && o.duration.String() != tt.wantDur {
				t.Errorf("duration = %s, want %s", o.duration, tt.wantDur)
			}
		})
	}
}

func TestParseMachineCPU(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    machineCPU
		wantErr bool
	}{
		{"kernel 6", "cpu  60605 5 15078 235000 3277 1 3055 47 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n", machineCPU{busy: 60605 + 5 + 15078 + 1 + 3055 + 47, irq: 1 + 3055, steal: 47}, false},
		{"per-CPU line first", "cpu0 1 2 3 4 5 6 7 8\n", machineCPU{}, true},
		{"short", "cpu  1 2 3\n", machineCPU{}, true},
		{"not a number", "cpu  1 2 3 4 5 6 x 8 0 0\n", machineCPU{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMachineCPU([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestWriteMarkdown(t *testing.T) {
	w := workload{Name: workNew, Title: "(a) new", TputUnit: "conn/s", CPUUnit: "ms/conn", Conns: 32}
	fronts := []*front{{name: frontHAProxy}, {name: frontDetour, unavailable: "router command missing"}}
	recs := []runRecord{{Rep: 1, Workload: workNew, Front: frontHAProxy, Throughput: 1000, FrontCPUPerUnit: ptr(0.45), BackgroundCores: 0.5}}
	var b strings.Builder
	writeMarkdown(&b, meta{Reps: 1}, []workload{w}, summarize([]workload{w}, fronts, recs), recs, fronts)
	for _, want := range []string{
		"- detour: not available (router command missing)",
		"| detour | not available (router command missing) |",
		"| haproxy | 1000 | — |",
		"0.45 (0.45–0.45)",
		"these figures are noisy",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
