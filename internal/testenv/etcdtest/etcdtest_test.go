package etcdtest

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// TestCluster: three members elect a leader, serve writes, survive the
// leader's loss and take it back; over TLS with client certificates too.
func TestCluster(t *testing.T) {
	for _, tc := range []struct {
		name               string
		withTLS, processes bool
	}{{"plain", false, false}, {"tls", true, false}, {"processes-killed", false, true}} {
		withTLS := tc.withTLS
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := Options{Processes: tc.processes}
			if withTLS {
				opts.TLS = NewTLS(t)
			}
			c := New(t, opts)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var cli = c.Client(nil)
			if withTLS {
				cli = c.Client(opts.TLS.ClientConfig(t))
			}
			if _, err := cli.Put(ctx, "k", "v1"); err != nil {
				t.Fatal(err)
			}
			leader := c.WaitLeader(ctx, 10*time.Second)
			if tc.processes {
				pid := c.members[leader].proc.cmd.Process.Pid
				c.Kill(leader)
				if err := syscall.Kill(pid, 0); err == nil {
					t.Fatalf("the killed leader (pid %d) still runs", pid)
				}
				if next := c.WaitLeader(ctx, 10*time.Second); next == leader {
					t.Fatalf("member %d still leads after it was killed", leader)
				}
			} else {
				c.Stop(leader)
			}
			if _, err := cli.Put(ctx, "k", "v2"); err != nil {
				t.Fatalf("put with the leader stopped: %v", err)
			}
			c.Restart(leader)
			resp, err := cli.Get(ctx, "k")
			if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v2" {
				t.Fatalf("get = %v, %v", resp, err)
			}
		})
	}
}
