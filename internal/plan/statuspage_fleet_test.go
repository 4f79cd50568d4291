package plan

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/statuspage"
	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/store/storetest"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// TestStatusPageFleet: on a node of a fleet the page lists the nodes and
// how many certificates each serves in the fleet's version, and a
// certificate's page what each node serves.
func TestStatusPageFleet(t *testing.T) {
	c := etcdtest.New(t, etcdtest.Options{Members: 1})
	cfg := fleetConfig(t, fmt.Sprintf("%q", c.Endpoints()[0]), "web1")
	p, err := Open(Options{Config: cfg, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	b := storetest.NewBundle(t, "www.example.com")
	leaf, err := b.Leaf()
	if err != nil {
		t.Fatal(err)
	}
	v, err := p.SharedStore().PutCertificate(ctx, "www", b)
	if err != nil {
		t.Fatal(err)
	}
	rec := store.Record{Name: "www", Identifiers: []string{"www.example.com"}, Version: v, Serial: leaf.SerialNumber.Text(16),
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, LiveSum: b.LiveSum()}
	if err := p.SharedStore().SaveRecord(ctx, rec); err != nil {
		t.Fatal(err)
	}
	fa, err := p.JoinFleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = fa.Deploy(ctx)
	}()
	defer func() { cancel(); <-done }()

	page := p.NewStatusPage(StatusPageOptions{Version: "test"})
	deadline := time.Now().Add(20 * time.Second)
	var pg statuspage.Page
	for {
		if pg, err = page.Page(ctx); err != nil {
			t.Fatal(err)
		}
		if f := pg.Fleet; f != nil && len(f.Nodes) == 1 && f.Nodes[0].Serving == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page never showed web1 serving www: fleet %+v, notes %q", pg.Fleet, pg.Notes)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if f := pg.Fleet; f.Name != "web" || f.Node != "web1" || !f.Nodes[0].Alive || f.Nodes[0].Name != "web1" || f.Nodes[0].Behind != 0 {
		t.Errorf("fleet = %+v", f)
	}
	d, err := page.Detail(ctx, "www")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Nodes) != 1 || d.Nodes[0].Node != "web1" || d.Nodes[0].Version != v || d.Nodes[0].Serial != rec.Serial {
		t.Errorf("nodes serving www = %+v", d.Nodes)
	}
}
