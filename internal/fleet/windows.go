package fleet

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Window is a firewall window open on a node, as `detour fleet status`
// shows it.
type Window struct {
	Port       int       `json:"port"`
	Family     string    `json:"family"`
	Proto      string    `json:"proto"`
	Backend    string    `json:"backend"`
	Identifier string    `json:"identifier,omitempty"`
	PID        int       `json:"pid"`
	Until      time.Time `json:"until"` // the firewall closes it by itself then
}

func (k keys) windowsRoot() string        { return k.base + "windows/" }
func (k keys) windows(node string) string { return k.windowsRoot() + node }

// ReportWindows keeps the fleet's copy of the windows open on this node
// (<prefix>/fleet/windows/<node>, under the membership lease, so it goes
// with the node) equal to what list returns, read every interval, until
// ctx ends. A failed read or write is tried again at the next interval.
func (n *Node) ReportWindows(ctx context.Context, list func(context.Context) ([]Window, error), every time.Duration) error {
	if every <= 0 {
		return fmt.Errorf("reporting firewall windows: interval %v: want a positive duration", every)
	}
	var last []byte
	var lastLease clientv3.LeaseID
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		ws, err := list(ctx)
		lease, changed := n.current()
		switch {
		case err != nil:
			n.log.DebugContext(ctx, "reading this node's firewall windows", "error", err)
		case lease == 0:
			// Not a member now: the report went with the lease.
			last, lastLease = nil, 0
		default:
			slices.SortFunc(ws, func(a, b Window) int {
				return cmp.Or(cmp.Compare(a.Port, b.Port), strings.Compare(a.Family, b.Family), cmp.Compare(a.PID, b.PID))
			})
			raw, _ := json.Marshal(ws)
			if lease == lastLease && bytes.Equal(raw, last) {
				break
			}
			actx, cancel := context.WithTimeout(ctx, attemptTimeout)
			if len(ws) == 0 {
				_, err = n.client.Delete(actx, n.keys.windows(n.name))
			} else {
				_, err = n.client.Put(actx, n.keys.windows(n.name), string(raw), clientv3.WithLease(lease))
			}
			cancel()
			if err == nil {
				last, lastLease = raw, lease
			} else if ctx.Err() == nil {
				n.log.DebugContext(ctx, "reporting this node's firewall windows", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-changed:
		}
	}
}

// ReadWindows returns the firewall windows each live node reports open.
func ReadWindows(ctx context.Context, client *clientv3.Client, prefix string) (map[string][]Window, error) {
	prefix = strings.TrimRight(prefix, "/")
	if prefix == "" || client == nil {
		return nil, errors.New("reading the fleet's firewall windows: no prefix or no etcd client")
	}
	k := keys{base: prefix + "/fleet/"}
	resp, err := client.Get(ctx, k.windowsRoot(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("reading the fleet's firewall windows: %w", err)
	}
	out := map[string][]Window{}
	for _, kv := range resp.Kvs {
		node := strings.TrimPrefix(string(kv.Key), k.windowsRoot())
		var ws []Window
		if ValidNodeName(node) != nil || json.Unmarshal(kv.Value, &ws) != nil {
			continue
		}
		out[node] = ws
	}
	return out, nil
}
