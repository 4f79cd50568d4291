package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/store/etcdstore"
)

// scalePrefix holds the N synthetic certificates in etcd.
const scalePrefix = "/bench-scale"

// decideRun is one `detour renew` over N certificates, none due.
type decideRun struct {
	Store   string  `json:"store"` // "fs" or "etcd"
	Seconds float64 `json:"seconds"`
	MaxRSS  float64 `json:"max_rss_mb"`
	// Etcd is the etcd traffic of the run (etcd store only).
	Etcd *traffic `json:"etcd,omitempty"`
}

// scaleEnv is the N-certificate state on both stores.
type scaleEnv struct {
	bin     string
	dir     string
	n       int
	fsState string
	fsCfg   string // empty config: the state directory only
	etcdCfg func(node string) (cfg, state string, err error)
	cluster *cluster
}

// decide runs `detour renew` once on the given store and checks that it
// found all N not due.
func (s *scaleEnv) decide(kind string) (decideRun, error) {
	r := decideRun{Store: kind}
	var args []string
	if kind == "fs" {
		args = []string{"--config", s.fsCfg, "--state-dir", s.fsState, "renew"}
	} else {
		cfg, _, err := s.etcdCfg("decide")
		if err != nil {
			return r, err
		}
		args = []string{"--config", cfg, "renew"}
	}
	before, err := serverTraffic()
	if err != nil {
		return r, err
	}
	out, wall, rss, err := launched(s.bin, args...)
	r.Seconds, r.MaxRSS = wall.Seconds(), rss
	want := fmt.Sprintf("%d certificate(s) not due yet", s.n)
	if err != nil || !strings.Contains(out, want) {
		return r, fmt.Errorf("detour renew on the %s store: %v\n%s", kind, err, out)
	}
	if kind == "etcd" {
		after, err := serverTraffic()
		if err != nil {
			return r, err
		}
		d := after.sub(before)
		r.Etcd = &d
	}
	return r, nil
}

// memRun is one node's memory with N certificates.
type memRun struct {
	Store string `json:"store"`
	// StartSeconds: until "agent started" (every record scheduled); for
	// the etcd node DeploySeconds is until it reported all N deployed
	// (each written to its own live/ first).
	StartSeconds  float64 `json:"start_seconds"`
	DeploySeconds float64 `json:"deploy_seconds,omitempty"`
	// DeployCPUSeconds is the node's CPU time until then, HarnessCPUSeconds
	// this process's (the etcd members, mostly), and DeployEtcd the etcd
	// traffic of the start-up and deploy, the harness's polling left out.
	DeployCPUSeconds  float64  `json:"deploy_cpu_seconds,omitempty"`
	HarnessCPUSeconds float64  `json:"harness_cpu_seconds,omitempty"`
	DeployEtcd        *traffic `json:"deploy_etcd,omitempty"`
	Memory            memory   `json:"memory"`
	// IdleCPUSeconds and IdleSwitches over IdleSeconds, after start-up.
	IdleSeconds    float64 `json:"idle_seconds"`
	IdleCPUSeconds float64 `json:"idle_cpu_seconds"`
	IdleSwitches   int64   `json:"idle_context_switches"`
	// Restart (etcd only): the same node started again over its deployed
	// state (nothing to write), watched for RestartWindow: the CPU it used,
	// how often its watch of the live pointers was given up as dead (and
	// every certificate looked at again), when it first stayed quiet for a
	// second (0: never), and its memory at the end.
	RestartWindow     float64 `json:"restart_window_seconds,omitempty"`
	RestartCPUSeconds float64 `json:"restart_cpu_seconds,omitempty"`
	RestartRelists    int     `json:"restart_watch_relists,omitempty"`
	RestartQuietAfter float64 `json:"restart_quiet_after_seconds,omitempty"`
	RestartMemory     *memory `json:"restart_memory,omitempty"`
}

// memory starts `detour run` on the given store, waits until it has
// scheduled (and, in etcd, deployed) all N certificates, and measures it.
func (s *scaleEnv) memory(ctx context.Context, kind string, rep int, idle, restartWindow time.Duration) (r memRun, err error) {
	r.Store = kind
	var cfg, logFile string
	var extra []string
	node := fmt.Sprintf("mem%d", rep)
	if kind == "fs" {
		cfg, extra = s.fsCfg, []string{"--state-dir", s.fsState}
		logFile = filepath.Join(s.dir, fmt.Sprintf("fs-run-%d.log", rep))
	} else {
		if cfg, _, err = s.etcdCfg(node); err != nil {
			return r, err
		}
		logFile = filepath.Join(s.dir, node+"-run.log")
	}
	srv0, err := serverTraffic()
	if err != nil {
		return r, err
	}
	self0 := selfCPU()
	t0 := time.Now()
	nd, err := startNode(s.bin, node, cfg, logFile, extra)
	if err != nil {
		return r, err
	}
	defer func() {
		if serr := nd.stop(); serr != nil && err == nil && !isSignalExit(serr) {
			err = serr
		}
	}()
	// Generous: on 2 busy vCPUs the first deploy of 10,000 took minutes.
	sctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	if err := nd.waitStarted(sctx); err != nil {
		return r, err
	}
	r.StartSeconds = time.Since(t0).Seconds()
	if kind == "etcd" {
		poll := newClientCounter()
		cli, err := s.cluster.client(poll)
		if err != nil {
			return r, err
		}
		defer cli.Close()
		key := scalePrefix + "/fleet/deployed/" + node + "/"
		for {
			resp, err := cli.Get(sctx, key, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				return r, fmt.Errorf("counting %s's reports: %w", node, err)
			}
			if resp.Count >= int64(s.n) {
				break
			}
			select {
			case err := <-nd.done:
				nd.done <- err
				return r, fmt.Errorf("node %s exited: %v; its log: %s", node, err, logFile)
			case <-time.After(250 * time.Millisecond): // polling the count
			}
		}
		r.DeploySeconds = time.Since(t0).Seconds()
		r.HarnessCPUSeconds = selfCPU() - self0
		if r.DeployCPUSeconds, _, err = procCPU(nd.cmd.Process.Pid); err != nil {
			return r, err
		}
		srv1, err := serverTraffic()
		if err != nil {
			return r, err
		}
		d := srv1.sub(srv0).sub(poll.snapshot())
		r.DeployEtcd = &d
	}
	// Let the start-up garbage be collected before measuring.
	time.Sleep(2 * time.Second)
	pid := nd.cmd.Process.Pid
	cpu0, sw0, err := procCPU(pid)
	if err != nil {
		return r, err
	}
	w0 := time.Now()
	time.Sleep(idle)
	cpu1, sw1, err := procCPU(pid)
	if err != nil {
		return r, err
	}
	r.IdleSeconds = time.Since(w0).Seconds()
	r.IdleCPUSeconds, r.IdleSwitches = cpu1-cpu0, sw1-sw0
	if r.Memory, err = nd.memory(); err != nil {
		return r, err
	}
	if e := nd.errorLines(); len(e) > 0 {
		fmt.Fprintf(os.Stderr, "  %s logged errors, e.g.: %s\n", node, e[0])
	}
	if kind != "etcd" || restartWindow <= 0 {
		return r, nil
	}
	if err := nd.stop(); err != nil && !isSignalExit(err) {
		return r, err
	}
	t0 = time.Now()
	nd2, err := startNode(s.bin, node, cfg, logFile+".restart", extra)
	if err != nil {
		return r, err
	}
	defer func() {
		if serr := nd2.stop(); serr != nil && err == nil && !isSignalExit(serr) {
			err = serr
		}
	}()
	sctx, cancel = context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	if err := nd2.waitStarted(sctx); err != nil {
		return r, err
	}
	pid = nd2.cmd.Process.Pid
	var quiet time.Time
	busy := time.Now()
	last, _, err := procCPU(pid)
	if err != nil {
		return r, err
	}
	for end := t0.Add(restartWindow); time.Now().Before(end); {
		select {
		case <-sctx.Done():
			return r, sctx.Err()
		case <-time.After(250 * time.Millisecond): // sampling /proc
		}
		cpu, _, err := procCPU(pid)
		if err != nil {
			return r, err
		}
		now := time.Now()
		if cpu-last > 0.01 {
			last, busy = cpu, now
		} else if quiet.IsZero() && now.Sub(busy) >= time.Second {
			quiet = busy
		}
	}
	r.RestartWindow = time.Since(t0).Seconds()
	if r.RestartCPUSeconds, _, err = procCPU(pid); err != nil {
		return r, err
	}
	r.RestartRelists = nd2.relistCount()
	if !quiet.IsZero() {
		r.RestartQuietAfter = quiet.Sub(t0).Seconds()
	}
	m, err := nd2.memory()
	if err != nil {
		return r, err
	}
	r.RestartMemory = &m
	return r, nil
}

// selfCPU returns this process's user+system CPU seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// setupScale writes the N certificates to a state directory and to etcd.
func setupScale(ctx context.Context, dir, bin string, n int, c *cluster, keys etcdstore.Keys, keyFile string) (*scaleEnv, float64, float64, error) {
	s := &scaleEnv{bin: bin, dir: dir, n: n, fsState: filepath.Join(dir, "fs-state"), fsCfg: filepath.Join(dir, "empty.toml"), cluster: c}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, 0, err
	}
	if err := os.WriteFile(s.fsCfg, nil, 0o600); err != nil {
		return nil, 0, 0, err
	}
	s.etcdCfg = func(node string) (string, string, error) {
		d := filepath.Join(dir, "etcd-"+node)
		cfg := filepath.Join(d, "detour.toml")
		state := filepath.Join(d, "state")
		if _, err := os.Stat(cfg); err == nil {
			return cfg, state, nil
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", "", err
		}
		fc := fleetConfig{StateDir: state, Endpoints: c.endpoints, KeyFile: keyFile, Prefix: scalePrefix, Node: node}
		return cfg, state, fc.write(cfg)
	}
	now := time.Now()
	b, err := selfSigned("bench.example", now)
	if err != nil {
		return nil, 0, 0, err
	}
	t0 := time.Now()
	if err := synthFS(s.fsState, n, b, now); err != nil {
		return nil, 0, 0, fmt.Errorf("writing the synthetic state directory: %w", err)
	}
	fsSecs := time.Since(t0).Seconds()
	cli, err := c.client(nil)
	if err != nil {
		return nil, 0, 0, err
	}
	defer cli.Close()
	st, err := etcdstore.Open(ctx, etcdstore.Options{Client: cli, Prefix: scalePrefix, FleetID: "bench", Keys: keys})
	if err != nil {
		return nil, 0, 0, err
	}
	defer st.Close()
	t0 = time.Now()
	if err := synthEtcd(ctx, st, n, b, now, 16); err != nil {
		return nil, 0, 0, fmt.Errorf("writing the synthetic certificates to etcd: %w", err)
	}
	return s, fsSecs, time.Since(t0).Seconds(), nil
}
