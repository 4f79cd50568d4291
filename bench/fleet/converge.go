package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/detour-acme/detour/internal/store/etcdstore"
)

// fleetRound is one fleet of N `detour run` nodes, started, measured and
// stopped.
type fleetRound struct {
	Round int `json:"round"`
	Nodes int `json:"nodes"`
	// StartSeconds: from starting the nodes until every node serves the
	// fleet's first certificate (one node orders it from the sandbox CA).
	StartSeconds float64 `json:"start_seconds"`

	// Store-level renewals: the harness, as the orderer, stores a new
	// certificate (PutCertificate, then SaveRecord, as a renewal does).
	// ConvergeMS is from PutCertificate's return to the last node's
	// report; FirstNodeMS to the first node's.
	PutMS       []float64 `json:"put_ms"`
	ConvergeMS  []float64 `json:"converge_ms"`
	FirstNodeMS []float64 `json:"first_node_ms"`

	// Full renewals: `detour renew --force fleet` run on node01 (ACME
	// order from the sandbox CA, http-01 answered through the fleet: the
	// CA fetches from the last node's webroot only). FullConvergeMS is from
	// the harness seeing the new live pointer to the last node's report.
	FullWallMS     []float64 `json:"full_wall_ms"`
	FullConvergeMS []float64 `json:"full_converge_ms"`

	// Background is the fleet's etcd traffic per second while idle.
	Background traffic `json:"background_per_second"`
	// StorePerRenewal and FullPerRenewal are the etcd traffic of one
	// renewal, orderer and every node together, background subtracted;
	// OrdererPerRenewal is the store-level orderer's own share.
	StorePerRenewal   traffic `json:"store_renewal_traffic"`
	OrdererPerRenewal traffic `json:"store_renewal_orderer_traffic"`
	FullPerRenewal    traffic `json:"full_renewal_traffic"`

	// NodeRSSMB is each node's resident set at the end.
	NodeRSSMB []float64 `json:"node_rss_mb"`
}

// fleetEnv is what every round shares.
type fleetEnv struct {
	bin      string
	dir      string
	cluster  *cluster
	keys     etcdstore.Keys
	keyFile  string
	ca       string // directory URL
	roots    string
	selfArgs []string // --resolver, --check-*-port
	domain   string
	http     *challengeServer
	bg       time.Duration
	reps     int
	fullReps int
}

// challengeServer answers the CA's http-01 requests from the nodes'
// webroots: the first that holds the token, or, once only is set, that
// node's alone (so the answer must have travelled through the fleet).
type challengeServer struct {
	mu    sync.Mutex
	roots []string
	only  string
}

func (c *challengeServer) set(roots []string, only string) {
	c.mu.Lock()
	c.roots, c.only = roots, only
	c.mu.Unlock()
}

func (c *challengeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.URL.Path, "/.well-known/acme-challenge/")
	if !ok || tok == "" || strings.Contains(tok, "/") {
		http.NotFound(w, r)
		return
	}
	c.mu.Lock()
	roots := c.roots
	if c.only != "" {
		roots = []string{c.only}
	}
	c.mu.Unlock()
	for _, root := range roots {
		if data, err := os.ReadFile(filepath.Join(root, ".well-known", "acme-challenge", path.Base(tok))); err == nil {
			_, _ = w.Write(data)
			return
		}
	}
	http.NotFound(w, r)
}

// runFleet starts n nodes under a prefix of their own and measures them.
func runFleet(ctx context.Context, env *fleetEnv, round, n int) (res fleetRound, err error) {
	res = fleetRound{Round: round, Nodes: n}
	prefix := fmt.Sprintf("/bench-r%d-n%d", round, n)
	base := filepath.Join(env.dir, strings.TrimPrefix(prefix, "/"))
	var names, roots []string
	var cfgs []string
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("node%02d", i)
		d := filepath.Join(base, name)
		root := filepath.Join(d, "www")
		if err := os.MkdirAll(root, 0o755); err != nil {
			return res, err
		}
		cfg := filepath.Join(d, "detour.toml")
		fc := fleetConfig{StateDir: filepath.Join(d, "state"), Endpoints: env.cluster.endpoints, KeyFile: env.keyFile,
			Prefix: prefix, Node: name, CA: env.ca, Roots: env.roots, WebRoot: root, Domain: env.domain}
		if err := fc.write(cfg); err != nil {
			return res, err
		}
		names, roots, cfgs = append(names, name), append(roots, root), append(cfgs, cfg)
	}
	env.http.set(roots, "")

	// The observer, and the orderer of store-level renewals, each on a
	// counted client.
	obsCount, ordCount := newClientCounter(), newClientCounter()
	obsCli, err := env.cluster.client(obsCount)
	if err != nil {
		return res, err
	}
	defer obsCli.Close()
	ordCli, err := env.cluster.client(ordCount)
	if err != nil {
		return res, err
	}
	defer ordCli.Close()
	obs := newObserver(prefix)
	octx, stopObs := context.WithCancel(ctx)
	ready := make(chan struct{})
	obsDone := make(chan error, 1)
	go func() { obsDone <- obs.run(octx, obsCli, ready) }()
	defer func() {
		stopObs()
		<-obsDone
	}()
	select {
	case <-ready:
	case err := <-obsDone:
		return res, err
	}

	t0 := time.Now()
	var nodes []*node
	defer func() {
		for _, nd := range nodes {
			if serr := nd.stop(); serr != nil && err == nil && !isSignalExit(serr) {
				err = fmt.Errorf("stopping %s: %w", nd.name, serr)
			}
		}
	}()
	for i, name := range names {
		nd, err := startNode(env.bin, name, cfgs[i], filepath.Join(base, name, "run.log"), env.selfArgs)
		if err != nil {
			return res, err
		}
		nodes = append(nodes, nd)
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, nd := range nodes {
		if err := nd.waitStarted(sctx); err != nil {
			return res, err
		}
	}
	if err := waitNewest(sctx, obs, "fleet", names); err != nil {
		return res, fmt.Errorf("%w; node01's errors: %v", err, nodes[0].errorLines())
	}
	res.StartSeconds = time.Since(t0).Seconds()
	// From here on the CA reaches the last node's answers only.
	env.http.set(roots, roots[len(roots)-1])
	time.Sleep(time.Second) // the start-up's last writes settle

	// Background: the fleet idle.
	snap := func() (traffic, traffic, traffic, time.Time, error) {
		s, err := serverTraffic()
		return s, obsCount.snapshot(), ordCount.snapshot(), time.Now(), err
	}
	s0, o0, r0, w0, err := snap()
	if err != nil {
		return res, err
	}
	time.Sleep(env.bg)
	s1, o1, r1, w1, err := snap()
	if err != nil {
		return res, err
	}
	bgRate := s1.sub(s0).sub(o1.sub(o0)).sub(r1.sub(r0)).scale(1 / w1.Sub(w0).Seconds())
	res.Background = bgRate
	// net is the fleet's traffic between two snapshots, the harness's
	// observer left out and the background subtracted, per renewal.
	net := func(a, b [3]traffic, from, to time.Time, k int) traffic {
		d := b[0].sub(a[0]).sub(b[1].sub(a[1]))
		d = d.sub(bgRate.scale(to.Sub(from).Seconds()))
		return d.scale(1 / float64(k))
	}

	// Store-level renewals.
	st, err := etcdstore.Open(ctx, etcdstore.Options{Client: ordCli, Prefix: prefix, FleetID: "bench", Keys: env.keys})
	if err != nil {
		return res, err
	}
	defer st.Close()
	const certName = "conv.bench.example"
	rng := mrand.New(mrand.NewPCG(uint64(round), uint64(n)))
	var lastCert []byte
	s0, o0, r0, w0, err = snap()
	if err != nil {
		return res, err
	}
	for range env.reps {
		b, err := selfSigned(certName, time.Now())
		if err != nil {
			return res, err
		}
		leaf, err := b.Leaf()
		if err != nil {
			return res, err
		}
		rec := synthRecord(certName, rng, b.LiveSum(), time.Now())
		rec.Serial = leaf.SerialNumber.Text(16)
		start := time.Now()
		v, err := st.PutCertificate(ctx, certName, b)
		if err != nil {
			return res, err
		}
		stored := time.Now()
		rec.Version, lastCert = v, b.CertPEM
		if err := st.SaveRecord(ctx, rec); err != nil {
			return res, err
		}
		res.PutMS = append(res.PutMS, ms(stored.Sub(start)))
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		at, err := obs.waitServed(wctx, certName, v, names)
		cancel()
		if err != nil {
			return res, err
		}
		first, last := spread(at)
		res.ConvergeMS = append(res.ConvergeMS, ms(last.Sub(stored)))
		res.FirstNodeMS = append(res.FirstNodeMS, ms(first.Sub(stored)))
	}
	time.Sleep(time.Second)
	s1, o1, r1, w1, err = snap()
	if err != nil {
		return res, err
	}
	// The reports are the clock; check that the files say the same.
	if err := checkServed(base, names, certName, lastCert); err != nil {
		return res, err
	}
	res.StorePerRenewal = net([3]traffic{s0, o0, r0}, [3]traffic{s1, o1, r1}, w0, w1, env.reps)
	res.OrdererPerRenewal = r1.sub(r0).scale(1 / float64(env.reps))

	// Full renewals, by hand on node01.
	if env.fullReps > 0 {
		s0, o0, r0, w0, err = snap()
		if err != nil {
			return res, err
		}
		for range env.fullReps {
			before := obs.newestLive("fleet")
			args := append([]string{"--config", cfgs[0], "--log-level", "warn"}, env.selfArgs...)
			cmd := exec.CommandContext(ctx, env.bin, append(args, "renew", "--force", "fleet")...)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			wall := time.Since(start)
			if err != nil {
				return res, fmt.Errorf("detour renew --force fleet on node01: %w\n%s", err, out)
			}
			v := obs.newestLive("fleet")
			if v <= before {
				// The command's own store may be seen a moment later.
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				for v <= before && wctx.Err() == nil {
					time.Sleep(5 * time.Millisecond) // polling the observer's map
					v = obs.newestLive("fleet")
				}
				cancel()
				if v <= before {
					return res, fmt.Errorf("renew --force stored no new version (still %d):\n%s", before, out)
				}
			}
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			at, err := obs.waitServed(wctx, "fleet", v, names)
			cancel()
			if err != nil {
				return res, err
			}
			live, _ := obs.liveAt("fleet", v)
			_, last := spread(at)
			res.FullWallMS = append(res.FullWallMS, ms(wall))
			res.FullConvergeMS = append(res.FullConvergeMS, ms(last.Sub(live)))
		}
		time.Sleep(time.Second)
		s1, o1, r1, w1, err = snap()
		if err != nil {
			return res, err
		}
		res.FullPerRenewal = net([3]traffic{s0, o0, r0}, [3]traffic{s1, o1, r1}, w0, w1, env.fullReps)
	}
	for _, nd := range nodes {
		m, err := nd.memory()
		if err != nil {
			return res, err
		}
		res.NodeRSSMB = append(res.NodeRSSMB, m.RSSMB)
		if e := nd.errorLines(); len(e) > 0 {
			fmt.Fprintf(os.Stderr, "  %s logged errors, e.g.: %s\n", nd.name, e[0])
		}
	}
	return res, nil
}

// checkServed checks that every node's live/<name>/cert.pem holds cert.
func checkServed(base string, nodes []string, name string, cert []byte) error {
	for _, n := range nodes {
		got, err := os.ReadFile(filepath.Join(base, n, "state", "live", name, "cert.pem"))
		if err != nil {
			return fmt.Errorf("node %s: %w", n, err)
		}
		if !bytes.Equal(got, cert) {
			return fmt.Errorf("node %s reported the last certificate but its live/%s/cert.pem holds another", n, name)
		}
	}
	return nil
}

// waitNewest waits until every node serves the newest live version of
// name the observer has seen.
func waitNewest(ctx context.Context, obs *observer, name string, nodes []string) error {
	for {
		v := obs.newestLive(name)
		if v > 0 {
			wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			_, err := obs.waitServed(wctx, name, v, nodes)
			cancel()
			if err == nil && obs.newestLive(name) == v {
				return nil
			}
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
		} else {
			time.Sleep(50 * time.Millisecond) // polling the observer's map
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for every node to serve %s: %w", name, ctx.Err())
		}
	}
}

// spread returns the first and the last of the times.
func spread(at map[string]time.Time) (first, last time.Time) {
	for _, t := range at {
		if first.IsZero() || t.Before(first) {
			first = t
		}
		if t.After(last) {
			last = t
		}
	}
	return first, last
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// isSignalExit reports whether err is the exit of a process ended by the
// SIGTERM it was sent.
func isSignalExit(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && !ee.Exited()
}
