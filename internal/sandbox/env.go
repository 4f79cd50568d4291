package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/detour-acme/detour/internal/dnsserver"
)

// Zone is the DNS zone the sandbox serves; every demo name lives under it.
const Zone = "detour.test."

// EnvOptions configure Start. Zero values bind everything on 127.0.0.1 with
// ephemeral ports.
type EnvOptions struct {
	Logger *slog.Logger
	// CA configures the CA; its HTTPPort, TLSPort and DNSAddr are filled in
	// from the listeners Start binds.
	CA CAOptions
	// HTTPAddr and TLSAddr are where the CA's validation authority connects
	// for http-01 and tls-alpn-01; DNSAddr is the sandbox DNS server.
	HTTPAddr, TLSAddr, DNSAddr string
	// VADNSAddr, if set, is the host:port of another DNS server the CA's
	// validation authority resolves names and dns-01 records through (over
	// TCP) instead of the sandbox DNS server, e.g. a BIND a test updates.
	VADNSAddr string
}

// Env is a running sandbox: a CA, the DNS server it resolves through, and
// the bound listeners its validations connect to. Hand HTTPListener and
// TLSListener to standalone solvers (or close them to free the ports).
type Env struct {
	CA           *CA
	DNS          *dnsserver.Server
	DNSAddr      string
	HTTPListener net.Listener
	TLSListener  net.Listener

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error
}

// Start binds the listeners, starts the DNS server and then the CA.
func Start(ctx context.Context, opts EnvOptions) (_ *Env, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Env{}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	bind := func(addr string) (net.Listener, error) {
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("binding %s for the sandbox: %w (choose another address)", addr, err)
		}
		return ln, nil
	}
	if e.HTTPListener, err = bind(opts.HTTPAddr); err != nil {
		return nil, err
	}
	if e.TLSListener, err = bind(opts.TLSAddr); err != nil {
		return nil, err
	}
	dnsAddr := opts.DNSAddr
	if dnsAddr == "" {
		dnsAddr = "127.0.0.1:0"
	}
	pc, ln, err := dnsserver.Listen(dnsAddr)
	if err != nil {
		return nil, fmt.Errorf("binding the sandbox DNS server on %s: %w", dnsAddr, err)
	}
	e.DNSAddr = ln.Addr().String()
	e.DNS = dnsserver.New(dnsserver.Options{Logger: opts.Logger.With("component", "dns"), Zones: []string{Zone}, RateLimit: -1})
	sctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Go(func() {
		if err := e.DNS.Serve(sctx, pc, ln); err != nil {
			e.errMu.Lock()
			e.err = err
			e.errMu.Unlock()
		}
	})
	caOpts := opts.CA
	caOpts.Logger = opts.Logger.With("component", "ca")
	caOpts.HTTPPort = e.HTTPListener.Addr().(*net.TCPAddr).Port
	caOpts.TLSPort = e.TLSListener.Addr().(*net.TCPAddr).Port
	caOpts.DNSAddr = e.DNSAddr
	if opts.VADNSAddr != "" {
		caOpts.DNSAddr = opts.VADNSAddr
	}
	if e.CA, err = StartCA(ctx, caOpts); err != nil {
		return nil, err
	}
	return e, nil
}

// AddName makes name resolve to 127.0.0.1 in the sandbox DNS.
func (e *Env) AddName(name string) {
	e.DNS.SetAddrs(name, netip.MustParseAddr("127.0.0.1"))
}

// Close stops the CA and the DNS server and closes the listeners (closing an
// already closed listener is not an error).
func (e *Env) Close() error {
	var errs []error
	if e.CA != nil {
		errs = append(errs, e.CA.Close())
	}
	if e.cancel != nil {
		e.cancel()
		e.wg.Wait()
	}
	for _, ln := range []net.Listener{e.HTTPListener, e.TLSListener} {
		if ln != nil {
			if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	e.errMu.Lock()
	errs = append(errs, e.err)
	e.errMu.Unlock()
	return errors.Join(errs...)
}
