package fleet

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults.
const (
	// DefaultTTL is the lease of a node's membership and of its answers.
	DefaultTTL = 10 * time.Second
	// DefaultPresentTimeout bounds a follower's Present; it is shorter
	// than DefaultAckTimeout so that a follower's error reaches the
	// orderer before the orderer gives up on it.
	DefaultPresentTimeout = 20 * time.Second
)

const (
	// cleanupTimeout bounds a CleanUp run after the caller's context
	// ended, and Close.
	cleanupTimeout = 30 * time.Second
	// attemptTimeout bounds one etcd request of an operation retried
	// until it succeeds (a write while the leader changes).
	attemptTimeout = 5 * time.Second
	// maxBackoff is the longest wait between two attempts.
	maxBackoff = 2 * time.Second
)

// ErrNameTaken is returned (wrapped) by Join when another live process
// already uses the node name.
var ErrNameTaken = errors.New("fleet node name in use")

// ErrClosed is returned (wrapped) by a Node's methods after Close.
var ErrClosed = errors.New("fleet node closed")

// Options configure Join.
type Options struct {
	// Client is the etcd client. Required; the caller closes it after
	// Close.
	Client *clientv3.Client
	// Prefix is the fleet's key prefix, e.g. "/detour/prod"; this package
	// uses <Prefix>/fleet/ only. Required.
	Prefix string
	// Node is this node's name, unique in the fleet: a lower-case DNS
	// label such as its host name. Required.
	Node string
	// TTL is the lease of the membership and of published answers: how
	// long a dead node stays listed and its answers stay published. It
	// counts in whole seconds (rounded up); zero means DefaultTTL. etcd
	// may grant more (its minimum is 1.5 election timeouts).
	TTL time.Duration
	// Logger receives the membership's and the answers' events. Nil
	// discards them.
	Logger *slog.Logger
	// Version is the version the node reports to the others; empty means
	// the build's module version.
	Version string
	// PresentTimeout bounds the follower's Present of one answer; zero
	// means DefaultPresentTimeout.
	PresentTimeout time.Duration
	// Presented remembers the answers this node's follower presented. Nil
	// gives the Node one of its own, whose answers Close cleans up. Pass
	// the same Presented to the Nodes one process joins one after the
	// other (Close, then Join again, e.g. on a reload) so that the next
	// follower neither presents an answer twice nor forgets to clean up
	// one deleted in between; the caller then cleans it up at the end
	// (Presented.CleanUp).
	Presented *Presented
}

// Node is this process's membership of the fleet. It is safe for
// concurrent use.
type Node struct {
	client *clientv3.Client
	log    *slog.Logger
	name   string
	keys   keys
	ttl    int64 // seconds
	self   Member
	opts   Options

	presented     *Presented
	ownsPresented bool
	// observer is a Node made by Observe: never a member.
	observer bool

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the keeper, answers' keepalives, followers

	mu        sync.Mutex
	closed    bool
	following bool
	lease     clientv3.LeaseID // 0 while not a member
	changed   chan struct{}    // closed and replaced when lease changes
	published map[string]*published
}

// Join makes this process a member of the fleet as opts.Node and keeps it
// one until Close: a lease kept alive holds <prefix>/fleet/nodes/<name>.
// It fails with ErrNameTaken while another live process has the name. If
// the lease is lost later (etcd unreachable for longer than the TTL), the
// node logs it and joins again once etcd answers.
func Join(ctx context.Context, opts Options) (*Node, error) {
	n, err := newNode(opts)
	if err != nil {
		return nil, err
	}
	m, err := n.join(ctx)
	if err != nil {
		n.cancel()
		return nil, err
	}
	n.setLease(m.lease)
	n.log.InfoContext(ctx, "joined the fleet", "ttl", time.Duration(n.ttl)*time.Second)
	n.wg.Go(func() { n.keep(m) })
	return n, nil
}

// Observe returns a Node that is not a member: it publishes answers
// (Mirror) and reads the members, but holds no membership key, so the
// orderers of other renewals do not wait for it, and its name may be the
// one a member of this host uses. That is what a command run by hand on a
// node is (detour issue, detour renew, while the node's agent is the
// member): its answers, published under the node's name, are presented by
// every other member; this host presents them itself. Follow is refused.
func Observe(opts Options) (*Node, error) {
	n, err := newNode(opts)
	if err != nil {
		return nil, err
	}
	n.observer = true
	return n, nil
}

// newNode validates opts and returns a Node that is not a member yet.
func newNode(opts Options) (*Node, error) {
	prefix := strings.TrimRight(opts.Prefix, "/")
	if prefix == "" {
		return nil, errors.New("joining the fleet: the key prefix is empty; set it to the fleet's prefix in etcd, e.g. /detour/<fleet id>")
	}
	if err := ValidNodeName(opts.Node); err != nil {
		return nil, err
	}
	if opts.TTL < 0 || opts.PresentTimeout < 0 {
		return nil, fmt.Errorf("joining the fleet: negative TTL (%v) or present timeout (%v); leave them zero for the defaults", opts.TTL, opts.PresentTimeout)
	}
	if opts.Client == nil {
		return nil, errors.New("joining the fleet: no etcd client")
	}
	opts.TTL = cmp.Or(opts.TTL, DefaultTTL)
	opts.PresentTimeout = cmp.Or(opts.PresentTimeout, DefaultPresentTimeout)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Version = cmp.Or(opts.Version, buildVersion())
	host, _ := os.Hostname()
	n := &Node{
		client:    opts.Client,
		log:       opts.Logger.With("node", opts.Node),
		name:      opts.Node,
		keys:      keys{base: prefix + "/fleet/"},
		ttl:       int64((opts.TTL + time.Second - 1) / time.Second),
		self:      Member{Name: opts.Node, Started: time.Now().UTC().Truncate(time.Second), Version: opts.Version, PID: os.Getpid(), Host: host},
		opts:      opts,
		presented: opts.Presented,
		changed:   make(chan struct{}),
		published: map[string]*published{},
	}
	if n.presented == nil {
		n.presented, n.ownsPresented = &Presented{}, true
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	return n, nil
}

func buildVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "devel"
}

// Name returns this node's name.
func (n *Node) Name() string { return n.name }

// join takes a new lease, keeps it alive and creates this node's key under
// it unless another lease holds the key.
func (n *Node) join(ctx context.Context) (membership, error) {
	grant, err := n.client.Grant(ctx, n.ttl)
	if err != nil {
		return membership{}, fmt.Errorf("joining the fleet as %s: taking a lease in etcd: %w", n.name, err)
	}
	kactx, kacancel := context.WithCancel(n.ctx)
	ka, err := n.client.KeepAlive(kactx, grant.ID)
	if err != nil {
		kacancel()
		n.revoke(grant.ID)
		return membership{}, fmt.Errorf("joining the fleet as %s: keeping the lease alive: %w", n.name, err)
	}
	val, err := json.Marshal(n.self)
	if err != nil {
		kacancel()
		n.revoke(grant.ID)
		return membership{}, err
	}
	key := n.keys.node(n.name)
	var resp *clientv3.TxnResponse
	err = n.retry(ctx, func(ctx context.Context) error {
		var err error
		resp, err = n.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(val), clientv3.WithLease(grant.ID))).
			Else(clientv3.OpGet(key)).Commit()
		return err
	})
	if err != nil {
		kacancel()
		n.revoke(grant.ID)
		return membership{}, fmt.Errorf("joining the fleet as %s: %w", n.name, err)
	}
	if !resp.Succeeded {
		var kvs = resp.Responses[0].GetResponseRange().GetKvs()
		// An earlier attempt whose answer was lost may have created it.
		if len(kvs) != 1 || clientv3.LeaseID(kvs[0].Lease) != grant.ID {
			kacancel()
			n.revoke(grant.ID)
			var other Member
			if len(kvs) == 1 {
				_ = json.Unmarshal(kvs[0].Value, &other)
			}
			return membership{}, fmt.Errorf("%w: %q is the name of a live node (pid %d on host %q, started %s); give this node a name of its own, "+
				"or stop that process (if it died, its entry expires within %ds)", ErrNameTaken, n.name, other.PID, other.Host,
				other.Started.Format(time.RFC3339), n.ttl)
		}
	}
	return membership{lease: grant.ID, ka: ka, stop: kacancel}, nil
}

// membership is a lease holding this node's key, kept alive until stop.
type membership struct {
	lease clientv3.LeaseID
	ka    <-chan *clientv3.LeaseKeepAliveResponse
	stop  context.CancelFunc
}

// keep drains the keepalive responses and, when the lease is lost, joins
// again until it succeeds or the node is closed.
func (n *Node) keep(m membership) {
	for {
		for range m.ka {
		}
		m.stop()
		if n.ctx.Err() != nil {
			return
		}
		n.setLease(0)
		if n.client.Ctx().Err() != nil {
			n.log.Error("the etcd client was closed: this node has left the fleet")
			return
		}
		lost := time.Now()
		n.log.Warn("fleet membership lost: etcd did not renew the lease within its TTL; joining again once it answers",
			"ttl", time.Duration(n.ttl)*time.Second)
		wait := 100 * time.Millisecond
		for {
			// An attempt longer than the TTL is pointless: the lease would
			// be nearly expired when granted.
			ctx, cancel := context.WithTimeout(n.ctx, min(attemptTimeout, time.Duration(n.ttl)*time.Second))
			// The lease may still live in etcd (the answers were lost, not
			// the requests): revoking it frees the name. It fails when the
			// lease has expired, or when etcd is still away (then so does
			// the join).
			_, _ = n.client.Revoke(ctx, m.lease)
			next, err := n.join(ctx)
			cancel()
			if err == nil {
				m = next
				n.setLease(m.lease)
				n.log.Info("joined the fleet again", "away", time.Since(lost).Round(time.Millisecond))
				break
			}
			if n.ctx.Err() != nil {
				return
			}
			if n.client.Ctx().Err() != nil {
				n.log.Error("the etcd client was closed: this node has left the fleet")
				return
			}
			if errors.Is(err, ErrNameTaken) {
				n.log.Error("cannot join the fleet again", "error", err)
			} else {
				n.log.Debug("joining the fleet again failed; retrying", "error", err)
			}
			select {
			case <-time.After(wait):
			case <-n.ctx.Done():
				return
			}
			wait = min(2*wait, maxBackoff)
		}
	}
}

// setLease records the node's current lease (0: not a member), wakes up
// those waiting for a change and returns the previous one.
func (n *Node) setLease(l clientv3.LeaseID) clientv3.LeaseID {
	n.mu.Lock()
	defer n.mu.Unlock()
	old := n.lease
	n.lease = l
	close(n.changed)
	n.changed = make(chan struct{})
	return old
}

// Member reports whether the node is a member of the fleet now: joined,
// and its membership lease alive (false while etcd is away, until it joins
// again). Only a member presents the fleet's answers.
func (n *Node) Member() bool {
	l, _ := n.current()
	return l != 0
}

// current returns the node's lease (0 while not a member) and a channel
// closed at its next change.
func (n *Node) current() (clientv3.LeaseID, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lease, n.changed
}

// revoke revokes lease l, best effort, even after Close.
func (n *Node) revoke(l clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
	defer cancel()
	if _, err := n.client.Revoke(ctx, l); err != nil {
		n.log.Debug("revoking a lease", "lease", fmt.Sprintf("%x", int64(l)), "error", err)
	}
}

// retry runs op until it succeeds, ctx ends or the client is closed, each
// attempt with its own timeout and a growing pause between them: writes
// fail while etcd elects a leader or a member goes away. op must be safe
// to repeat.
func (n *Node) retry(ctx context.Context, op func(ctx context.Context) error) error {
	wait := 50 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := op(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || n.client.Ctx().Err() != nil {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return err
		}
		wait = min(2*wait, maxBackoff)
	}
}

// Members returns the live members, this node included while it is one,
// sorted by name.
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	resp, err := n.client.Get(ctx, n.keys.nodes(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("listing the fleet's members: %w", err)
	}
	out := make([]Member, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var m Member
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			n.log.WarnContext(ctx, "unreadable fleet member entry", "key", string(kv.Key), "error", err)
			m = Member{}
		}
		m.Name = n.keys.nodeOf(kv.Key) // the key is what counts
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// liveNames returns the names of the live members.
func (n *Node) liveNames(ctx context.Context) (map[string]bool, error) {
	resp, err := n.client.Get(ctx, n.keys.nodes(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[n.keys.nodeOf(kv.Key)] = true
	}
	return out, nil
}

// Close leaves the fleet: it stops the follower, cleans up what it
// presented (unless Options.Presented was given), withdraws the answers
// this node published and revokes the membership lease. The etcd client
// stays open.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.cancel()
	n.wg.Wait()
	n.mu.Lock()
	pubs := n.published
	n.published = map[string]*published{}
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	var errs []error
	if n.ownsPresented {
		errs = append(errs, n.presented.CleanUp(ctx))
	}
	for _, p := range pubs {
		n.revoke(p.lease) // deletes the answer
	}
	if l := n.setLease(0); l != 0 {
		if _, err := n.client.Revoke(ctx, l); err != nil {
			errs = append(errs, fmt.Errorf("leaving the fleet: revoking the membership lease (it expires within %ds): %w", n.ttl, err))
		}
	}
	if !n.observer {
		n.log.Info("left the fleet")
	}
	return errors.Join(errs...)
}

// enter registers a goroutine that must end before Close returns, and
// returns a context that ends with ctx or at Close.
func (n *Node) enter(ctx context.Context) (context.Context, func(), error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, nil, ErrClosed
	}
	n.wg.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(n.ctx, cancel)
	return ctx, func() { stop(); cancel(); n.wg.Done() }, nil
}
