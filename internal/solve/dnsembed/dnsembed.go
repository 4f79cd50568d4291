// Package dnsembed answers dns-01 challenges (RFC 8555 §8.4) from Detour's
// embedded authoritative DNS responder (package dnsserver).
//
// It suits a zone delegated to the host Detour runs on (an NS record for
// _acme-challenge.example.com, or for a whole challenge zone, pointing at
// it) and the local sandbox, where the test CA uses the responder as its
// resolver. Present adds the TXT value "base64url(SHA-256(key
// authorization))" at _acme-challenge.<name>; CleanUp removes exactly that
// value. A wildcard and its base name share one owner name, so values are
// reference counted per (name, value) and the optional listener stays up
// until the last challenge is cleaned up.
//
// Every value is added with an expiry (Options.TTL), so a crash between
// Present and CleanUp never leaves a record served for long.
package dnsembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/dnsserver"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// DefaultTTL is how long a presented TXT value is served at most.
const DefaultTTL = 10 * time.Minute

// Polling bounds of Wait.
const (
	firstPoll    = 5 * time.Millisecond
	maxPoll      = 200 * time.Millisecond
	queryTimeout = 2 * time.Second
)

// Options configures a Solver.
type Options struct {
	// Logger receives progress messages; nil discards them.
	Logger *slog.Logger
	// Server is the responder the TXT records are added to. Required.
	Server *dnsserver.Server
	// Listen, if set (e.g. ":53"), makes the solver bind UDP and TCP on this
	// address when the first challenge is presented and close them after the
	// last CleanUp. If empty, Server is served by someone else.
	Listen string
	// QueryAddr is the host:port Wait queries. Default: the address bound for
	// Listen (an unspecified host is queried on loopback). When neither is
	// known, Wait only checks the responder's table.
	QueryAddr string
	// TTL bounds how long each TXT value is served, so that a crash never
	// leaves one behind for long. 0 means DefaultTTL.
	TTL time.Duration
}

// Solver is a solve.Solver for dns-01 backed by a dnsserver.Server.
type Solver struct {
	log       *slog.Logger
	srv       *dnsserver.Server
	listen    string
	queryAddr string
	ttl       time.Duration

	mu        sync.Mutex
	refs      map[record]int
	active    int                             // challenges presented and not cleaned up
	stop      func(ctx context.Context) error // stops the listener; nil when not listening
	boundAddr string                          // where the listener can be queried
}

type record struct{ name, value string }

var (
	_ solve.Solver = (*Solver)(nil)
	_ solve.Waiter = (*Solver)(nil)
)

// New returns a Solver configured by opts.
func New(opts Options) (*Solver, error) {
	if opts.Server == nil {
		return nil, errors.New("creating dns-01 solver: no DNS server given (Options.Server is required)")
	}
	if opts.TTL < 0 {
		return nil, fmt.Errorf("creating dns-01 solver: TTL %v is negative; use a positive duration such as 10m", opts.TTL)
	}
	for _, a := range []string{opts.Listen, opts.QueryAddr} {
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("creating dns-01 solver: address %q is not host:port (e.g. \":53\"): %w", a, err)
		}
	}
	s := &Solver{
		log:       opts.Logger,
		srv:       opts.Server,
		listen:    opts.Listen,
		queryAddr: opts.QueryAddr,
		ttl:       opts.TTL,
		refs:      make(map[record]int),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.ttl == 0 {
		s.ttl = DefaultTTL
	}
	return s, nil
}

// Type returns solve.DNS01.
func (s *Solver) Type() string { return solve.DNS01 }

// Check reports whether a dns-01 challenge for id can be answered: id must be
// a DNS name inside the responder's zones and, when Options.Listen is set,
// the address must be free to bind right now.
func (s *Solver) Check(ctx context.Context, id ident.Identifier) error {
	if id.Type != ident.TypeDNS {
		return fmt.Errorf("%w: dns-01 cannot validate the IP address %s (RFC 8738); use http-01 or tls-alpn-01", solve.ErrNotApplicable, id)
	}
	name := challengeName(id)
	if !s.srv.InZone(name) {
		return fmt.Errorf("%w: %s is outside every zone the embedded DNS server answers; add its zone to the server's zones, or delegate it to this server", solve.ErrNotApplicable, name)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listen == "" || s.stop != nil {
		return nil // served elsewhere, or bound by us already
	}
	pc, ln, err := dnsserver.Listen(s.listen)
	if err != nil {
		return explainBind(err)
	}
	_ = pc.Close()
	_ = ln.Close()
	return nil
}

func challengeName(id ident.Identifier) string {
	return solve.Challenge{Identifier: id}.DNS01Name()
}

// explainBind turns a bind error into one that says what to change.
func explainBind(err error) error {
	switch {
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("starting the dns-01 listener: %w; ports below 1024 such as 53 need root or the CAP_NET_BIND_SERVICE capability "+
			"(e.g. `setcap cap_net_bind_service=+ep $(command -v detour)`, or AmbientCapabilities=CAP_NET_BIND_SERVICE in the systemd unit)", err)
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("starting the dns-01 listener: %w; another program already listens there (often systemd-resolved's stub on 127.0.0.53:53, "+
			"dnsmasq or a name server): stop it, or listen on a specific address it does not use (e.g. the public IP, \"203.0.113.7:53\")", err)
	}
	return fmt.Errorf("starting the dns-01 listener: %w", err)
}

// Present adds the challenge's TXT value, starting the listener first if
// Options.Listen is set and none is running.
func (s *Solver) Present(ctx context.Context, ch solve.Challenge) error {
	if ch.Identifier.Type != ident.TypeDNS {
		return fmt.Errorf("presenting dns-01 for %s: %w: not a DNS name", ch.Identifier, solve.ErrNotApplicable)
	}
	rec := record{name: ch.DNS01Name(), value: ch.DNS01Value()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listen != "" && s.stop == nil {
		if err := s.startLocked(ctx); err != nil {
			return err
		}
	}
	s.active++
	s.refs[rec]++
	expires := s.srv.Now().Add(s.ttl)
	s.srv.AddTXT(rec.name, rec.value, expires)
	s.log.Info("dns-01 TXT record presented", "identifier", ch.Identifier.Value, "name", rec.name, "expires", expires)
	return nil
}

// startLocked binds Options.Listen and serves the responder on it.
func (s *Solver) startLocked(ctx context.Context) error {
	pc, ln, err := dnsserver.Listen(s.listen)
	if err != nil {
		return explainBind(err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve(sctx, pc, ln) }()
	s.boundAddr = queryable(pc.LocalAddr().(*net.UDPAddr), s.listen)
	s.stop = func(ctx context.Context) error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return fmt.Errorf("waiting for the DNS listener on %s to stop: %w", s.listen, ctx.Err())
		}
	}
	s.log.Info("dns-01 listener started", "address", pc.LocalAddr().String())
	return nil
}

// queryable returns an address at which a bound socket can be queried from
// this host: an unspecified address becomes loopback.
func queryable(a *net.UDPAddr, listen string) string {
	ip := a.IP
	if ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
		if host, _, _ := net.SplitHostPort(listen); strings.Contains(host, ":") {
			ip = net.IPv6loopback // "[::]:53" may be IPv6 only
		}
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(a.Port))
}

// Addr returns the address Wait queries: Options.QueryAddr, or the address
// of the running listener; "" when there is neither.
func (s *Solver) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queryAddr != "" {
		return s.queryAddr
	}
	return s.boundAddr
}

// CleanUp removes the TXT value Present added for ch, and stops the listener
// after the last challenge. Cleaning up a challenge that was not presented
// does nothing.
func (s *Solver) CleanUp(ctx context.Context, ch solve.Challenge) error {
	rec := record{name: ch.DNS01Name(), value: ch.DNS01Value()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs[rec] == 0 {
		return nil
	}
	s.refs[rec]--
	if s.refs[rec] == 0 {
		delete(s.refs, rec)
		s.srv.RemoveTXT(rec.name, rec.value)
		s.log.Info("dns-01 TXT record removed", "identifier", ch.Identifier.Value, "name", rec.name)
	}
	s.active--
	if s.active > 0 || s.stop == nil {
		return nil
	}
	stop := s.stop
	s.stop, s.boundAddr = nil, ""
	if err := stop(ctx); err != nil {
		return fmt.Errorf("stopping the dns-01 listener: %w", err)
	}
	s.log.Info("dns-01 listener stopped", "address", s.listen)
	return nil
}

// Wait blocks until the responder answers the TXT value of ch over the
// network (DNS over TCP to Addr), polling at growing intervals (5ms up to 200ms) until ctx ends.
func (s *Solver) Wait(ctx context.Context, ch solve.Challenge) error {
	name, value := ch.DNS01Name(), ch.DNS01Value()
	addr := s.Addr()
	if addr == "" {
		if slices.Contains(s.srv.TXT(name), value) {
			return nil
		}
		return fmt.Errorf("waiting for TXT %s: the value is not in the DNS server's table; was the challenge presented?", name)
	}
	delay := firstPoll
	for {
		err := lookup(ctx, addr, name, value)
		if err == nil {
			s.log.Debug("dns-01 TXT record visible", "name", name, "address", addr)
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for TXT %s at %s: %w (last attempt: %v)", name, addr, ctx.Err(), err)
		case <-t.C:
		}
		delay = min(2*delay, maxPoll)
	}
}

// lookup asks addr for the TXT records of name and reports whether value is
// among them. It uses TCP: no truncation, and the responder's UDP rate limit
// can never make a poll wait for a dropped datagram.
func lookup(ctx context.Context, addr, name, value string) error {
	c := &dns.Client{Net: "tcp", Timeout: queryTimeout}
	r, _, err := c.ExchangeContext(ctx, new(dns.Msg).SetQuestion(name, dns.TypeTXT), addr)
	if err != nil {
		return fmt.Errorf("querying %s: %w", addr, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("%s answered %s", addr, dns.RcodeToString[r.Rcode])
	}
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TXT); ok && strings.Join(t.Txt, "") == value {
			return nil
		}
	}
	return fmt.Errorf("%s answered %d TXT records, none with the value", addr, len(r.Answer))
}
