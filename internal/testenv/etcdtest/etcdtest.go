// Package etcdtest runs a real etcd cluster in-process for tests: etcd's
// own embed package, members on loopback with ports of their own, data in
// the test's temporary directory. Members can be stopped and restarted (a
// killed leader, etcd down for a while). It is a package of its own so that
// only the tests of fleet mode link the etcd server.
package etcdtest

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Options configure a cluster.
type Options struct {
	// Members is the number of members; 0 means 3.
	Members int
	// TLS, when set, makes the members serve clients over TLS with this
	// server configuration and require client certificates verified by
	// its ClientCAs (see NewTLS).
	TLS *TLS
	// Host is the IPv4 address the members listen on (clients and peers);
	// 127.0.0.1 when empty. Tests whose nodes run in other network
	// namespaces give an address those reach (fleetnet.Net.HostAddr).
	Host string
	// Processes runs each member in a process of its own (command member,
	// built on first use), so that Kill is a real SIGKILL: no graceful
	// leadership hand-over, no flushed state. In process (the default),
	// Kill is Stop.
	Processes bool
}

// Cluster is a running etcd cluster.
type Cluster struct {
	t       testing.TB
	opts    Options
	token   string
	initial string
	mu      sync.Mutex
	members []*Member
}

// Member is one etcd member.
type Member struct {
	Name      string
	ClientURL string // scheme://127.0.0.1:port
	peerURL   string
	dir       string
	etcd      *embed.Etcd // nil while stopped (in process)
	proc      *memberProc // nil while stopped (Processes)
	started   bool
}

// New starts a cluster and stops it when the test ends.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Members == 0 {
		opts.Members = 3
	}
	c := &Cluster{t: t, opts: opts, token: fmt.Sprintf("detour-test-%d", time.Now().UnixNano())}
	scheme := "http"
	if opts.TLS != nil {
		scheme = "https"
	}
	var peers []string
	for i := range opts.Members {
		m := &Member{Name: fmt.Sprintf("m%d", i), dir: t.TempDir()}
		m.ClientURL = scheme + "://" + freeAddr(t, opts.Host)
		m.peerURL = "http://" + freeAddr(t, opts.Host)
		c.members = append(c.members, m)
		peers = append(peers, m.Name+"="+m.peerURL)
	}
	c.initial = strings.Join(peers, ",")
	var wg sync.WaitGroup
	errs := make([]error, len(c.members))
	for i, m := range c.members {
		wg.Go(func() { errs[i] = c.start(m) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			c.stopAll()
			t.Fatalf("starting etcd: %v", err)
		}
	}
	t.Cleanup(c.stopAll)
	return c
}

// freeAddr returns a loopback address with a port nobody listens on now,
// chosen below the kernel's ephemeral range (32768 and up on Linux): a member
// restarted on its old port must find it free, and a port from the ephemeral
// range may meanwhile be the local end of any outgoing connection on the host
// ("bind: address already in use" on Restart, seen in CI).
func freeAddr(t testing.TB, host string) string {
	t.Helper()
	if host == "" {
		host = "127.0.0.1"
	}
	portMu.Lock()
	defer portMu.Unlock()
	for range 1000 {
		port := etcdPortLow + rand.IntN(etcdPortHigh-etcdPortLow)
		if portsTaken[port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		ln.Close()
		portsTaken[port] = true
		return addr
	}
	t.Fatalf("etcdtest: no free port on %s between %d and %d", host, etcdPortLow, etcdPortHigh)
	return ""
}

// The ports members get: below the kernel's ephemeral range and below
// testenv.StaticPort's (the 10,000 under the ephemeral range), so that a
// member restarting on its port does not find it taken by a connection or
// by another test's reserved port.
const etcdPortLow, etcdPortHigh = 12000, 20000

var (
	portMu     sync.Mutex
	portsTaken = map[int]bool{} // handed out in this process: never twice
)

func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return *u
}

// MemberConfig is one member's configuration: what start gives embed in
// process, and what a member process (command member) reads.
type MemberConfig struct {
	Name, Dir                 string
	ClientURL, PeerURL        string
	InitialCluster, Token     string
	Existing                  bool   // the member has run before: it rejoins
	CertFile, KeyFile, CAFile string // client TLS, all or none
}

// EmbedConfig returns the embed configuration of mc, tuned for tests:
// fast elections (a stopped leader is replaced in well under a second), no
// fsync, no logs.
func EmbedConfig(mc MemberConfig) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = mc.Name, mc.Dir
	cfg.ListenClientUrls = []url.URL{mustURL(mc.ClientURL)}
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	cfg.ListenPeerUrls = []url.URL{mustURL(mc.PeerURL)}
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster, cfg.InitialClusterToken = mc.InitialCluster, mc.Token
	cfg.ClusterState = embed.ClusterStateFlagNew
	if mc.Existing {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	cfg.TickMs, cfg.ElectionMs = 20, 200
	cfg.UnsafeNoFsync = true
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	if mc.CertFile != "" {
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile, cfg.ClientTLSInfo.TrustedCAFile = mc.CertFile, mc.KeyFile, mc.CAFile
		cfg.ClientTLSInfo.ClientCertAuth = true
	}
	return cfg
}

// config returns m's MemberConfig.
func (c *Cluster) config(m *Member) MemberConfig {
	mc := MemberConfig{Name: m.Name, Dir: m.dir, ClientURL: m.ClientURL, PeerURL: m.peerURL,
		InitialCluster: c.initial, Token: c.token, Existing: m.started}
	if c.opts.TLS != nil {
		mc.CertFile, mc.KeyFile, mc.CAFile = c.opts.TLS.ServerCert, c.opts.TLS.ServerKey, c.opts.TLS.CA
	}
	return mc
}

// start starts (or restarts) m and waits until it serves.
func (c *Cluster) start(m *Member) error {
	if c.opts.Processes {
		return c.startProcess(m)
	}
	e, err := embed.StartEtcd(EmbedConfig(c.config(m)))
	if err != nil {
		return fmt.Errorf("member %s: %w", m.Name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return fmt.Errorf("member %s did not become ready within 30s", m.Name)
	}
	c.mu.Lock()
	m.etcd, m.started = e, true
	c.mu.Unlock()
	return nil
}

// Endpoints returns every member's client URL, stopped ones included (a
// client is configured with all of them, as in production).
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.ClientURL
	}
	return out
}

// Members returns the members.
func (c *Cluster) Members() []*Member { return c.members }

// Client returns a client of the whole cluster, closed when the test ends.
// tlsConfig is the client's TLS configuration when the cluster serves TLS.
func (c *Cluster) Client(tlsConfig *tls.Config) *clientv3.Client {
	c.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, TLS: tlsConfig,
		Logger: zap.NewNop()})
	if err != nil {
		c.t.Fatalf("etcd client: %v", err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

// Leader returns the index of the member that leads now, -1 when none
// answers as leader.
func (c *Cluster) Leader() int {
	if c.opts.Processes {
		return c.processLeader()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, m := range c.members {
		if m.etcd != nil && m.etcd.Server.Leader() == m.etcd.Server.MemberID() {
			return i
		}
	}
	return -1
}

// Stop stops member i, as a crash would (its data stays).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	m := c.members[i]
	e, p := m.etcd, m.proc
	m.etcd, m.proc = nil, nil
	c.mu.Unlock()
	if e != nil {
		e.Close()
	}
	if p != nil {
		p.stop(syscall.SIGTERM)
	}
}

// Kill kills member i with SIGKILL (Options.Processes; in process it is
// Stop): a crash, with no leadership hand-over. Its data stays.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	m := c.members[i]
	p := m.proc
	m.proc = nil
	c.mu.Unlock()
	if p == nil {
		c.Stop(i)
		return
	}
	p.stop(syscall.SIGKILL)
}

// Restart starts stopped member i again with its data.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if err := c.start(c.members[i]); err != nil {
		c.t.Fatalf("restarting etcd: %v", err)
	}
}

// StopAll stops every member (etcd entirely down).
func (c *Cluster) StopAll() {
	for i := range c.members {
		c.Stop(i)
	}
}

// RestartAll starts every stopped member again.
func (c *Cluster) RestartAll() {
	c.t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(c.members))
	for i, m := range c.members {
		c.mu.Lock()
		running := m.etcd != nil || m.proc != nil
		c.mu.Unlock()
		if !running {
			wg.Go(func() { errs[i] = c.start(m) })
		}
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			c.t.Fatalf("restarting etcd: %v", err)
		}
	}
}

func (c *Cluster) stopAll() { c.StopAll() }

// WaitLeader waits until some member leads, for at most timeout.
func (c *Cluster) WaitLeader(ctx context.Context, timeout time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if i := c.Leader(); i >= 0 {
			return i
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.t.Fatalf("no etcd leader within %v", timeout)
		}
		time.Sleep(10 * time.Millisecond) // polling the members' state
	}
}
