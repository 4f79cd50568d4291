package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/detour-acme/detour/internal/store"
)

// Deployed is what a node reports it serves for one certificate, under
// <prefix>/fleet/deployed/<node>/<certificate> (see Deployer).
type Deployed struct {
	// Version is the fleet's version (the shared store's numbering, not
	// the node's own archive numbering) of the certificate the node's
	// live/ holds; 0 when the node serves none, or one it cannot match
	// with a version of the fleet.
	Version int `json:"version"`
	// Serial is the serial number (hex) of the certificate served.
	Serial string `json:"serial,omitempty"`
	// Sum is store.Bundle.LiveSum of the files served.
	Sum string `json:"sum,omitempty"`
	// NotAfter is when the certificate served expires.
	NotAfter time.Time `json:"not_after,omitzero"`
	// At is when the node wrote this report.
	At time.Time `json:"at"`
	// Error is what went wrong with the fleet's version ErrorVersion: a
	// deploy step that failed (that version is served all the same), or a
	// version the node could not write (it serves the previous one).
	Error string `json:"error,omitempty"`
	// ErrorVersion is the fleet's version Error is about.
	ErrorVersion int `json:"error_version,omitempty"`
}

// same reports whether a and b say the same, whenever written.
func (a Deployed) same(b Deployed) bool {
	return a.Version == b.Version && a.Serial == b.Serial && a.Sum == b.Sum && a.NotAfter.Equal(b.NotAfter) &&
		a.Error == b.Error && a.ErrorVersion == b.ErrorVersion
}

// Keys of the reports.
func (k keys) deployedRoot() string { return k.base + "deployed/" }
func (k keys) deployed(node, name string) string {
	return k.deployedRoot() + node + "/" + name
}

// ReadDeployed returns every report under <prefix>/fleet/deployed/, by node
// and then by certificate, read in one snapshot. A report that does not
// decode is returned with Error saying so; a key that names no node and
// certificate is left out. Reports are plain keys: a node that is down, or
// was removed from the fleet, still shows what it served last (delete
// <prefix>/fleet/deployed/<node>/ to forget a node for good).
func ReadDeployed(ctx context.Context, client *clientv3.Client, prefix string) (map[string]map[string]Deployed, error) {
	prefix = strings.TrimRight(prefix, "/")
	if prefix == "" {
		return nil, errors.New("reading the fleet's deploy reports: the key prefix is empty; give the fleet's prefix, e.g. /detour/<fleet id>")
	}
	if client == nil {
		return nil, errors.New("reading the fleet's deploy reports: no etcd client")
	}
	k := keys{base: prefix + "/fleet/"}
	resp, err := client.Get(ctx, k.deployedRoot(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("reading the fleet's deploy reports: %w", err)
	}
	out := map[string]map[string]Deployed{}
	for _, kv := range resp.Kvs {
		node, name, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), k.deployedRoot()), "/")
		if !ok || ValidNodeName(node) != nil || store.ValidName(name) != nil {
			continue
		}
		var d Deployed
		if err := json.Unmarshal(kv.Value, &d); err != nil {
			d = Deployed{Error: fmt.Sprintf("the report at %s does not decode (%v); the node rewrites it at its next deploy", kv.Key, err)}
		}
		if out[node] == nil {
			out[node] = map[string]Deployed{}
		}
		out[node][name] = d
	}
	return out, nil
}

// reportState is what a Deployer knows of its report of one certificate.
type reportState struct {
	rep  Deployed
	sent bool // rep is in etcd
}

// current returns this node's report of name: the one it last wrote (or
// failed to write), else the one in etcd (ok false when there is none).
func (d *Deployer) current(ctx context.Context, name string) (Deployed, bool, error) {
	if st, ok := d.reports[name]; ok {
		return st.rep, true, nil
	}
	rctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	resp, err := d.opts.Client.Get(rctx, d.keys.deployed(d.opts.Node, name))
	if err != nil {
		return Deployed{}, false, fmt.Errorf("reading this node's deploy report: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Deployed{}, false, nil
	}
	var rep Deployed
	if err := json.Unmarshal(resp.Kvs[0].Value, &rep); err != nil {
		return Deployed{}, false, nil // rewritten by the caller
	}
	d.reports[name] = &reportState{rep: rep, sent: true}
	return rep, true, nil
}

// report writes rep as this node's report of name unless it says what the
// report in etcd says already. The write runs even when ctx ends (a deploy
// done is reported), under its own timeout; a report that could not be
// written is remembered and written by the next call for name.
func (d *Deployer) report(ctx context.Context, name string, rep Deployed) error {
	if st, ok := d.reports[name]; ok && st.sent && st.rep.same(rep) {
		return nil
	}
	d.reports[name] = &reportState{rep: rep}
	val, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encoding the deploy report: %w", err)
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.opts.Timeout)
	defer cancel()
	if _, err := d.opts.Client.Put(wctx, d.keys.deployed(d.opts.Node, name), string(val)); err != nil {
		return fmt.Errorf("writing this node's deploy report: %w", err)
	}
	d.reports[name].sent = true
	return nil
}
