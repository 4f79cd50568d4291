package fleet

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/webroot"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// testPresentWaitsForEveryMember: the orderer's Present returns only once
// both other nodes have presented (their paths are slow on purpose), and
// CleanUp makes every node clean up and leaves no key behind.
func testPresentWaitsForEveryMember(t *testing.T, c *etcdtest.Cluster) {
	f := onCluster(t, c)
	web1, cli := f.join("web1")
	web2, _ := f.join("web2")
	web3, _ := f.join("web3")
	fake1, fake2, fake3 := newFake(), newFake(), newFake()
	fake2.delay, fake3.delay = 300*time.Millisecond, 500*time.Millisecond
	f.follow(web1, map[string]solve.Solver{"web": newFake()}) // the orderer follows too, and leaves its own answers alone
	f.follow(web2, map[string]solve.Solver{"web": fake2})
	f.follow(web3, map[string]solve.Solver{"web": fake3})

	s := web1.Mirror("web", fake1, MirrorOptions{AckTimeout: 10 * time.Second})
	ch := challenge(t, "example.com", "tok-en_1")
	ctx := context.Background()
	if err := s.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	for name, fk := range map[string]*fakeSolver{"web1": fake1, "web2": fake2, "web3": fake3} {
		if !fk.holds(ch) {
			t.Errorf("%s does not hold the answer when Present returns", name)
		}
	}
	if acks := f.keys(cli, "acks/"); len(acks) != 2 {
		t.Errorf("acks = %v, want web2's and web3's", acks)
	}
	if err := s.CleanUp(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if fake1.holds(ch) {
		t.Error("web1 still holds the answer after CleanUp")
	}
	eventually(t, 5*time.Second, "web2 and web3 clean up", func() bool { return !fake2.holds(ch) && !fake3.holds(ch) })
	for name, fk := range map[string]*fakeSolver{"web1": fake1, "web2": fake2, "web3": fake3} {
		if p, c := fk.counts(ch); p != 1 || c != 1 {
			t.Errorf("%s: %d presents and %d cleanups, want 1 and 1", name, p, c)
		}
	}
	if left := append(f.keys(cli, "answers/"), f.keys(cli, "acks/")...); len(left) != 0 {
		t.Errorf("keys left after CleanUp: %v", left)
	}
}

// testWebrootOnEveryNode: a real path end to end. Every node has a
// webroot of its own; after the orderer's Present each one holds the
// token file with the key authorization, after CleanUp none does.
func testWebrootOnEveryNode(t *testing.T, c *etcdtest.Cluster) {
	f := onCluster(t, c)
	roots := map[string]string{}
	var orderer solve.Solver
	for _, name := range []string{"web1", "web2", "web3"} {
		roots[name] = t.TempDir()
		w, err := webroot.New(webroot.Options{Root: roots[name]})
		if err != nil {
			t.Fatal(err)
		}
		n, _ := f.join(name)
		if name == "web1" {
			orderer = n.Mirror("docroot", w, MirrorOptions{AckTimeout: 10 * time.Second})
		}
		f.follow(n, map[string]solve.Solver{"docroot": w})
	}
	ch := challenge(t, "www.example.com", "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0")
	ctx := context.Background()
	if err := orderer.Check(ctx, ch.Identifier); err != nil {
		t.Fatal(err)
	}
	if err := orderer.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	for name, root := range roots {
		b, err := os.ReadFile(filepath.Join(root, ".well-known", "acme-challenge", ch.Token))
		if err != nil || string(b) != ch.KeyAuthorization {
			t.Errorf("%s's webroot: %q, %v; want the key authorization", name, b, err)
		}
	}
	if err := orderer.CleanUp(ctx, ch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "every webroot is clean", func() bool {
		for _, root := range roots {
			if _, err := os.Stat(filepath.Join(root, ".well-known")); !errors.Is(err, os.ErrNotExist) {
				return false
			}
		}
		return true
	})
}

// testFollowerErrorFailsPresent: a follower whose path fails, and one
// whose configuration lacks the path, fail the orderer's Present, each
// named with its error; CleanUp still clears everything.
func testFollowerErrorFailsPresent(t *testing.T, c *etcdtest.Cluster) {
	f := onCluster(t, c)
	web1, cli := f.join("web1")
	web2, _ := f.join("web2")
	web3, _ := f.join("web3")
	fake1, fake2 := newFake(), newFake()
	fake2.err = errors.New("webroot /srv/www is not writable by Detour")
	f.follow(web2, map[string]solve.Solver{"web": fake2})
	f.follow(web3, map[string]solve.Solver{"other": newFake()})

	s := web1.Mirror("web", fake1, MirrorOptions{AckTimeout: 10 * time.Second})
	ch := challenge(t, "example.com", "token2")
	start := time.Now()
	err := s.Present(context.Background(), ch)
	ae := ackError(t, err)
	if time.Since(start) > 5*time.Second {
		t.Errorf("Present took %v: an error acknowledgement must end the wait", time.Since(start))
	}
	for _, want := range []string{
		"node web2 could not present the answer for example.com on path web: webroot /srv/www is not writable by Detour",
		`path "web" on node web3, which the orderer (web1) used: this node's configuration has no such path`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if len(ae.Failed) != 2 || len(ae.Missing) != 0 {
		t.Errorf("AckError = %+v", ae)
	}
	if fake2.holds(ch) {
		t.Error("web2 holds an answer whose Present failed")
	}
	if err := s.CleanUp(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	if left := append(f.keys(cli, "answers/"), f.keys(cli, "acks/")...); len(left) != 0 {
		t.Errorf("keys left after CleanUp: %v", left)
	}
}

// testSilentMemberTimesOut: a node that joined but does not follow fails
// Present after AckTimeout, by name.
func testSilentMemberTimesOut(t *testing.T, c *etcdtest.Cluster) {
	f := onCluster(t, c)
	web1, _ := f.join("web1")
	web2, _ := f.join("web2")
	f.join("web3") // never follows
	fake2 := newFake()
	f.follow(web2, map[string]solve.Solver{"web": fake2})

	const timeout = time.Second
	s := web1.Mirror("web", newFake(), MirrorOptions{AckTimeout: timeout})
	ch := challenge(t, "example.com", "token3")
	start := time.Now()
	err := s.Present(context.Background(), ch)
	elapsed := time.Since(start)
	ae := ackError(t, err)
	if !slices.Equal(ae.Missing, []string{"web3"}) || len(ae.Failed) != 0 {
		t.Fatalf("AckError = %+v, want web3 missing", ae)
	}
	if !strings.Contains(err.Error(), "no acknowledgement within 1s from node web3") {
		t.Errorf("error %q does not name web3 and the timeout", err)
	}
	if elapsed < timeout || elapsed > timeout+3*time.Second {
		t.Errorf("Present took %v, want about %v", elapsed, timeout)
	}
	if !fake2.holds(ch) {
		t.Error("web2 did not present")
	}
	if err := s.CleanUp(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
}

// testMemberLeavingIsNotWaitedFor: a silent node that leaves the fleet
// during the wait no longer holds Present up.
func testMemberLeavingIsNotWaitedFor(t *testing.T, c *etcdtest.Cluster) {
	f := onCluster(t, c)
	web1, _ := f.join("web1")
	web2, _ := f.join("web2")
	web3, _ := f.join("web3") // never follows
	f.follow(web2, map[string]solve.Solver{"web": newFake()})
	s := web1.Mirror("web", newFake(), MirrorOptions{AckTimeout: 20 * time.Second})
	go func() {
		time.Sleep(500 * time.Millisecond) // web3 leaves while Present waits
		web3.Close()
	}()
	start := time.Now()
	ch := challenge(t, "example.com", "token4")
	if err := s.Present(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Present took %v after web3 left", d)
	}
	if logs := f.logs.String(); !strings.Contains(logs, "some left the fleet meanwhile") || !strings.Contains(logs, "left=[web3]") ||
		strings.Contains(logs, "every member presented the answer") {
		t.Errorf("the log does not say web3 left rather than presented:\n%s", logs)
	}
	if err := s.CleanUp(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
}

// testOrdererDeath: the orderer's process dies (its client closes) after
// Present: its answer vanishes when the lease expires and every follower
// cleans up.
func testOrdererDeath(t *testing.T, c *etcdtest.Cluster) {
	f := onCluster(t, c)
	web1, cli1 := f.join("web1")
	web2, cli2 := f.join("web2")
	web3, _ := f.join("web3")
	fake2, fake3 := newFake(), newFake()
	f.follow(web2, map[string]solve.Solver{"web": fake2})
	f.follow(web3, map[string]solve.Solver{"web": fake3})
	s := web1.Mirror("web", newFake(), MirrorOptions{AckTimeout: 10 * time.Second})
	ch := challenge(t, "example.com", "token5")
	if err := s.Present(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	if len(f.keys(cli2, "answers/")) != 1 {
		t.Fatal("no answer published")
	}
	died := time.Now()
	cli1.Close()
	eventually(t, 3*testTTL, "the answer vanishes", func() bool { return len(f.keys(cli2, "answers/")) == 0 })
	eventually(t, 5*time.Second, "the followers clean up", func() bool { return !fake2.holds(ch) && !fake3.holds(ch) })
	if d := time.Since(died); d < testTTL/2 {
		t.Errorf("the answer vanished %v after the death, before its lease could expire", d)
	}
	eventually(t, 5*time.Second, "the followers' acknowledgements are gone", func() bool { return len(f.keys(cli2, "acks/")) == 0 })
}

// testFollowerRestart: a follower goes away (its Node closed, lease
// revoked) and comes back as a new Node with the same name and the same
// memory: the answer still published is not presented twice but
// acknowledged again; the one withdrawn meanwhile is cleaned up; the one
// published meanwhile is presented.
func testFollowerRestart(t *testing.T, c *etcdtest.Cluster) {
	f := onCluster(t, c)
	web1, cli := f.join("web1")
	var mem Presented
	web2, _ := f.join("web2", func(o *Options) { o.Presented = &mem })
	fake2 := newFake()
	stop := f.follow(web2, map[string]solve.Solver{"web": fake2})
	s := web1.Mirror("web", newFake(), MirrorOptions{AckTimeout: 10 * time.Second})
	ctx := context.Background()
	kept, withdrawn, added := challenge(t, "a.example.com", "kept"), challenge(t, "b.example.com", "withdrawn"), challenge(t, "c.example.com", "added")
	for _, ch := range []solve.Challenge{kept, withdrawn} {
		if err := s.Present(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow returned %v, want context.Canceled", err)
	}
	if err := web2.Close(); err != nil {
		t.Fatal(err)
	}
	if mem.Len() != 2 {
		t.Fatalf("Close of a node with a shared memory cleaned up: %d answers held", mem.Len())
	}
	if err := s.CleanUp(ctx, withdrawn); err != nil {
		t.Fatal(err)
	}
	if err := s.Present(ctx, added); err != nil { // web2 is away: not waited for
		t.Fatal(err)
	}
	if !fake2.holds(withdrawn) {
		t.Fatal("web2 cleaned up while away")
	}

	again, _ := f.join("web2", func(o *Options) { o.Presented = &mem })
	f.follow(again, map[string]solve.Solver{"web": fake2})
	eventually(t, 5*time.Second, "web2 catches up", func() bool {
		return !fake2.holds(withdrawn) && fake2.holds(added) && fake2.holds(kept)
	})
	for _, tc := range []struct {
		ch                 solve.Challenge
		presents, cleanups int
	}{{kept, 1, 0}, {withdrawn, 1, 1}, {added, 1, 0}} {
		if p, c := fake2.counts(tc.ch); p != tc.presents || c != tc.cleanups {
			t.Errorf("%s: %d presents and %d cleanups, want %d and %d", tc.ch.Token, p, c, tc.presents, tc.cleanups)
		}
	}
	eventually(t, 5*time.Second, "web2 acknowledges the kept answer again", func() bool {
		resp, err := cli.Get(ctx, f.prefix+"/fleet/acks/"+answerID("web1", "web", kept)+"/web2")
		return err == nil && len(resp.Kvs) == 1 && strings.Contains(string(resp.Kvs[0].Value), `"ok":true`)
	})
	for _, ch := range []solve.Challenge{kept, added} {
		if err := s.CleanUp(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "web2 cleans up the rest", func() bool { return mem.Len() == 0 })
}

// TestLeaderStoppedDuringPresent: etcd's leader is stopped while a
// follower presents; the follower's acknowledgement and the orderer's wait
// go through the new leader, and CleanUp works too.
func TestLeaderStoppedDuringPresent(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	web1, cli := f.join("web1")
	web2, _ := f.join("web2")
	web3, _ := f.join("web3")
	fake2, fake3 := newFake(), newFake()
	var stopped atomic.Bool
	fake2.hook = func(solve.Challenge) {
		for !stopped.Load() {
			if l := f.c.Leader(); l >= 0 {
				f.c.Stop(l)
				stopped.Store(true)
			} else {
				time.Sleep(10 * time.Millisecond) // an election under way
			}
		}
	}
	f.follow(web2, map[string]solve.Solver{"web": fake2})
	f.follow(web3, map[string]solve.Solver{"web": fake3})
	s := web1.Mirror("web", newFake(), MirrorOptions{AckTimeout: 15 * time.Second})
	ch := challenge(t, "example.com", "token6")
	ctx := context.Background()
	if err := s.Present(ctx, ch); err != nil {
		t.Fatalf("Present with the leader stopped: %v", err)
	}
	if !stopped.Load() {
		t.Fatal("the leader was not stopped")
	}
	if !fake2.holds(ch) || !fake3.holds(ch) {
		t.Fatal("a follower does not hold the answer")
	}
	if err := s.CleanUp(ctx, ch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the followers clean up", func() bool { return !fake2.holds(ch) && !fake3.holds(ch) })
	if left := f.keys(cli, "answers/"); len(left) != 0 {
		t.Errorf("answers left: %v", left)
	}
}

// testFollowerRefusesMalformedAnswer: an answer written by someone else
// with a token that would escape the webroot is acknowledged with an
// error, never presented.
func testFollowerRefusesMalformedAnswer(t *testing.T, c *etcdtest.Cluster) {
	f := onCluster(t, c)
	web2, cli := f.join("web2")
	fake2 := newFake()
	f.follow(web2, map[string]solve.Solver{"web": fake2})
	ctx := context.Background()
	val := `{"path":"web","orderer":"web9","challenge":{"type":"http-01","identifier":{"type":"dns","value":"example.com"},` +
		`"token":"../../etc/passwd","key_authorization":"../../etc/passwd.x"}}`
	if _, err := cli.Put(ctx, f.prefix+"/fleet/answers/bad", val); err != nil {
		t.Fatal(err)
	}
	var got string
	eventually(t, 5*time.Second, "web2 acknowledges with an error", func() bool {
		r, err := cli.Get(ctx, f.prefix+"/fleet/acks/bad/web2")
		if err != nil || len(r.Kvs) == 0 {
			return false
		}
		got = string(r.Kvs[0].Value)
		return true
	})
	if !strings.Contains(got, `"ok":false`) || !strings.Contains(got, "malformed") || !strings.Contains(got, "base64url") {
		t.Errorf("ack = %s", got)
	}
	fake2.mu.Lock()
	n := len(fake2.presents)
	fake2.mu.Unlock()
	if n != 0 {
		t.Error("the malformed answer was presented")
	}
}

// TestMirrorKeepsWaiter: the wrapper is a solve.Waiter exactly when the
// path is; DNS paths are not wrapped at all.
func TestMirrorKeepsWaiter(t *testing.T) {
	t.Parallel()
	n := &Node{} // Mirror only builds; nothing here reaches etcd
	plain := newFake()
	if _, ok := n.Mirror("p", plain, MirrorOptions{}).(solve.Waiter); ok {
		t.Error("a mirror around a plain solver is a Waiter")
	}
	if _, ok := n.Mirror("w", fakeWaiter{newFake()}, MirrorOptions{}).(solve.Waiter); !ok {
		t.Error("a mirror around a Waiter is not one")
	}
	dns := newFake()
	dns.typ = solve.DNS01
	if got := n.Mirror("d", dns, MirrorOptions{}); got != solve.Solver(dns) {
		t.Errorf("Mirror of a dns-01 path = %T, want the path itself", got)
	}
	m := n.Mirror("p", plain, MirrorOptions{}).(*mirror)
	if m.opts.AckTimeout != DefaultAckTimeout || m.Type() != solve.HTTP01 || m.Inner() != solve.Solver(plain) {
		t.Errorf("mirror = %+v", m)
	}
}

// TestAnswerID: the same challenge gives the same id; any difference
// another.
func TestAnswerID(t *testing.T) {
	t.Parallel()
	ch := challenge(t, "example.com", "tok")
	id := answerID("web1", "web", ch)
	if answerID("web1", "web", ch) != id {
		t.Fatal("answerID is not stable")
	}
	other := ch
	other.Token = "tok2"
	alt := challenge(t, "example.org", "tok")
	for _, o := range []string{answerID("web2", "web", ch), answerID("web1", "web2", ch), answerID("web1", "web", other), answerID("web1", "web", alt)} {
		if o == id {
			t.Error("two challenges share an id")
		}
	}
	if !validKeyPart(id) {
		t.Errorf("id %q", id)
	}
}

func validKeyPart(s string) bool {
	return s != "" && strings.Trim(s, "0123456789abcdef") == ""
}
