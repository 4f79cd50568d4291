package etcdtest

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to an etcd member until Cut, which drops
// every connection and refuses new ones (a network partition between a
// client and etcd, while etcd itself runs on); Restore listens again on
// the same address. Its port is taken as members' are (below the ephemeral
// range, never twice), so that Restore finds it free.
type Proxy struct {
	// Addr is where clients connect: host:port.
	Addr string

	t      testing.TB
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
}

// NewProxy returns a proxy on 127.0.0.1 to endpoint (a member's client
// URL or host:port); it is cut when the test ends.
func NewProxy(t testing.TB, endpoint string) *Proxy {
	t.Helper()
	target := endpoint
	if _, rest, ok := strings.Cut(endpoint, "://"); ok {
		target = rest
	}
	p := &Proxy{t: t, Addr: freeAddr(t, "127.0.0.1"), target: target, conns: map[net.Conn]bool{}}
	p.Restore()
	t.Cleanup(p.Cut)
	return p
}

// URL returns the proxy's address as a plain-HTTP client URL.
func (p *Proxy) URL() string { return "http://" + p.Addr }

// Cut drops every connection and stops listening.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Restore listens again on the proxy's address.
func (p *Proxy) Restore() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		p.t.Fatalf("proxy: listening on %s: %v", p.Addr, err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", p.target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns[in], p.conns[out] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close(); in.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close(); out.Close() }()
		}
	}()
}
