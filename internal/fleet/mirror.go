package fleet

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// DefaultAckTimeout is how long the orderer's Present waits for the other
// members to acknowledge an answer.
const DefaultAckTimeout = 30 * time.Second

// pollInterval is how often the orderer reads the acknowledgements even
// without a watch event (a watch that broke with a member).
const pollInterval = time.Second

// MirrorOptions configure Mirror.
type MirrorOptions struct {
	// AckTimeout bounds publishing an answer and waiting for every other
	// live member to acknowledge it; zero means DefaultAckTimeout.
	AckTimeout time.Duration
}

// Mirror returns inner, the solver of the path named path, wrapped so that
// every live member of the fleet presents its answers too: Present runs
// inner's Present, publishes the challenge and waits for the others'
// acknowledgements; CleanUp withdraws it, then runs inner's CleanUp (see
// the package documentation). path must be the name every node gives the
// path in its configuration: the followers look their own path up by it.
//
// Only http-01 and tls-alpn-01 solvers are wrapped; others (the DNS
// challenges, answered wherever they are set) are returned as they are.
// The result is a solve.Waiter exactly when inner is one.
func (n *Node) Mirror(path string, inner solve.Solver, opts MirrorOptions) solve.Solver {
	if !mirrored(inner.Type()) {
		return inner
	}
	opts.AckTimeout = cmp.Or(opts.AckTimeout, DefaultAckTimeout)
	m := &mirror{n: n, path: path, inner: inner, opts: opts}
	if _, ok := inner.(solve.Waiter); ok {
		return &waitingMirror{m}
	}
	return m
}

// mirror is a solver whose answers every member presents.
type mirror struct {
	n     *Node
	path  string
	inner solve.Solver
	opts  MirrorOptions
}

// waitingMirror is a mirror around a solve.Waiter.
type waitingMirror struct{ *mirror }

var (
	_ solve.Solver = (*mirror)(nil)
	_ solve.Waiter = (*waitingMirror)(nil)
)

// Wait implements solve.Waiter with the inner solver's Wait.
func (w *waitingMirror) Wait(ctx context.Context, ch solve.Challenge) error {
	return w.inner.(solve.Waiter).Wait(ctx, ch)
}

// Inner returns the wrapped solver.
func (m *mirror) Inner() solve.Solver { return m.inner }

// Close closes the inner solver when it holds resources.
func (m *mirror) Close() error {
	if c, ok := m.inner.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Type implements solve.Solver.
func (m *mirror) Type() string { return m.inner.Type() }

// Check implements solve.Solver with the inner solver's Check: the other
// nodes' paths are checked when they present.
func (m *mirror) Check(ctx context.Context, id ident.Identifier) error { return m.inner.Check(ctx, id) }

// published is an answer this node published, under a lease of its own.
type published struct {
	lease clientv3.LeaseID
	stop  context.CancelFunc // ends the keepalive
}

// Present implements solve.Solver: inner's Present, then every other live
// member's. What it published stays until CleanUp, even when it fails.
func (m *mirror) Present(ctx context.Context, ch solve.Challenge) error {
	if err := m.inner.Present(ctx, ch); err != nil {
		return err
	}
	ctx, done, err := m.n.enter(ctx)
	if err != nil {
		return fmt.Errorf("presenting %s for %s on the fleet: %w", ch.Type, ch.Identifier.Value, err)
	}
	defer done()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, m.opts.AckTimeout)
	defer cancel()
	log := m.n.log.With("identifier", ch.Identifier.Value, "challenge", ch.Type, "path", m.path)

	live, err := m.n.liveNames(ctx)
	if err != nil {
		return fmt.Errorf("listing the fleet's members: %w", err)
	}
	var others []string
	for name := range live {
		if name != m.n.name {
			others = append(others, name)
		}
	}
	slices.Sort(others)
	id := answerID(m.n.name, m.path, ch)
	rev, err := m.publish(ctx, id, ch)
	if err != nil {
		return fmt.Errorf("publishing the answer for %s in etcd: %w", ch.Identifier.Value, err)
	}
	log.InfoContext(ctx, "answer published to the fleet", "id", id, "waiting_for", others)
	if len(others) == 0 {
		return nil
	}
	start := time.Now()
	left, err := m.wait(ctx, parent, id, rev, others, ch)
	if err != nil {
		log.WarnContext(ctx, "the fleet did not confirm the answer", "error", err)
		return err
	}
	if len(left) > 0 {
		log.WarnContext(ctx, "every live member presented the answer; some left the fleet meanwhile (their lease ended) and present nothing",
			"presented", slices.DeleteFunc(slices.Clone(others), func(n string) bool { return slices.Contains(left, n) }), "left", left,
			"elapsed", time.Since(start).Round(time.Millisecond))
		return nil
	}
	log.InfoContext(ctx, "every member presented the answer", "members", others, "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// publish puts the answer under a new lease kept alive until CleanUp (or
// Close, or this process's end), clearing earlier acknowledgements, and
// returns the revision of the put.
func (m *mirror) publish(ctx context.Context, id string, ch solve.Challenge) (int64, error) {
	n := m.n
	val, err := json.Marshal(answer{Path: m.path, Orderer: n.name, Challenge: toWire(ch)})
	if err != nil {
		return 0, err
	}
	var grant *clientv3.LeaseGrantResponse
	err = n.retry(ctx, func(ctx context.Context) error {
		var err error
		grant, err = n.client.Grant(ctx, n.ttl)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("taking a lease: %w", err)
	}
	kactx, stop := context.WithCancel(n.ctx)
	ka, err := n.client.KeepAlive(kactx, grant.ID)
	if err != nil {
		stop()
		n.revoke(grant.ID)
		return 0, fmt.Errorf("keeping the lease alive: %w", err)
	}
	p := &published{lease: grant.ID, stop: stop}
	n.mu.Lock()
	old := n.published[id]
	n.published[id] = p
	n.mu.Unlock()
	if old != nil { // presented again without CleanUp
		old.stop()
		n.revoke(old.lease)
	}
	n.wg.Go(func() {
		for range ka {
		}
		if kactx.Err() == nil {
			n.log.Warn("the lease of a published answer was lost: the followers withdraw it", "id", id,
				"identifier", ch.Identifier.Value, "challenge", ch.Type, "path", m.path)
		}
	})
	var rev int64
	err = n.retry(ctx, func(ctx context.Context) error {
		resp, err := n.client.Txn(ctx).Then(
			clientv3.OpPut(n.keys.answer(id), string(val), clientv3.WithLease(grant.ID)),
			clientv3.OpDelete(n.keys.acks(id), clientv3.WithPrefix()),
		).Commit()
		if err == nil {
			rev = resp.Header.Revision
		}
		return err
	})
	return rev, err
}

// wait returns, with those of others that left the fleet meanwhile, once
// every one of others that is still a member has acknowledged answer id
// (published at revision rev), or fails with an
// AckError when some acknowledged an error (once every member has
// answered, so that the error names all of them) or ctx's deadline
// passed. parent is ctx without the AckTimeout.
func (m *mirror) wait(ctx, parent context.Context, id string, rev int64, others []string, ch solve.Challenge) (left []string, err error) {
	n := m.n
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	var acks, nodes clientv3.WatchChan
	watch := func() {
		if acks == nil {
			// From rev, not rev+1 (events are only wake-ups here): a
			// watch starting beyond the store's revision stops etcd from
			// answering the progress requests of the stream it shares
			// with the deployer's watch.
			acks = n.client.Watch(wctx, n.keys.acks(id), clientv3.WithPrefix(), clientv3.WithRev(rev))
		}
		if nodes == nil {
			nodes = n.client.Watch(wctx, n.keys.nodes(), clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithKeysOnly())
		}
	}
	watch()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	pending, lastErr := others, error(nil)
	var failed []NodeFailure
	for {
		st, err := m.collect(ctx, id, others)
		if err == nil {
			if st.gone {
				return nil, fmt.Errorf("the answer for %s vanished from etcd before every member presented it: its lease was lost "+
					"(etcd did not answer within the TTL of %ds); the followers have withdrawn it", ch.Identifier.Value, n.ttl)
			}
			if len(st.pending) == 0 {
				if len(st.failed) > 0 {
					return nil, &AckError{Path: m.path, Identifier: ch.Identifier.Value, Failed: st.failed}
				}
				return st.left, nil
			}
			pending, failed, lastErr = st.pending, st.failed, nil
		} else if ctx.Err() == nil {
			lastErr = err
			n.log.DebugContext(ctx, "reading the acknowledgements", "id", id, "error", err)
		}
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				return nil, fmt.Errorf("waiting for the fleet to present the answer for %s: %w", ch.Identifier.Value, parent.Err())
			}
			return nil, &AckError{Path: m.path, Identifier: ch.Identifier.Value, Failed: failed, Missing: pending, Timeout: m.opts.AckTimeout, Err: lastErr}
		case r, ok := <-acks:
			if !ok || r.Err() != nil {
				acks = nil // watched again at the next tick
			}
		case r, ok := <-nodes:
			if !ok || r.Err() != nil {
				nodes = nil
			}
		case <-tick.C:
			watch()
		}
	}
}

// ackState is what the members said about one answer so far.
type ackState struct {
	pending []string      // expected, still members, not acknowledged
	left    []string      // expected, no longer members, not acknowledged
	failed  []NodeFailure // acknowledged with an error
	gone    bool          // the answer is no longer published
}

// collect reads the acknowledgements of answer id, the live members, and
// whether the answer is still there.
func (m *mirror) collect(ctx context.Context, id string, expected []string) (ackState, error) {
	n := m.n
	resp, err := n.client.Get(ctx, n.keys.acks(id), clientv3.WithPrefix())
	if err != nil {
		return ackState{}, err
	}
	there, err := n.client.Get(ctx, n.keys.answer(id), clientv3.WithCountOnly())
	if err != nil {
		return ackState{}, err
	}
	if there.Count == 0 {
		return ackState{gone: true}, nil
	}
	live, err := n.liveNames(ctx)
	if err != nil {
		return ackState{}, err
	}
	var st ackState
	acked := map[string]bool{}
	for _, kv := range resp.Kvs {
		node := n.keys.ackNode(id, kv.Key)
		var a ack
		if err := json.Unmarshal(kv.Value, &a); err != nil {
			a = ack{Error: fmt.Sprintf("unreadable acknowledgement: %v", err)}
		}
		acked[node] = true
		if !a.OK {
			st.failed = append(st.failed, NodeFailure{Node: node, Error: a.Error})
		}
	}
	for _, name := range expected {
		switch {
		case acked[name]:
		case live[name]:
			st.pending = append(st.pending, name)
		default:
			st.left = append(st.left, name)
		}
	}
	return st, nil
}

// CleanUp implements solve.Solver: the answer and its acknowledgements are
// deleted (the followers clean up when they see it), then inner's CleanUp
// runs. It goes on when ctx is cancelled. If etcd cannot be reached, the
// answer vanishes by itself when its lease, no longer kept alive, expires.
func (m *mirror) CleanUp(ctx context.Context, ch solve.Challenge) error {
	n := m.n
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	id := answerID(n.name, m.path, ch)
	log := n.log.With("identifier", ch.Identifier.Value, "challenge", ch.Type, "path", m.path, "id", id)
	n.mu.Lock()
	p := n.published[id]
	delete(n.published, id)
	n.mu.Unlock()
	var errs []error
	dctx, dcancel := context.WithTimeout(ctx, 2*attemptTimeout)
	err := n.retry(dctx, func(ctx context.Context) error {
		_, err := n.client.Txn(ctx).Then(
			clientv3.OpDelete(n.keys.answer(id)),
			clientv3.OpDelete(n.keys.acks(id), clientv3.WithPrefix()),
		).Commit()
		return err
	})
	dcancel()
	if p != nil {
		p.stop()
		n.revoke(p.lease)
	}
	switch {
	case err == nil:
		log.InfoContext(ctx, "answer withdrawn from the fleet")
	case p != nil:
		log.WarnContext(ctx, "could not delete the answer from etcd; it vanishes when its lease expires",
			"ttl", time.Duration(n.ttl)*time.Second, "error", err)
	default:
		errs = append(errs, fmt.Errorf("withdrawing the answer for %s from the fleet: %w", ch.Identifier.Value, err))
	}
	if err := m.inner.CleanUp(ctx, ch); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// NodeFailure is a member's error presenting an answer.
type NodeFailure struct {
	Node  string
	Error string
}

// AckError reports that the fleet did not confirm an answer: members
// failed to present it (Failed), or did not acknowledge it within Timeout
// (Missing). The CA must not be asked to validate then: the load balancer
// may send it to one of them.
type AckError struct {
	Path       string
	Identifier string
	Failed     []NodeFailure
	Missing    []string
	Timeout    time.Duration
	// Err is the last error reading the acknowledgements from etcd, if
	// the wait ended with one.
	Err error
}

func (e *AckError) Error() string {
	var parts []string
	for _, f := range e.Failed {
		parts = append(parts, fmt.Sprintf("node %s could not present the answer for %s on path %s: %s", f.Node, e.Identifier, e.Path, f.Error))
	}
	if len(e.Missing) > 0 {
		s := fmt.Sprintf("no acknowledgement within %v from %s %s for %s on path %s: check that detour runs its fleet follower there and reaches etcd (its log says why), "+
			"or stop it so that it leaves the fleet", e.Timeout, plural(len(e.Missing), "node", "nodes"), strings.Join(e.Missing, ", "), e.Identifier, e.Path)
		if e.Err != nil {
			s += fmt.Sprintf(" (reading the acknowledgements from etcd: %v)", e.Err)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func (e *AckError) Unwrap() error { return e.Err }

// LogValue implements slog.LogValuer.
func (e *AckError) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("path", e.Path), slog.String("identifier", e.Identifier)}
	for _, f := range e.Failed {
		attrs = append(attrs, slog.String("failed_"+f.Node, f.Error))
	}
	if len(e.Missing) > 0 {
		attrs = append(attrs, slog.Any("missing", e.Missing), slog.Duration("timeout", e.Timeout))
	}
	return slog.GroupValue(attrs...)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
