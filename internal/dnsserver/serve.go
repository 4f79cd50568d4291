package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// shutdownTimeout bounds how long Serve waits for open TCP connections after
// its context is cancelled.
const shutdownTimeout = 5 * time.Second

// readBufferSize is the UDP read buffer; queries are small, but an EDNS
// query with options must not be cut short.
const readBufferSize = 4096

// Serve answers DNS over UDP on pc and over TCP on ln; either may be nil, not
// both. It returns nil once ctx is cancelled and both servers have shut down,
// or an error if one of them stops on its own. Serve closes pc and ln.
//
// Ready is closed once both servers have started; since pc and ln are bound
// already, queries sent earlier are queued by the kernel, not lost.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, ln net.Listener) error {
	if pc == nil && ln == nil {
		return errors.New("serving DNS: no UDP socket and no TCP listener given")
	}
	type unit struct {
		proto   string
		srv     *dns.Server
		started chan struct{}
		err     error
		exited  bool
	}
	var units []*unit
	stopTicks := func() {}
	if pc != nil {
		srv := &dns.Server{PacketConn: pc, Handler: s, UDPSize: readBufferSize, MsgAcceptFunc: acceptQuery}
		if s.limit != nil {
			srv.DecorateReader = s.limitReader
			stop, stopped := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(stopped)
				s.tickDrops(stop)
			}()
			stopTicks = sync.OnceFunc(func() { close(stop); <-stopped })
			defer stopTicks()
		}
		units = append(units, &unit{proto: "udp", srv: srv, started: make(chan struct{})})
	}
	if ln != nil {
		srv := &dns.Server{Listener: ln, Handler: s, MsgAcceptFunc: acceptQuery}
		units = append(units, &unit{proto: "tcp", srv: srv, started: make(chan struct{})})
	}
	exitc := make(chan int, len(units))
	for i, u := range units {
		u.srv.NotifyStartedFunc = func() { close(u.started) }
		go func() {
			u.err = u.srv.ActivateAndServe()
			exitc <- i
		}()
	}
	exited := func(i int) { units[i].exited = true }

	allStarted := true
start:
	for _, u := range units {
		select {
		case <-u.started:
		case i := <-exitc:
			exited(i)
			allStarted = false
			break start
		case <-ctx.Done():
			allStarted = false
			break start
		}
	}
	if allStarted {
		s.markServing(1)
		defer s.markServing(-1)
		attrs := []any{}
		if pc != nil {
			attrs = append(attrs, "udp", pc.LocalAddr().String())
		}
		if ln != nil {
			attrs = append(attrs, "tcp", ln.Addr().String())
		}
		s.log.Info("DNS server serving", attrs...)
		select {
		case <-ctx.Done():
		case i := <-exitc:
			exited(i)
		}
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	for _, u := range units {
		for shut := false; !u.exited && !shut; {
			select {
			case <-u.started:
				// Returns once the serve loop has finished or sctx expires.
				_ = u.srv.ShutdownContext(sctx)
				shut = true
			case i := <-exitc:
				exited(i)
			}
		}
	}
	for _, u := range units {
		for !u.exited {
			select {
			case i := <-exitc:
				exited(i)
			case <-sctx.Done():
				return fmt.Errorf("shutting down DNS server: %w", sctx.Err())
			}
		}
	}
	var errs []error
	for _, u := range units {
		if u.err != nil {
			errs = append(errs, fmt.Errorf("serving DNS over %s: %w", u.proto, u.err))
		}
	}
	stopTicks() // logs the end of the rate limit's episodes first
	s.log.Info("DNS server stopped")
	return errors.Join(errs...)
}

// acceptQuery screens a message header before it is parsed: responses are
// ignored, other opcodes than QUERY are NOTIMP, and anything but exactly one
// question with empty answer and authority sections is FORMERR.
func acceptQuery(h dns.Header) dns.MsgAcceptAction {
	const qr = 1 << 15
	switch {
	case h.Bits&qr != 0:
		return dns.MsgIgnore
	case int(h.Bits>>11)&0xF != dns.OpcodeQuery:
		return dns.MsgRejectNotImplemented
	case h.Qdcount != 1, h.Ancount != 0, h.Nscount != 0, h.Arcount > 2:
		return dns.MsgReject
	}
	return dns.MsgAccept
}

// Listen binds UDP and TCP on the same host:port. With port 0 one free port
// is picked for both, retrying a few times when the TCP side of the chosen
// UDP port is taken.
func Listen(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing listen address %q (write host:port, e.g. \":53\" or \"127.0.0.1:5353\"): %w", addr, err)
	}
	attempts := 1
	if port == "" || port == "0" {
		attempts = 10
	}
	var lastErr error
	for range attempts {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("binding UDP %s: %w", addr, err)
		}
		tcpAddr := net.JoinHostPort(host, strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
		ln, err := net.Listen("tcp", tcpAddr)
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		lastErr = fmt.Errorf("binding TCP %s: %w", tcpAddr, err)
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, nil, lastErr
}
