package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
)

// cluster is an etcd cluster embedded in this process: members on
// loopback, as internal/testenv/etcdtest starts them (which needs a
// testing.TB), data in a directory of the run.
type cluster struct {
	members   []*embed.Etcd
	endpoints []string
}

// startCluster starts n members under dir. With fsync false the members
// skip fsync (as the tests do): the figures then leave out the disk.
func startCluster(dir string, n int, fsync bool) (*cluster, error) {
	token := fmt.Sprintf("detour-bench-%d", time.Now().UnixNano())
	type addrs struct{ client, peer string }
	var as []addrs
	var peers []string
	for i := range n {
		c, err := freeAddr()
		if err != nil {
			return nil, err
		}
		p, err := freeAddr()
		if err != nil {
			return nil, err
		}
		as = append(as, addrs{"http://" + c, "http://" + p})
		peers = append(peers, fmt.Sprintf("m%d=http://%s", i, p))
	}
	c := &cluster{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			cfg := embed.NewConfig()
			cfg.Name = fmt.Sprintf("m%d", i)
			cfg.Dir = filepath.Join(dir, cfg.Name)
			cu, pu := mustURL(as[i].client), mustURL(as[i].peer)
			cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
			cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
			cfg.ListenMetricsUrls = nil
			cfg.InitialCluster = strings.Join(peers, ",")
			cfg.InitialClusterToken = token
			cfg.ClusterState = embed.ClusterStateFlagNew
			cfg.UnsafeNoFsync = !fsync
			cfg.Logger = "zap"
			cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
			e, err := embed.StartEtcd(cfg)
			if err != nil {
				errs[i] = fmt.Errorf("etcd member %s: %w", cfg.Name, err)
				return
			}
			select {
			case <-e.Server.ReadyNotify():
			case <-time.After(30 * time.Second):
				e.Close()
				errs[i] = fmt.Errorf("etcd member %s not ready within 30s", cfg.Name)
				return
			}
			mu.Lock()
			c.members = append(c.members, e)
			mu.Unlock()
		})
		c.endpoints = append(c.endpoints, as[i].client)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

func (c *cluster) close() {
	for _, e := range c.members {
		e.Close()
	}
}

// client dials the cluster; counter, when set, counts the client's
// traffic so that it can be told apart from the nodes'.
func (c *cluster) client(counter *clientCounter) (*clientv3.Client, error) {
	cfg := clientv3.Config{Endpoints: c.endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if counter != nil {
		cfg.DialOptions = []grpc.DialOption{
			grpc.WithChainUnaryInterceptor(counter.unary), grpc.WithChainStreamInterceptor(counter.stream),
		}
	}
	return clientv3.New(cfg)
}

// freeAddr returns a loopback address nobody listens on now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return *u
}

// traffic is what etcd's clients sent and were sent, from the members'
// point of view: Requests are gRPC messages the members received (each
// unary call, each message on a Watch or LeaseKeepAlive stream), Responses
// the messages they sent (answers, watch events), and the bytes are the
// protobuf payloads as etcd's gRPC codec counts them (no HTTP/2 framing).
type traffic struct {
	Requests  float64            `json:"requests"`
	Responses float64            `json:"responses"`
	BytesIn   float64            `json:"bytes_in"`  // client to etcd
	BytesOut  float64            `json:"bytes_out"` // etcd to client
	ByMethod  map[string]float64 `json:"requests_by_method,omitempty"`
}

func (t traffic) sub(o traffic) traffic {
	r := traffic{Requests: t.Requests - o.Requests, Responses: t.Responses - o.Responses,
		BytesIn: t.BytesIn - o.BytesIn, BytesOut: t.BytesOut - o.BytesOut, ByMethod: map[string]float64{}}
	for k, v := range t.ByMethod {
		r.ByMethod[k] = v
	}
	for k, v := range o.ByMethod {
		r.ByMethod[k] -= v
	}
	for k, v := range r.ByMethod {
		if v == 0 {
			delete(r.ByMethod, k)
		}
	}
	return r
}

func (t traffic) scale(f float64) traffic {
	r := traffic{Requests: t.Requests * f, Responses: t.Responses * f, BytesIn: t.BytesIn * f, BytesOut: t.BytesOut * f,
		ByMethod: map[string]float64{}}
	for k, v := range t.ByMethod {
		r.ByMethod[k] = v * f
	}
	return r
}

// serverTraffic reads the embedded members' counters (etcd registers them
// in this process's default Prometheus registry; the members share them,
// so they are the cluster's totals). Peer (raft) traffic is not counted.
func serverTraffic() (traffic, error) {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return traffic{}, fmt.Errorf("reading etcd's metrics: %w", err)
	}
	t := traffic{ByMethod: map[string]float64{}}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue()
			switch mf.GetName() {
			case "grpc_server_msg_received_total":
				t.Requests += v
				for _, l := range m.GetLabel() {
					if l.GetName() == "grpc_method" && v > 0 {
						t.ByMethod[l.GetValue()] += v
					}
				}
			case "grpc_server_msg_sent_total":
				t.Responses += v
			case "etcd_network_client_grpc_received_bytes_total":
				t.BytesIn += v
			case "etcd_network_client_grpc_sent_bytes_total":
				t.BytesOut += v
			}
		}
	}
	return t, nil
}

// clientCounter counts one client's traffic in the members' terms, so
// that the harness's own requests (its watch, the orderer it plays) can
// be subtracted from the members' totals.
type clientCounter struct {
	mu sync.Mutex
	t  traffic
}

func newClientCounter() *clientCounter {
	return &clientCounter{t: traffic{ByMethod: map[string]float64{}}}
}

func (c *clientCounter) snapshot() traffic {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t.scale(1)
}

// size is the length of v as the proto codec encodes it.
func size(v any) float64 {
	b, err := encoding.GetCodecV2("proto").Marshal(v)
	if err != nil {
		return 0
	}
	defer b.Free()
	return float64(b.Len())
}

func methodName(full string) string { return full[strings.LastIndexByte(full, '/')+1:] }

func (c *clientCounter) sent(method string, v any) {
	n := size(v)
	c.mu.Lock()
	c.t.Requests++
	c.t.BytesIn += n
	c.t.ByMethod[method]++
	c.mu.Unlock()
}

func (c *clientCounter) received(v any) {
	n := size(v)
	c.mu.Lock()
	c.t.Responses++
	c.t.BytesOut += n
	c.mu.Unlock()
}

func (c *clientCounter) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	c.sent(methodName(method), req)
	err := invoker(ctx, method, req, reply, cc, opts...)
	if err == nil {
		c.received(reply)
	}
	return err
}

func (c *clientCounter) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &countedStream{ClientStream: s, c: c, method: methodName(method)}, nil
}

type countedStream struct {
	grpc.ClientStream
	c      *clientCounter
	method string
}

func (s *countedStream) SendMsg(m any) error {
	err := s.ClientStream.SendMsg(m)
	if err == nil {
		s.c.sent(s.method, m)
	}
	return err
}

func (s *countedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.c.received(m)
	}
	return err
}
