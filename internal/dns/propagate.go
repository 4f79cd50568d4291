package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"
)

// Defaults of WaitOptions.
const (
	DefaultPropagationTimeout = 2 * time.Minute
	DefaultMinInterval        = 20 * time.Millisecond
	DefaultMaxInterval        = 500 * time.Millisecond
)

// errPropagationTimeout is the cause of Wait's own deadline.
var errPropagationTimeout = errors.New("propagation timeout")

// WaitOptions tune Wait.
type WaitOptions struct {
	// Zone is the apex of the zone holding name. When empty, Wait follows
	// name's CNAMEs and finds the zone itself (FindZone).
	Zone string
	// Timeout bounds the whole wait. Default DefaultPropagationTimeout.
	Timeout time.Duration
	// MinInterval and MaxInterval bound the pause between rounds of
	// queries: it starts at MinInterval and doubles up to MaxInterval.
	MinInterval, MaxInterval time.Duration
}

func (o *WaitOptions) setDefaults() {
	if o.Timeout <= 0 {
		o.Timeout = DefaultPropagationTimeout
	}
	if o.MinInterval <= 0 {
		o.MinInterval = DefaultMinInterval
	}
	if o.MaxInterval < o.MinInterval {
		o.MaxInterval = max(DefaultMaxInterval, o.MinInterval)
	}
}

// Nameserver is one address of an authoritative server of a zone.
type Nameserver struct {
	Name string // the NS target, e.g. "ns1.example.com."
	Addr string // host:port queried
}

func (n Nameserver) String() string { return n.Name + " (" + n.Addr + ")" }

// ServerState is what one authoritative server answered last.
type ServerState struct {
	Server Nameserver
	// Answer describes the answer: the TXT values, NXDOMAIN, REFUSED, a
	// missing AA bit, or the query's error.
	Answer string
}

// PropagationError reports the servers that did not answer the value in
// time.
type PropagationError struct {
	Name, Value string
	Waited      time.Duration
	Pending     []ServerState
	// Err is the context's error when the wait was cancelled, nil after a
	// timeout.
	Err error
}

func (e *PropagationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "TXT %s = %q is not answered by every authoritative server after %s; ", e.Name, e.Value, e.Waited.Round(time.Millisecond))
	for i, s := range e.Pending {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s answers %s", s.Server, s.Answer)
	}
	if e.Err == nil {
		b.WriteString("; check that the zone's secondaries transfer it from the primary (NOTIFY, IXFR), or raise propagation_timeout")
	}
	return b.String()
}

func (e *PropagationError) Unwrap() error { return e.Err }

// Nameservers returns every address of every authoritative server of zone
// (its NS RRset, each target looked up as A and AAAA through the resolver),
// on the Client's port.
func (c *Client) Nameservers(ctx context.Context, zone string) ([]Nameserver, error) {
	zone = mdns.CanonicalName(zone)
	r, err := c.query(ctx, c.resolver, zone, mdns.TypeNS, true)
	if err != nil {
		return nil, fmt.Errorf("listing the nameservers of zone %s: %w", zone, err)
	}
	if r.Rcode != mdns.RcodeSuccess {
		return nil, fmt.Errorf("listing the nameservers of zone %s: resolver %s answered %s", zone, c.resolver, rcodeName(r.Rcode))
	}
	var names []string
	for _, rr := range r.Answer {
		if ns, ok := rr.(*mdns.NS); ok && strings.EqualFold(ns.Hdr.Name, zone) {
			names = append(names, mdns.CanonicalName(ns.Ns))
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("zone %s has no NS records at resolver %s", zone, c.resolver)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	var out []Nameserver
	for _, n := range names {
		if a, ok := c.nsAddrs[n]; ok {
			out = append(out, Nameserver{Name: n, Addr: a})
			continue
		}
		addrs, err := c.hostAddrs(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("listing the nameservers of zone %s: %w", zone, err)
		}
		for _, a := range addrs {
			out = append(out, Nameserver{Name: n, Addr: net.JoinHostPort(a.String(), c.port)})
		}
	}
	return out, nil
}

// Wait returns when every authoritative server of name's zone answers a TXT
// record at name with value, asking each one directly with recursion off.
// Rounds of queries start MinInterval apart and back off to MaxInterval. On
// timeout or cancellation the *PropagationError lists the servers that do
// not answer the value yet and what they answer instead.
func (c *Client) Wait(ctx context.Context, name, value string, opts WaitOptions) error {
	opts.setDefaults()
	start := time.Now()
	ctx, cancel := context.WithTimeoutCause(ctx, opts.Timeout, errPropagationTimeout)
	defer cancel()
	name = mdns.CanonicalName(name)
	zone := opts.Zone
	if zone == "" {
		z, err := c.FindZone(ctx, name)
		if err != nil {
			return fmt.Errorf("waiting for TXT %s: %w", name, err)
		}
		name, zone = z.Target, z.Name
	}
	servers, err := c.Nameservers(ctx, zone)
	if err != nil {
		return fmt.Errorf("waiting for TXT %s: %w", name, err)
	}
	pending := make([]ServerState, len(servers))
	for i, s := range servers {
		pending[i] = ServerState{Server: s, Answer: "nothing yet"}
	}
	interval := opts.MinInterval
	timer := time.NewTimer(0)
	defer timer.Stop()
	for round := 1; ; round++ {
		select {
		case <-ctx.Done():
			perr := &PropagationError{Name: name, Value: value, Waited: time.Since(start), Pending: pending}
			if cause := context.Cause(ctx); cause != errPropagationTimeout {
				perr.Err = cause
			}
			return perr
		case <-timer.C:
		}
		pending = c.askAll(ctx, pending, name, value)
		if len(pending) == 0 {
			c.log.DebugContext(ctx, "TXT answered by every authoritative server", "name", name, "servers", len(servers),
				"rounds", round, "elapsed", time.Since(start))
			return nil
		}
		timer.Reset(interval)
		interval = min(interval*2, opts.MaxInterval)
	}
}

// askAll queries every pending server in parallel and returns those that do
// not answer value yet, with what they answer. An address this host cannot
// reach at all (an IPv6 address without IPv6 routing, say) is dropped when
// another address of the same server remains.
func (c *Client) askAll(ctx context.Context, pending []ServerState, name, value string) []ServerState {
	states := make([]ServerState, len(pending))
	done := make([]bool, len(pending))
	unreachable := make([]bool, len(pending))
	var wg sync.WaitGroup
	for i, s := range pending {
		wg.Go(func() {
			states[i] = s
			ok, answer, unreach := c.answers(ctx, s.Server.Addr, name, value)
			if ok || !cutShort(ctx) {
				// An answer cut short by the deadline says nothing new.
				done[i], states[i].Answer, unreachable[i] = ok, answer, unreach
			}
		})
	}
	wg.Wait()
	reachable := map[string]bool{} // NS names with an address that answered somehow
	for i, s := range states {
		if !unreachable[i] {
			reachable[s.Server.Name] = true
		}
	}
	var out []ServerState
	for i, s := range states {
		switch {
		case done[i]:
		case unreachable[i] && reachable[s.Server.Name]:
			c.log.DebugContext(ctx, "nameserver address unreachable; relying on its other addresses", "server", s.Server.String(), "answer", s.Answer)
		default:
			out = append(out, s)
		}
	}
	return out
}

// cutShort reports whether ctx has ended or its deadline has passed: a
// query whose socket deadline (ctx's) fired may return before ctx's own
// timer marks it done.
func cutShort(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// answers asks one authoritative server for TXT name and reports whether
// value is among the answers, and a description of the answer.
func (c *Client) answers(ctx context.Context, addr, name, value string) (ok bool, answer string, unreachable bool) {
	r, err := c.query(ctx, addr, name, mdns.TypeTXT, false)
	if err != nil {
		if isTimeout(err) {
			return false, "nothing (timeout)", false
		}
		unreachable = errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.EADDRNOTAVAIL) ||
			errors.Is(err, syscall.EAFNOSUPPORT)
		return false, "nothing (" + err.Error() + ")", unreachable
	}
	if r.Rcode != mdns.RcodeSuccess {
		return false, rcodeName(r.Rcode), false
	}
	if !r.Authoritative {
		return false, "without the AA bit (the server is not authoritative for the zone: lame delegation)", false
	}
	var vals []string
	for _, rr := range r.Answer {
		if t, ok := rr.(*mdns.TXT); ok && strings.EqualFold(t.Hdr.Name, name) {
			v := strings.Join(t.Txt, "")
			if v == value {
				return true, "", false
			}
			vals = append(vals, strconv.Quote(v))
		}
	}
	if len(vals) == 0 {
		return false, "no TXT record", false
	}
	return false, strings.Join(vals, ", "), false
}
