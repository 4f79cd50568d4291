package fleet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// testObserver: a command run by hand on web1 while web1's agent is the
// member (same name): it publishes through an observing Node, every other
// member presents, web1's own follower leaves it alone (this process
// presents on web1), the observer is not listed as a member, and it cannot
// follow.
func testObserver(t *testing.T, c *etcdtest.Cluster) {
	f := onCluster(t, c)
	web1, _ := f.join("web1")
	web2, _ := f.join("web2")
	agent1, fake2, own := newFake(), newFake(), newFake()
	f.follow(web1, map[string]solve.Solver{"web": agent1})
	f.follow(web2, map[string]solve.Solver{"web": fake2})

	obs, err := Observe(Options{Client: f.client(), Prefix: f.prefix, Node: "web1", TTL: testTTL, Logger: f.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	if names := memberNames(t, web1); strings.Join(names, ",") != "web1,web2" {
		t.Errorf("members = %v, want web1 and web2 (the observer is none)", names)
	}
	s := obs.Mirror("web", own, MirrorOptions{AckTimeout: 10 * time.Second})
	ch := challenge(t, "example.com", "obs_token")
	if err := s.Present(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	if !own.holds(ch) || !fake2.holds(ch) {
		t.Errorf("after Present: this process holds it %v, web2 %v; want both", own.holds(ch), fake2.holds(ch))
	}
	if agent1.holds(ch) {
		t.Error("web1's agent presented an answer its own host published")
	}
	if err := s.CleanUp(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "web2 cleans up", func() bool { return !fake2.holds(ch) })
	if err := obs.Follow(context.Background(), func(string) (solve.Solver, error) { return nil, errors.New("none") }); err == nil || !strings.Contains(err.Error(), "only observes") {
		t.Errorf("Follow on an observer = %v", err)
	}
}
