package fleet

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// testTTL is the leases' TTL in tests: short, yet long enough for a lease
// to survive a leader election under -race.
const testTTL = 2 * time.Second

// fakeSolver is a fake path: it records Present and CleanUp and what is in
// place now.
type fakeSolver struct {
	typ   string
	delay time.Duration // each Present takes this long
	err   error         // Present fails with it
	// hook, when set, runs at the start of each Present.
	hook func(solve.Challenge)

	mu       sync.Mutex
	inPlace  map[string]string // token -> key authorization
	presents map[string]int    // by token
	cleanups map[string]int    // by token
}

var _ solve.Solver = (*fakeSolver)(nil)

func newFake() *fakeSolver {
	return &fakeSolver{typ: solve.HTTP01, inPlace: map[string]string{}, presents: map[string]int{}, cleanups: map[string]int{}}
}

func (f *fakeSolver) Type() string                                  { return f.typ }
func (f *fakeSolver) Check(context.Context, ident.Identifier) error { return nil }

func (f *fakeSolver) Present(ctx context.Context, ch solve.Challenge) error {
	if f.hook != nil {
		f.hook(ch)
	}
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.presents[ch.Token]++
	if f.err != nil {
		return f.err
	}
	f.inPlace[ch.Token] = ch.KeyAuthorization
	return nil
}

func (f *fakeSolver) CleanUp(_ context.Context, ch solve.Challenge) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups[ch.Token]++
	delete(f.inPlace, ch.Token)
	return nil
}

// holds reports whether ch's answer is in place.
func (f *fakeSolver) holds(ch solve.Challenge) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inPlace[ch.Token] == ch.KeyAuthorization
}

func (f *fakeSolver) counts(ch solve.Challenge) (presents, cleanups int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.presents[ch.Token], f.cleanups[ch.Token]
}

// fakeWaiter is a fake path that is also a solve.Waiter.
type fakeWaiter struct{ *fakeSolver }

var _ solve.Waiter = fakeWaiter{}

func (fakeWaiter) Wait(context.Context, solve.Challenge) error { return nil }

// logBuffer collects a node's log; it is printed when the test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testFleet is an etcd cluster and the nodes of a test.
type testFleet struct {
	t      *testing.T
	c      *etcdtest.Cluster
	prefix string
	logs   *logBuffer
}

// newFleet starts an etcd cluster of the test's own, for a test that
// stops its members.
func newFleet(t *testing.T) *testFleet {
	t.Helper()
	return onCluster(t, etcdtest.New(t, etcdtest.Options{}))
}

// onCluster returns a fleet of the test's own on a cluster shared with
// other tests: its keys live under a prefix named after the test.
func onCluster(t *testing.T, c *etcdtest.Cluster) *testFleet {
	t.Helper()
	f := &testFleet{t: t, c: c, prefix: "/detour/" + strings.ReplaceAll(t.Name(), "/", "-"), logs: &logBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", f.logs)
		}
	})
	return f
}

// client returns a client of the cluster, closed when the test ends.
func (f *testFleet) client() *clientv3.Client {
	f.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: f.c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		f.t.Fatalf("etcd client: %v", err)
	}
	f.t.Cleanup(func() { cli.Close() })
	return cli
}

func (f *testFleet) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// join joins a node with a client of its own.
func (f *testFleet) join(name string, opts ...func(*Options)) (*Node, *clientv3.Client) {
	f.t.Helper()
	cli := f.client()
	o := Options{Client: cli, Prefix: f.prefix, Node: name, TTL: testTTL, Logger: f.logger(), Version: "test"}
	for _, fn := range opts {
		fn(&o)
	}
	n, err := Join(context.Background(), o)
	if err != nil {
		f.t.Fatalf("joining as %s: %v", name, err)
	}
	f.t.Cleanup(func() { n.Close() })
	return n, cli
}

// follow runs n's follower with paths until the returned stop is called
// (or the test ends); stop returns Follow's error.
func (f *testFleet) follow(n *Node, paths map[string]solve.Solver) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- n.Follow(ctx, func(name string) (solve.Solver, error) {
			if s, ok := paths[name]; ok {
				return s, nil
			}
			return nil, errors.New("this node's configuration has no such path")
		})
	}()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	f.t.Cleanup(func() { stop() })
	return stop
}

// keys returns the keys under the fleet's prefix that start with sub.
func (f *testFleet) keys(cli *clientv3.Client, sub string) []string {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, f.prefix+"/fleet/"+sub, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, strings.TrimPrefix(string(kv.Key), f.prefix+"/fleet/"))
	}
	return out
}

// challenge returns an http-01 challenge for name with a token of its own.
func challenge(t *testing.T, name, token string) solve.Challenge {
	t.Helper()
	id, err := ident.Parse(name)
	if err != nil {
		t.Fatal(err)
	}
	return solve.Challenge{Type: solve.HTTP01, Identifier: id, Token: token, KeyAuthorization: token + ".thumbprint",
		AccountURL: "https://ca.test/acct/1"}
}

// eventually polls cond every 20 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond) // polling state kept by other goroutines
	}
}

func memberNames(t *testing.T, n *Node) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ms, err := n.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func ackError(t *testing.T, err error) *AckError {
	t.Helper()
	var ae *AckError
	if !errors.As(err, &ae) {
		t.Fatalf("error = %v (%T), want an *AckError", err, err)
	}
	return ae
}
