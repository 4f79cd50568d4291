// Package dnsembed answers TXT challenges (dns-01, RFC 8555 §8.4, and the
// other types of solve.TXTChallenges) from Detour's embedded authoritative
// DNS responder (package dnsserver).
//
// It suits a zone delegated to the host Detour runs on (an NS record for
// _acme-challenge.example.com, or for a whole challenge zone, pointing at
// it) and the local sandbox, where the test CA uses the responder as its
// resolver. Present adds the TXT value at the name solve.TXTName gives (for
// dns-01, _acme-challenge.<name>); CleanUp removes exactly that value. A wildcard and its base name share one owner name, so values are
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
	// Challenge is the challenge type answered, one of
	// solve.TXTChallenges(); default dns-01.
	Challenge string
	// AccountURL returns the ACME account URL, for challenge types whose
	// record is named after the account (see solve.NeedsAccount).
	AccountURL func(ctx context.Context) (string, error)
}

// Solver is a solve.Solver for the TXT challenges, backed by a
// dnsserver.Server.
type Solver struct {
	*solve.TXT
	r *records
}

// records is the solve.Records backend: the responder's table, and the
// listener it may start.
type records struct {
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
	_ solve.Solver  = (*Solver)(nil)
	_ solve.Waiter  = (*Solver)(nil)
	_ solve.Records = (*records)(nil)
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
	s := &records{
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
	txt, err := solve.NewTXT(solve.TXTOptions{Challenge: opts.Challenge, Records: s, AccountURL: opts.AccountURL})
	if err != nil {
		return nil, fmt.Errorf("creating dns-01 solver: %w", err)
	}
	return &Solver{TXT: txt, r: s}, nil
}

// CheckTXT reports whether the record r names can be answered: it must be
// inside the responder's zones and, when Options.Listen is set, the
// address must be free to bind right now.
func (s *records) CheckTXT(ctx context.Context, r solve.TXTRecord) error {
	name := r.Name
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

// SetTXT adds the value, starting the listener first if Options.Listen is
// set and none is running.
func (s *records) SetTXT(ctx context.Context, r solve.TXTRecord) error {
	ch := r.Challenge
	rec := record{name: r.Name, value: r.Value}
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
	s.log.Info("TXT record presented", "identifier", ch.Identifier.Value, "challenge", ch.Type, "name", rec.name, "expires", expires)
	return nil
}

// startLocked binds Options.Listen and serves the responder on it.
func (s *records) startLocked(ctx context.Context) error {
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
func (s *Solver) Addr() string { return s.r.addr() }

func (s *records) addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queryAddr != "" {
		return s.queryAddr
	}
	return s.boundAddr
}

// DeleteTXT removes the value SetTXT added, and stops the listener after
// the last challenge. Removing a value that was not added does nothing.
func (s *records) DeleteTXT(ctx context.Context, r solve.TXTRecord) error {
	ch := r.Challenge
	rec := record{name: r.Name, value: r.Value}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs[rec] == 0 {
		return nil
	}
	s.refs[rec]--
	if s.refs[rec] == 0 {
		delete(s.refs, rec)
		s.srv.RemoveTXT(rec.name, rec.value)
		s.log.Info("TXT record removed", "identifier", ch.Identifier.Value, "name", rec.name)
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

// WaitTXT blocks until the responder answers the value over the network
// (DNS over TCP to Addr), polling at growing intervals (5ms up to 200ms)
// until ctx ends.
func (s *records) WaitTXT(ctx context.Context, r solve.TXTRecord) error {
	name, value := r.Name, r.Value
	addr := s.addr()
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
