package router

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// The benchmarks run client, router and backend in one process on loopback,
// each as "direct" (no router) and "router", so that the difference is the
// router's cost. Besides ns/op they report the process's CPU time per
// operation (user+system, from getrusage), the figure BENCHMARKS.md §1
// compares; the router's share is router minus direct.

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchTargets returns the address to dial for each mode.
func benchTargets(b *testing.B, handle func(net.Conn)) map[string]string {
	be := startBackend(b, handle)
	_, addr := startRouter(b, Options{}, Route{Backend: be.addr})
	return map[string]string{"direct": be.addr, "router": addr}
}

func runModes(b *testing.B, targets map[string]string, f func(b *testing.B, addr string)) {
	for _, mode := range []string{"direct", "router"} {
		b.Run(mode, func(b *testing.B) {
			b.ReportAllocs()
			start := cpuTime()
			f(b, targets[mode])
			b.ReportMetric(float64(cpuTime()-start)/float64(b.N)/1e3, "cpu-µs/op")
		})
	}
}

// BenchmarkRouterConnect: one new connection per op, ClientHello sent, one
// byte answered, closed.
func BenchmarkRouterConnect(b *testing.B) {
	hello := captureHello(b, helloCfg("app.example.com", "h2", "http/1.1"))
	targets := benchTargets(b, func(c net.Conn) {
		buf := make([]byte, len(hello))
		if _, err := io.ReadFull(c, buf); err == nil {
			_, _ = c.Write(buf[:1])
		}
	})
	runModes(b, targets, func(b *testing.B, addr string) {
		one := make([]byte, 1)
		for b.Loop() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Write(hello); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, one); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
}

// BenchmarkRouterRequest: keep-alive request/response, 200 bytes each way
// per op, on one connection.
func BenchmarkRouterRequest(b *testing.B) {
	hello := captureHello(b, helloCfg("app.example.com", "h2"))
	targets := benchTargets(b, func(c net.Conn) {
		buf := make([]byte, len(hello))
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		msg := make([]byte, 200)
		for {
			if _, err := io.ReadFull(c, msg); err != nil {
				return
			}
			if _, err := c.Write(msg); err != nil {
				return
			}
		}
	})
	runModes(b, targets, func(b *testing.B, addr string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(hello); err != nil {
			b.Fatal(err)
		}
		msg := make([]byte, 200)
		for b.Loop() {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRouterBulk: 256 KiB per op from client to backend on one
// connection.
func BenchmarkRouterBulk(b *testing.B) {
	const chunk = 256 << 10
	hello := captureHello(b, helloCfg("app.example.com", "h2"))
	targets := benchTargets(b, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		_, _ = c.Write([]byte{byte(n)})
	})
	runModes(b, targets, func(b *testing.B, addr string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(hello); err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, chunk)
		b.SetBytes(chunk)
		for b.Loop() {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.ReadFull(c, buf[:1]) // wait until the backend has it all
	})
}
