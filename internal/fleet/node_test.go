package fleet

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// TestFleet runs the tests that leave etcd alone on one cluster, each
// under a prefix of its own: a cluster takes seconds to start and stop.
func TestFleet(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t, etcdtest.Options{})
	for _, tc := range []struct {
		name string
		run  func(*testing.T, *etcdtest.Cluster)
	}{
		{"Members", testMembers},
		{"DuplicateName", testDuplicateName},
		{"PresentWaitsForEveryMember", testPresentWaitsForEveryMember},
		{"WebrootOnEveryNode", testWebrootOnEveryNode},
		{"FollowerErrorFailsPresent", testFollowerErrorFailsPresent},
		{"SilentMemberTimesOut", testSilentMemberTimesOut},
		{"MemberLeavingIsNotWaitedFor", testMemberLeavingIsNotWaitedFor},
		{"OrdererDeath", testOrdererDeath},
		{"FollowerRestart", testFollowerRestart},
		{"FollowerRefusesMalformedAnswer", testFollowerRefusesMalformedAnswer},
		{"Observer", testObserver},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, c)
		})
	}
}

// TestJoinValidates: options are checked before etcd is asked anything,
// with messages that say what to change.
func TestJoinValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"empty prefix", Options{Node: "web1"}, "prefix is empty"},
		{"empty name", Options{Prefix: "/d", Node: ""}, "name is empty"},
		{"upper case", Options{Prefix: "/d", Node: "Web1"}, "lower-case letters"},
		{"slash", Options{Prefix: "/d", Node: "web/1"}, "lower-case letters"},
		{"leading hyphen", Options{Prefix: "/d", Node: "-web"}, "inner hyphens"},
		{"too long", Options{Prefix: "/d", Node: strings.Repeat("a", 64)}, "at most 63"},
		{"negative ttl", Options{Prefix: "/d", Node: "web1", TTL: -time.Second}, "negative TTL"},
		{"no client", Options{Prefix: "/d", Node: "web1"}, "no etcd client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Join(context.Background(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Join = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if err := ValidNodeName("web-1"); err != nil {
		t.Fatal(err)
	}
}

// testMembers: Members lists exactly the live nodes, with what each says
// of itself; a closed node leaves at once, a dead one when its lease
// expires.
func testMembers(t *testing.T, c *etcdtest.Cluster) {
	f := onCluster(t, c)
	web1, _ := f.join("web1")
	_, cli2 := f.join("web2")
	web3, _ := f.join("web3")
	if got := memberNames(t, web1); !slices.Equal(got, []string{"web1", "web2", "web3"}) {
		t.Fatalf("members = %v", got)
	}
	ms, err := web3.Members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	for _, m := range ms {
		if m.PID != os.Getpid() || m.Host != host || m.Version != "test" || m.Started.IsZero() || time.Since(m.Started) > time.Minute {
			t.Errorf("member %+v: want this process's pid, host, version and start", m)
		}
	}
	if err := web3.Close(); err != nil {
		t.Fatal(err)
	}
	if got := memberNames(t, web1); !slices.Equal(got, []string{"web1", "web2"}) {
		t.Fatalf("members after web3 closed = %v", got)
	}
	cli2.Close() // web2's process dies
	eventually(t, 3*testTTL, "web2 leaves when its lease expires", func() bool {
		return slices.Equal(memberNames(t, web1), []string{"web1"})
	})
}

// testDuplicateName: a second live process with a node's name is refused
// with a clear error; once the first leaves, the name is free.
func testDuplicateName(t *testing.T, c *etcdtest.Cluster) {
	f := onCluster(t, c)
	first, _ := f.join("web1")
	_, err := Join(context.Background(), Options{Client: f.client(), Prefix: f.prefix, Node: "web1", TTL: testTTL})
	if !errors.Is(err, ErrNameTaken) {
		t.Fatalf("second Join = %v, want ErrNameTaken", err)
	}
	for _, want := range []string{`"web1"`, "live node", "pid", "name of its own"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, _ := f.join("web1")
	if got := memberNames(t, second); !slices.Equal(got, []string{"web1"}) {
		t.Fatalf("members = %v", got)
	}
}

// TestRejoinAfterEtcdOutage: etcd down for longer than the TTL costs a
// node its membership; it logs that, joins again when etcd is back and
// logs that too, and its follower answers again.
func TestRejoinAfterEtcdOutage(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	web1, _ := f.join("web1")
	web2, _ := f.join("web2")
	fake1, fake2 := newFake(), newFake()
	f.follow(web2, map[string]solve.Solver{"web": fake2})
	s := web1.Mirror("web", fake1, MirrorOptions{AckTimeout: 10 * time.Second})
	ctx := context.Background()
	before := challenge(t, "before.example.com", "tokenBefore")
	if err := s.Present(ctx, before); err != nil {
		t.Fatal(err)
	}

	f.c.StopAll()
	eventually(t, 4*testTTL, "both nodes log the loss", func() bool {
		return strings.Count(f.logs.String(), "fleet membership lost") >= 2
	})
	// The answer's lease is kept alive on its own schedule: only once the
	// client has given it up too is it sure to expire after the restart
	// (restarted sooner, etcd answers its next keepalive and it lives on).
	eventually(t, 4*testTTL, "web1 logs the answer's lease lost", func() bool {
		return strings.Contains(f.logs.String(), "the lease of a published answer was lost")
	})
	f.c.RestartAll()
	eventually(t, 10*time.Second, "both nodes join again", func() bool {
		return strings.Count(f.logs.String(), "joined the fleet again") >= 2
	})
	if got := memberNames(t, web1); !slices.Equal(got, []string{"web1", "web2"}) {
		t.Fatalf("members after the outage = %v", got)
	}
	// The answer's lease went unrenewed too: it expires and web2 cleans up.
	eventually(t, 3*testTTL, "web2 cleans up the answer whose lease was lost", func() bool { return !fake2.holds(before) })
	after := challenge(t, "after.example.com", "tokenAfter")
	if err := s.Present(ctx, after); err != nil {
		t.Fatalf("Present after the outage: %v", err)
	}
	if !fake2.holds(after) {
		t.Fatal("web2 does not hold the answer published after the outage")
	}
	if err := s.CleanUp(ctx, after); err != nil {
		t.Fatal(err)
	}
}
