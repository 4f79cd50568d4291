package plan

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/deploy"
	"github.com/detour-acme/detour/internal/firewall"
	"github.com/detour-acme/detour/internal/fleet"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/store/etcdstore"
)

// Shared is the state the renewals read and write: the state directory on
// a single host (*store.FS), etcd in a fleet (see fleetShared). Each node's
// own live/ files, sockets and temporary files stay in Planner.Store.
type Shared interface {
	renew.Backend
	ScanRecords(ctx context.Context) (store.RecordScan, error)
}

var _ Shared = (*store.FS)(nil)

// etcdShared is etcdstore.Store under a name that, embedded, does not
// hide its method Store.
type etcdShared = etcdstore.Store

// fleetShared is the shared state of a fleet: etcd, with this node's
// live/ for deploy hooks.
type fleetShared struct {
	*etcdShared
	local *store.FS
}

// LiveDir implements renew.Backend: this node's live directory.
func (s fleetShared) LiveDir(name string) string { return s.local.LiveDir(name) }

var _ Shared = fleetShared{}

// fleetConn is a planner's link to its fleet ([store] kind = "etcd").
type fleetConn struct {
	cfg    config.Store
	log    *slog.Logger
	client *clientv3.Client
	store  *etcdstore.Store

	mu       sync.Mutex
	node     *fleet.Node // the member (detour run) or an observer (commands)
	observer bool
}

// ErrFleetUnreachable is matched (errors.Is) by Open's error when the
// fleet's etcd did not answer: `detour run` waits and tries again.
var ErrFleetUnreachable = etcdstore.ErrUnreachable

// etcdRedialMax is the longest wait between two attempts to reach etcd.
const etcdRedialMax = 3 * time.Second

// etcdTimeout bounds opening the fleet's state.
const etcdTimeout = 15 * time.Second

// openFleet dials the fleet's etcd and opens its store.
func openFleet(s config.Store, file string, log *slog.Logger) (*fleetConn, error) {
	where := fmt.Sprintf("%s:%d: [store]", file, s.Line)
	tlsCfg, err := etcdTLS(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	keys, err := etcdstore.LoadKeys(s.EncryptionKeyFile)
	if err != nil {
		return nil, fmt.Errorf("%s encryption_key_file: %w", where, err)
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints: s.Endpoints, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialKeepAliveTime: 10 * time.Second, DialKeepAliveTimeout: 5 * time.Second,
		// gRPC's own reconnect back-off grows to two minutes: after etcd
		// was away for a minute, a node would stay cut off (not presenting
		// answers, not deploying) long after etcd is back. A few seconds at
		// most between attempts.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: etcdRedialMax},
			MinConnectTimeout: 5 * time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("%s: connecting to etcd at %s: %w", where, strings.Join(s.Endpoints, ", "), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	st, err := etcdstore.Open(ctx, etcdstore.Options{Client: client, Prefix: s.Prefix, FleetID: s.Fleet, Keys: keys, Logger: log, LockTTL: s.LockTTL, Holder: s.Node})
	if err != nil {
		client.Close()
		if errors.Is(err, etcdstore.ErrUnreachable) {
			if why := diagnoseEtcd(s.Endpoints, tlsCfg); why != "" {
				return nil, fmt.Errorf("%s: %w; %s", where, err, why)
			}
		}
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return &fleetConn{cfg: s, log: log, client: client, store: st}, nil
}

// diagnoseEtcd tells why etcd did not answer, endpoint by endpoint, when a
// plain connection says more than the gRPC client does (which only times
// out): refused, unreachable, or the TLS handshake's own error (a CA that
// did not sign the members' certificates, a client certificate the
// members refuse or do not get). Empty when nothing more is known.
func diagnoseEtcd(endpoints []string, tlsCfg *tls.Config) string {
	var found []string
	for _, e := range endpoints {
		u, err := url.Parse(e)
		if err != nil {
			continue
		}
		conn, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
		if err != nil {
			found = append(found, fmt.Sprintf("%s: %v", e, err))
			continue
		}
		if u.Scheme != "https" || tlsCfg == nil {
			conn.Close()
			continue
		}
		cfg := tlsCfg.Clone()
		cfg.ServerName = u.Hostname()
		tc := tls.Client(conn, cfg)
		_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
		err = tc.Handshake()
		if err == nil {
			// With TLS 1.3 a refused client certificate shows at the
			// first read; a member that took it waits for gRPC's preface.
			var b [1]byte
			_, err = tc.Read(b[:])
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				err = nil
			}
		}
		tc.Close()
		if err != nil {
			found = append(found, fmt.Sprintf("%s: TLS: %v", e, err))
		}
	}
	if len(found) == 0 {
		return ""
	}
	return "what a direct connection found: " + strings.Join(found, "; ")
}

// etcdTLS returns the client TLS configuration of s, nil for plain HTTP
// endpoints without TLS files.
func etcdTLS(s config.Store) (*tls.Config, error) {
	secure := s.CAFile != "" || s.CertFile != ""
	for _, e := range s.Endpoints {
		secure = secure || strings.HasPrefix(e, "https://")
	}
	if !secure {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate; give the CA that signed the etcd members' certificates", s.CAFile)
		}
		cfg.RootCAs = pool
	}
	if s.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file and key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Close leaves the fleet (when this planner joined it) and closes the
// connection.
func (f *fleetConn) Close() error {
	f.mu.Lock()
	n := f.node
	f.node = nil
	f.mu.Unlock()
	var errs []error
	if n != nil {
		errs = append(errs, n.Close())
	}
	errs = append(errs, f.store.Close(), f.client.Close())
	return errors.Join(errs...)
}

// nodeOptions are the fleet.Options of this node.
func (f *fleetConn) nodeOptions() fleet.Options {
	return fleet.Options{Client: f.client, Prefix: f.store.Prefix(), Node: f.cfg.Node, Logger: f.log}
}

// join makes this process the fleet's member for this node (detour run).
func (f *fleetConn) join(ctx context.Context) (*fleet.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.node != nil && !f.observer {
		return f.node, nil
	}
	n, err := fleet.Join(ctx, f.nodeOptions())
	if errors.Is(err, fleet.ErrNameTaken) {
		return nil, fmt.Errorf("%w: another detour run is the fleet's node %q (here or on another host); run one agent per node, and give each host its own node name in [store]", err, f.cfg.Node)
	}
	if err != nil {
		return nil, err
	}
	if f.node != nil {
		f.node.Close()
	}
	f.node, f.observer = n, false
	return n, nil
}

// publisher returns the Node that mirrors this process's answers: the
// member when this process joined, else an observer under the node's name
// (a command run by hand beside the node's agent).
func (f *fleetConn) publisher() (*fleet.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.node != nil {
		return f.node, nil
	}
	n, err := fleet.Observe(f.nodeOptions())
	if err != nil {
		return nil, err
	}
	f.node, f.observer = n, true
	return n, nil
}

// mirror wraps the http-01 and tls-alpn-01 paths of a request so that
// every member of the fleet presents their answers (fleet.Node.Mirror).
func (f *fleetConn) mirror(paths []solve.Path) error {
	n, err := f.publisher()
	if err != nil {
		return err
	}
	for i, sp := range paths {
		paths[i].Solver = n.Mirror(sp.Name, sp.Solver, fleet.MirrorOptions{})
	}
	return nil
}

// SharedStore returns the state the renewals read and write (the agent's
// store): the state directory, or etcd in a fleet.
func (p *Planner) SharedStore() Shared { return p.shared }

// Fleet reports whether the planner works for a fleet.
func (p *Planner) Fleet() bool { return p.fleet != nil }

// LockedRetry is how soon the agent looks again at a certificate another
// process holds the lock of: in a fleet, the lock TTL (a node that died
// holding it is taken over once its lock ends); else 0, the agent's
// default.
func (p *Planner) LockedRetry() time.Duration {
	if p.fleet == nil {
		return 0
	}
	return p.fleet.cfg.LockTTL
}

// Close releases what the planner holds: in a fleet, its membership and
// the etcd connection.
func (p *Planner) Close() error {
	if p.tempState != "" {
		os.RemoveAll(p.tempState)
	}
	if p.fleet == nil {
		return nil
	}
	return p.fleet.Close()
}

// FleetAgent is what `detour run` adds on a node of a fleet: the node's
// membership, and the follower that presents the answers the other nodes
// publish.
type FleetAgent struct {
	p     *Planner
	node  *fleet.Node
	mu    sync.Mutex
	paths *pathSet
	built map[string]solve.Solver
}

// JoinFleet makes this process the fleet's member for this node.
func (p *Planner) JoinFleet(ctx context.Context) (*FleetAgent, error) {
	if p.fleet == nil {
		return nil, errors.New("this configuration has no [store] kind = \"etcd\": there is no fleet to join")
	}
	n, err := p.fleet.join(ctx)
	if err != nil {
		return nil, err
	}
	return &FleetAgent{p: p, node: n, paths: newPathSet(), built: map[string]solve.Solver{}}, nil
}

// Deploy makes this node serve the fleet's live certificates until ctx
// ends (fleet.Deployer): its live/ files, outputs, reloads and hooks, and
// the report of what it serves.
func (a *FleetAgent) Deploy(ctx context.Context) error {
	d, err := a.p.deployer()
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// deployer returns the fleet.Deployer of this node.
func (p *Planner) deployer() (*fleet.Deployer, error) {
	return fleet.NewDeployer(fleet.DeployerOptions{
		Shared: p.fleet.store, Local: p.Store, Plan: p.deployPlanOf, Client: p.fleet.client,
		Prefix: p.fleet.store.Prefix(), Node: p.fleet.cfg.Node, Logger: p.log,
	})
}

// deployPlanOf returns the deploy steps the configuration gives
// certificate name (a certificate issued with flags: its record's hook).
func (p *Planner) deployPlanOf(name string) (deploy.Plan, bool) {
	if c, err := p.cfg.Certificate(name); err == nil {
		dp, err := deployPlan(c)
		if err != nil {
			p.log.Error("reading the deploy settings; deploying without them", "certificate", name, "error", err)
			return deploy.Plan{}, true
		}
		if dp.Hook.Command == "" {
			dp.Hook = deploy.Hook{Command: c.DeployHook}
		}
		return dp, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	if rec, err := p.shared.LoadRecord(ctx, name); err == nil && rec.DeployHook != "" {
		return deploy.Plan{Hook: deploy.Hook{Command: rec.DeployHook}}, true
	}
	return deploy.Plan{}, false
}

// DeployNow makes this node serve certificate name as the fleet stores
// it, for a command run by hand (detour issue, detour renew) that has just
// obtained it; the agents of the other nodes deploy it by themselves. On a
// single host it does nothing (the renewal deployed already).
func (p *Planner) DeployNow(ctx context.Context, name string) error {
	if p.fleet == nil {
		return nil
	}
	d, err := p.deployer()
	if err != nil {
		return err
	}
	return d.DeployNow(ctx, name)
}

// Ready reports whether this node can answer the fleet's challenges now:
// it is a member (its lease alive in etcd), so it presents what the
// orderer publishes. A load balancer's health check on it (GET
// /fleet/ready on the metrics listener) keeps the CA's validation off a
// node that cannot present.
func (a *FleetAgent) Ready() bool { return a.node.Member() }

// windowReportEvery is how often a node reads its firewall leases for
// the fleet's status (a local read; etcd is written on a change only).
const windowReportEvery = 2 * time.Second

// ReportWindows keeps the fleet's copy of this node's open firewall
// windows current until ctx ends (fleet status shows them).
func (a *FleetAgent) ReportWindows(ctx context.Context) error {
	return a.node.ReportWindows(ctx, func(ctx context.Context) ([]fleet.Window, error) {
		leases, err := firewall.OpenLeases(ctx, a.p.Store)
		if err != nil {
			return nil, err
		}
		ws := make([]fleet.Window, 0, len(leases))
		for _, l := range leases {
			ws = append(ws, fleet.Window{Port: l.Port, Family: string(l.Family), Proto: l.Proto, Backend: l.Backend,
				Identifier: l.Identifier, PID: l.PID, Until: l.Until})
		}
		return ws, nil
	}, windowReportEvery)
}

// Follow presents, with this node's own paths of the same names, the
// answers other nodes publish, until ctx ends (fleet.Node.Follow). Paths
// are built the first time an answer needs them and kept until Close.
func (a *FleetAgent) Follow(ctx context.Context) error {
	return a.node.Follow(ctx, a.path)
}

// path returns this node's path called name, built once.
func (a *FleetAgent) path(name string) (solve.Solver, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.built[name]; ok {
		return s, nil
	}
	cp, err := a.p.cfg.Path(name)
	if err != nil {
		return nil, fmt.Errorf("this node's configuration has no such path (%w): give every node of the fleet the same [path] tables", err)
	}
	// Presenting another node's answer needs no CA of this node's own:
	// the challenge carries the key authorization.
	env := solve.Env{Logger: a.p.log, Store: a.p.Store, Resolver: a.p.opts.Resolver, WindowOpened: a.p.opts.WindowOpened, Getenv: a.p.opts.Getenv}
	sp, _, err := a.p.build(context.Background(), a.paths, cp, env)
	if err != nil {
		return nil, fmt.Errorf("building it on this node: %w", err)
	}
	a.built[name] = sp.Solver
	return sp.Solver, nil
}

// Close closes the paths the follower built.
func (a *FleetAgent) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.paths.Close()
}

// FleetStatus is `detour fleet status`: the fleet's members, and per
// certificate the version the fleet holds and what each node serves.
type FleetStatus struct {
	Fleet  string `json:"fleet"`
	Prefix string `json:"prefix"`
	// Node is this node's name.
	Node    string        `json:"node"`
	Members []FleetMember `json:"members"`
	// Certificates are sorted by name.
	Certificates []FleetCert `json:"certificates"`
}

// FleetMember is a node: a live member, or one that reported what it
// serves and is gone now.
type FleetMember struct {
	Name  string `json:"name"`
	Alive bool   `json:"alive"`
	// Member is what a live member says of itself.
	Member *fleet.Member `json:"member,omitempty"`
	// LastReport is the newest report the node wrote.
	LastReport time.Time `json:"last_report,omitzero"`
	// Windows are the firewall windows open on the node now.
	Windows []fleet.Window `json:"windows,omitempty"`
}

// FleetCert is one certificate of the fleet.
type FleetCert struct {
	Name     string    `json:"name"`
	Version  int       `json:"version"`
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	// Renewing is set while a node holds the certificate's lock;
	// LockedBy says which (the node, its host and process).
	Renewing bool                  `json:"renewing"`
	LockedBy *etcdstore.LockHolder `json:"locked_by,omitempty"`
	// Nodes is what each node reports it serves.
	Nodes map[string]fleet.Deployed `json:"nodes"`
}

// FleetStatus reads the fleet's state.
func (p *Planner) FleetStatus(ctx context.Context) (FleetStatus, error) {
	if p.fleet == nil {
		return FleetStatus{}, errors.New("this configuration has no [store] kind = \"etcd\": this host is not in a fleet (detour status shows its certificates)")
	}
	ctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	f := p.fleet
	out := FleetStatus{Fleet: f.cfg.Fleet, Prefix: f.store.Prefix(), Node: f.cfg.Node}
	n, err := f.publisher()
	if err != nil {
		return out, err
	}
	members, err := n.Members(ctx)
	if err != nil {
		return out, err
	}
	deployed, err := fleet.ReadDeployed(ctx, f.client, f.store.Prefix())
	if err != nil {
		return out, err
	}
	byName := map[string]*FleetMember{}
	for i := range members {
		m := members[i]
		byName[m.Name] = &FleetMember{Name: m.Name, Alive: true, Member: &m}
	}
	for node, certs := range deployed {
		fm := byName[node]
		if fm == nil {
			fm = &FleetMember{Name: node}
			byName[node] = fm
		}
		for _, d := range certs {
			if d.At.After(fm.LastReport) {
				fm.LastReport = d.At
			}
		}
	}
	windows, err := fleet.ReadWindows(ctx, f.client, f.store.Prefix())
	if err != nil {
		return out, err
	}
	for node, ws := range windows {
		if fm := byName[node]; fm != nil {
			fm.Windows = ws
		}
	}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out.Members = append(out.Members, *byName[name])
	}
	recs, err := f.store.ListRecords(ctx)
	if err != nil {
		return out, err
	}
	holders, err := f.store.LockHolders(ctx)
	if err != nil {
		return out, err
	}
	for _, r := range recs {
		c := FleetCert{Name: r.Name, Version: r.Version, Serial: r.Serial, NotAfter: r.NotAfter, Nodes: map[string]fleet.Deployed{}}
		if h, ok := holders[r.Name]; ok {
			c.Renewing, c.LockedBy = true, &h
		}
		for node, certs := range deployed {
			if d, ok := certs[r.Name]; ok {
				c.Nodes[node] = d
			}
		}
		out.Certificates = append(out.Certificates, c)
	}
	return out, nil
}

// FleetReencrypt rewrites every secret of the fleet that is not encrypted
// with the first key of this node's key file under it (the third step of a
// key rotation, README: Fleet). It returns how many it rewrote.
func (p *Planner) FleetReencrypt(ctx context.Context) (int, error) {
	if p.fleet == nil {
		return 0, errors.New("this configuration has no [store] kind = \"etcd\": there is no fleet whose secrets to re-encrypt")
	}
	return p.fleet.store.Reencrypt(ctx)
}

// NewFleetKey writes a new encryption key file for a fleet (mode 0600,
// never over an existing file).
func NewFleetKey(file string) error { return etcdstore.NewKeyFile(file) }
