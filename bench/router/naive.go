package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// naiveFrontCommand is the hidden first argument that turns the harness
// binary into the naive Go front, so that the front runs as a process of
// its own whose CPU can be measured apart from the harness.
const naiveFrontCommand = "naive-front"

// runNaiveFront is the naive-go front's main: accept, dial the backend, two
// io.Copy. It does not look at the ClientHello, so it does not route
// acme-tls/1 anywhere: it is the floor a Go pass-through starts from.
func runNaiveFront(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(naiveFrontCommand, flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on")
	backend := fs.String("backend", "", "address to pass connections to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *listen == "" || *backend == "" {
		return errors.New("naive-front needs --listen and --backend")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("binding listener: %w", err)
	}
	return serveNaive(ctx, ln, *backend)
}

// serveNaive accepts on ln until ctx ends and pipes each connection to
// backend.
func serveNaive(ctx context.Context, ln net.Listener, backend string) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accepting: %w", err)
		}
		go pipe(c, backend)
	}
}

// pipe copies both ways between c and a new connection to backend,
// passing each half-close on.
func pipe(c net.Conn, backend string) {
	defer c.Close()
	b, err := net.DialTimeout("tcp", backend, 5*time.Second)
	if err != nil {
		return
	}
	defer b.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); copyHalf(b, c) }()
	go func() { defer wg.Done(); copyHalf(c, b) }()
	wg.Wait()
}

// copyHalf copies src to dst, then closes dst's write side.
func copyHalf(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		_ = dst.Close()
	}
}

// stub stands for the tls-alpn-01 responder a front sends acme-tls/1 to: it
// accepts, counts and closes. The harness only checks that the routing
// reaches it.
type stub struct {
	ln   net.Listener
	hits chan struct{}
}

// startStub listens on a free loopback port.
func startStub() (*stub, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("binding stub listener: %w", err)
	}
	s := &stub{ln: ln, hits: make(chan struct{}, 64)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			select {
			case s.hits <- struct{}{}:
			default:
			}
		}
	}()
	return s, nil
}

// addr returns the stub's address.
func (s *stub) addr() string { return s.ln.Addr().String() }

// drain forgets earlier hits.
func (s *stub) drain() {
	for {
		select {
		case <-s.hits:
		default:
			return
		}
	}
}
