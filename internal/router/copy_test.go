package router

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

// hiddenConn hides the concrete type of a connection, as a listener
// wrapper would, so that the router cannot read its descriptor.
type hiddenConn struct{ net.Conn }

type hidingListener struct{ net.Listener }

func (l hidingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return hiddenConn{c}, nil
}

// Every size passes intact both ways: through the event loop (Linux), on
// the goroutine path (small messages with read/write, then splice once a
// read fills the buffer; the only path off Linux), and on the io.Copy path
// of a connection whose type the router does not know.
func TestCopyBothWays(t *testing.T) {
	hello := captureHello(t, helloCfg("app.example.com"))
	b := startBackend(t, tagEcho("B"))
	for _, listener := range []string{"tcp", "goroutines", "wrapped"} {
		tab, err := NewTable([]Route{{Backend: b.addr}})
		if err != nil {
			t.Fatal(err)
		}
		r, err := New(Options{DrainTimeout: 100 * time.Millisecond}, tab)
		if err != nil {
			t.Fatal(err)
		}
		r.noLoops = listener == "goroutines"
		var ln net.Listener
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		if listener == "wrapped" {
			ln = hidingListener{ln}
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Serve(ctx, ln) }()

		for _, size := range []int{1, 1000, copyBufSize - len(hello), copyBufSize + 1, 3 << 20} {
			t.Run(fmt.Sprintf("%s/%d", listener, size), func(t *testing.T) {
				sent, got := exchange(t, addr, hello, size)
				want := append([]byte("B"), sent...)
				if !bytes.Equal(got, want) {
					t.Fatalf("client read %d bytes back, want the %d sent plus the tag, intact", len(got), len(want)-1)
				}
			})
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if st := r.Stats(); st.Active != 0 || st.Routed != 5 {
			t.Errorf("%s: stats %+v after shutdown, want 5 routed and none active", listener, st)
		}
	}
}
