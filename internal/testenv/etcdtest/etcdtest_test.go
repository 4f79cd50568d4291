package etcdtest

import (
	"context"
	"testing"
	"time"
)

// TestCluster: three members elect a leader, serve writes, survive the
// leader's loss and take it back; over TLS with client certificates too.
func TestCluster(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[withTLS], func(t *testing.T) {
			t.Parallel()
			opts := Options{}
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
			c.Stop(leader)
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
