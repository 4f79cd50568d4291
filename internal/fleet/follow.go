package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/solve"
)

// Presented remembers the answers a follower presented and has not cleaned
// up yet, each with the solver that presented it (CleanUp must reach the
// same solver). The zero value is ready to use; it is safe for concurrent
// use, but one Node at a time follows with it.
type Presented struct {
	mu sync.Mutex
	m  map[string]*held // by answer id
}

// held is one answer a follower presented.
type held struct {
	ch      solve.Challenge
	path    string
	orderer string
	solver  solve.Solver
}

func (p *Presented) get(id string) *held {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[id]
}

func (p *Presented) add(id string, h *held) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]*held{}
	}
	p.m[id] = h
}

func (p *Presented) take(id string) *held {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.m[id]
	delete(p.m, id)
	return h
}

func (p *Presented) ids() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.m))
	for id := range p.m {
		out = append(out, id)
	}
	return out
}

// Len returns the number of answers presented and not cleaned up.
func (p *Presented) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}

// CleanUp cleans up every answer still presented, even when ctx is
// cancelled (each under its own timeout).
func (p *Presented) CleanUp(ctx context.Context) error {
	var errs []error
	for _, id := range p.ids() {
		if h := p.take(id); h != nil {
			if err := cleanUp(ctx, h.solver, h.ch); err != nil {
				errs = append(errs, fmt.Errorf("cleaning up %s for %s on path %s: %w", h.ch.Type, h.ch.Identifier.Value, h.path, err))
			}
		}
	}
	return errors.Join(errs...)
}

// cleanUp runs s's CleanUp of ch under its own timeout, even when ctx is
// cancelled.
func cleanUp(ctx context.Context, s solve.Solver, ch solve.Challenge) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	return s.CleanUp(ctx, ch)
}

// errResync ends a watch so that the answers are read again.
var errResync = errors.New("re-reading the answers")

// Follow presents, with this node's own paths, the answers the other
// members publish, acknowledges each, and cleans each up when it is
// withdrawn (or its orderer dies), until ctx ends (it then returns ctx's
// error) or the node is closed (ErrClosed). paths returns this node's
// path of a name, built from the same configuration as the orderer's, or
// why it has none (the error is acknowledged to the orderer); the
// solvers it returns must stay usable as long as Follow runs. Answers this
// node published itself are left alone (Mirror presents them).
//
// Follow reads the published answers, then watches them from that
// revision; it reads them again after a compaction, a lost watch or a new
// membership lease (acknowledgements live under the lease). What it
// presented is kept in Options.Presented: answers presented earlier are
// not presented again, only acknowledged; answers withdrawn while it was
// not watching are cleaned up. It leaves answers in place when it returns
// (Close, or Presented.CleanUp, removes them). One Follow runs at a time
// per Node.
func (n *Node) Follow(ctx context.Context, paths func(name string) (solve.Solver, error)) error {
	outer := ctx
	ctx, done, err := n.enter(ctx)
	if err != nil {
		return fmt.Errorf("following the fleet's answers: %w", err)
	}
	defer done()
	n.mu.Lock()
	if n.observer {
		n.mu.Unlock()
		return errors.New("following the fleet's answers: this node only observes the fleet (Observe); a member follows (Join)")
	}
	if n.following {
		n.mu.Unlock()
		return errors.New("following the fleet's answers: this node already follows them")
	}
	n.following = true
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		n.following = false
		n.mu.Unlock()
	}()
	f := &follower{n: n, paths: paths, slots: map[string]*slot{}}
	defer f.wg.Wait()
	n.log.InfoContext(ctx, "following the fleet's answers")
	wait := 100 * time.Millisecond
	for {
		_, changed := n.current()
		rev, err := f.sync(ctx)
		if err == nil {
			wait = 100 * time.Millisecond
			err = f.watch(ctx, rev, changed)
		}
		switch {
		case outer.Err() != nil:
			return outer.Err()
		case ctx.Err() != nil:
			return ErrClosed
		case n.client.Ctx().Err() != nil:
			return errors.New("following the fleet's answers: the etcd client was closed")
		case errors.Is(err, errResync):
			continue
		}
		n.log.WarnContext(ctx, "following the fleet's answers: reading them again", "error", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		wait = min(2*wait, maxBackoff)
	}
}

// follower is one run of Follow.
type follower struct {
	n     *Node
	paths func(string) (solve.Solver, error)
	wg    sync.WaitGroup

	mu    sync.Mutex
	slots map[string]*slot // by answer id
}

// slot is what the follower knows of one answer and what it should do:
// one worker at a time brings the node in line with want.
type slot struct {
	want  *answer // nil: withdrawn
	rev   int64   // the answer's ModRevision
	gen   int     // incremented at every change of want
	busy  bool    // a worker runs
	acked ackMark // the last acknowledgement written
}

type ackMark struct {
	rev   int64
	lease clientv3.LeaseID
}

// sync reads every published answer and sets each slot's goal: answers
// published are presented (or acknowledged again), answers this node
// presented that are gone are cleaned up. It returns the revision read.
func (f *follower) sync(ctx context.Context) (int64, error) {
	n := f.n
	resp, err := n.client.Get(ctx, n.keys.answers(), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("reading the fleet's answers: %w", err)
	}
	seen := map[string]bool{}
	for _, kv := range resp.Kvs {
		id := n.keys.idOf(kv.Key)
		seen[id] = true
		f.published(ctx, id, kv.Value, kv.ModRevision)
	}
	f.mu.Lock()
	var gone []string
	for id := range f.slots {
		if !seen[id] {
			gone = append(gone, id)
		}
	}
	f.mu.Unlock()
	for _, id := range append(gone, n.presented.ids()...) {
		if !seen[id] {
			f.set(ctx, id, nil, 0)
		}
	}
	return resp.Header.Revision, nil
}

// watch follows the answers changed after revision rev (the read's) until
// an error, a compaction, or a change of the node's lease (changed). It
// watches from rev itself, skipping what rev held, not from rev+1: etcd
// answers the progress requests of a gRPC stream only while none of its
// watches starts beyond the store's revision, and this watch shares its
// stream with the deployer's, whose probes went unanswered in a quiet
// fleet (it then read every certificate again, every few seconds).
func (f *follower) watch(ctx context.Context, rev int64, changed <-chan struct{}) error {
	n := f.n
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := n.client.Watch(wctx, n.keys.answers(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
			return errResync
		case r, ok := <-wch:
			if !ok {
				return errors.New("the watch of the answers ended")
			}
			if r.CompactRevision != 0 {
				n.log.InfoContext(ctx, "the answers' history was compacted; reading them again", "revision", r.CompactRevision)
				return errResync
			}
			if err := r.Err(); err != nil {
				return fmt.Errorf("watching the fleet's answers: %w", err)
			}
			for _, ev := range r.Events {
				if ev.Kv.ModRevision <= rev {
					continue // in the read already
				}
				id := n.keys.idOf(ev.Kv.Key)
				switch ev.Type {
				case clientv3.EventTypePut:
					f.published(ctx, id, ev.Kv.Value, ev.Kv.ModRevision)
				case clientv3.EventTypeDelete:
					f.set(ctx, id, nil, 0)
				}
			}
		}
	}
}

// published handles the value of answer id at revision rev.
func (f *follower) published(ctx context.Context, id string, val []byte, rev int64) {
	var a answer
	if err := json.Unmarshal(val, &a); err != nil {
		f.n.log.WarnContext(ctx, "unreadable answer in etcd; ignored", "id", id, "error", err)
		return
	}
	if a.Orderer == f.n.name {
		return // Mirror presented it here
	}
	f.set(ctx, id, &a, rev)
}

// set records the goal for answer id and starts its worker unless one
// runs (it picks the new goal up when it is done).
func (f *follower) set(ctx context.Context, id string, want *answer, rev int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.slots[id]
	if s == nil {
		if want == nil && f.n.presented.get(id) == nil {
			return // neither published nor presented
		}
		s = &slot{}
		f.slots[id] = s
	}
	s.want, s.rev = want, rev
	s.gen++
	if !s.busy {
		s.busy = true
		f.wg.Go(func() { f.work(ctx, id, s) })
	}
}

// work applies slot s's goal until it no longer changes.
func (f *follower) work(ctx context.Context, id string, s *slot) {
	for {
		f.mu.Lock()
		want, rev, gen := s.want, s.rev, s.gen
		f.mu.Unlock()
		f.apply(ctx, id, s, want, rev, gen)
		f.mu.Lock()
		if s.gen == gen || ctx.Err() != nil {
			s.busy = false
			if s.want == nil && f.slots[id] == s {
				delete(f.slots, id)
			}
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
	}
}

// superseded reports whether s's goal changed since gen.
func (f *follower) superseded(s *slot, gen int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return s.gen != gen
}

// apply brings the node in line with answer a (nil: withdrawn) of
// ModRevision rev.
func (f *follower) apply(ctx context.Context, id string, s *slot, a *answer, rev int64, gen int) {
	n := f.n
	if a == nil {
		h := n.presented.take(id)
		if h == nil {
			return
		}
		log := n.log.With("identifier", h.ch.Identifier.Value, "challenge", h.ch.Type, "path", h.path, "orderer", h.orderer, "id", id)
		if err := cleanUp(ctx, h.solver, h.ch); err != nil {
			log.ErrorContext(ctx, "cleaning up the fleet's answer failed", "error", err)
		} else {
			log.InfoContext(ctx, "answer cleaned up: the orderer withdrew it")
		}
		// The orderer deletes the acknowledgements, unless it died.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), attemptTimeout)
		_, _ = n.client.Delete(dctx, n.keys.ack(id, n.name))
		cancel()
		return
	}
	log := n.log.With("identifier", a.Challenge.Identifier.Value, "challenge", a.Challenge.Type, "path", a.Path, "orderer", a.Orderer, "id", id)
	lease, _ := n.current()
	f.mu.Lock()
	acked := s.acked
	f.mu.Unlock()
	if lease != 0 && acked == (ackMark{rev: rev, lease: lease}) {
		return
	}
	var perr error
	if n.presented.get(id) == nil {
		perr = f.present(ctx, log, id, a)
		if perr != nil && ctx.Err() != nil {
			return // Follow is ending: no verdict
		}
	}
	f.ack(ctx, log, id, s, rev, gen, perr)
}

// present presents answer a with this node's path of the same name.
func (f *follower) present(ctx context.Context, log *slog.Logger, id string, a *answer) error {
	n := f.n
	ch, err := a.Challenge.challenge()
	if err != nil {
		err = fmt.Errorf("the answer published by %s is malformed: %w", a.Orderer, err)
		log.WarnContext(ctx, "cannot present the fleet's answer", "error", err)
		return err
	}
	solver, err := f.paths(a.Path)
	if err != nil {
		err = fmt.Errorf("path %q on node %s, which the orderer (%s) used: %w", a.Path, n.name, a.Orderer, err)
		log.WarnContext(ctx, "cannot present the fleet's answer", "error", err)
		return err
	}
	if solver.Type() != ch.Type {
		err = fmt.Errorf("path %q on node %s answers %s, not %s: its configuration differs from the orderer's (%s); give every node of the fleet the same paths",
			a.Path, n.name, solver.Type(), ch.Type, a.Orderer)
		log.WarnContext(ctx, "cannot present the fleet's answer", "error", err)
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, n.opts.PresentTimeout)
	err = solver.Present(pctx, ch)
	timedOut := pctx.Err() != nil && ctx.Err() == nil
	cancel()
	if err != nil {
		if timedOut {
			err = fmt.Errorf("presenting took longer than %v: %w", n.opts.PresentTimeout, err)
		}
		log.WarnContext(ctx, "presenting the fleet's answer failed", "error", err)
		// CleanUp undoes what a failed Present left halfway.
		if cerr := cleanUp(ctx, solver, ch); cerr != nil {
			log.WarnContext(ctx, "cleaning up after the failed present", "error", cerr)
		}
		return err
	}
	n.presented.add(id, &held{ch: ch, path: a.Path, orderer: a.Orderer, solver: solver})
	log.InfoContext(ctx, "answer presented for the fleet")
	return nil
}

// ack writes this node's acknowledgement of answer id at ModRevision rev
// (perr nil: presented) under its lease, retrying until it is written,
// the answer changes, or the node is not a member (the next join reads the
// answers again and acknowledges then).
func (f *follower) ack(ctx context.Context, log *slog.Logger, id string, s *slot, rev int64, gen int, perr error) {
	n := f.n
	a := ack{OK: perr == nil}
	if perr != nil {
		a.Error = perr.Error()
	}
	val, err := json.Marshal(a)
	if err != nil {
		return
	}
	wait := 50 * time.Millisecond
	for {
		lease, _ := n.current()
		if lease == 0 {
			log.InfoContext(ctx, "not acknowledging the answer while out of the fleet")
			return
		}
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		resp, err := n.client.Txn(actx).
			If(clientv3.Compare(clientv3.ModRevision(n.keys.answer(id)), "=", rev)).
			Then(clientv3.OpPut(n.keys.ack(id, n.name), string(val), clientv3.WithLease(lease))).Commit()
		cancel()
		if err == nil {
			if resp.Succeeded {
				f.mu.Lock()
				s.acked = ackMark{rev: rev, lease: lease}
				f.mu.Unlock()
				log.InfoContext(ctx, "answer acknowledged", "ok", a.OK)
			}
			// Otherwise the answer changed or was withdrawn: its event
			// follows.
			return
		}
		if ctx.Err() != nil || n.client.Ctx().Err() != nil || f.superseded(s, gen) {
			return
		}
		log.DebugContext(ctx, "acknowledging the answer failed; retrying", "error", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		wait = min(2*wait, maxBackoff)
	}
}
