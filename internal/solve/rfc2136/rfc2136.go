// Package rfc2136 answers dns-01 challenges (RFC 8555 §8.4) by changing the
// zone with RFC 2136 dynamic updates signed with a TSIG key (RFC 8945), the
// way BIND, Knot, PowerDNS and Windows DNS accept them.
//
// Present adds the TXT value base64url(SHA-256(key authorization)) at
// _acme-challenge.<name> (or at the end of that name's CNAME chain, which
// the CA follows too), with a short TTL. CleanUp removes exactly that value:
// a wildcard and its base name share one owner name, and both values must
// coexist while both are validated. Wait returns when every authoritative
// server of the zone answers the value, asked directly, instead of
// sleeping a fixed time.
//
// Check finds the zone and sends a harmless signed update (a prerequisite
// only, RFC 2136 §2.4.1) to the server, so that a wrong key, secret or
// server is reported before any order is created.
package rfc2136

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// DefaultTTL is the TTL of the TXT records added: resolvers that cached a
// previous value forget it quickly.
const DefaultTTL = 60

// Options configure a Solver.
type Options struct {
	// Logger receives progress messages; nil discards them.
	Logger *slog.Logger
	// Server is the host:port updates are sent to. Default: the primary
	// named by the zone's SOA record (MNAME), on port 53.
	Server string
	// Zone is the zone updated, e.g. "example.com". Default: found by
	// asking for the SOA record of the challenge name and its parents.
	Zone string
	// TSIGKey names the key that signs updates, as declared in the server's
	// configuration. Empty sends unsigned updates (a server that allows
	// updates by address).
	TSIGKey string
	// TSIGAlgorithm is "hmac-sha256" (default), "hmac-sha384" or
	// "hmac-sha512".
	TSIGAlgorithm string
	// TSIGSecret is the key's secret in base64.
	TSIGSecret string
	// Resolver is the host:port of the DNS server zone finding asks.
	// Default: the first nameserver of /etc/resolv.conf.
	Resolver string
	// Port is the port the zone's authoritative servers are asked on while
	// waiting for propagation. Default 53.
	Port int
	// Nameservers overrides the address of named authoritative servers
	// (see dns.Options.Nameservers).
	Nameservers map[string]string
	// PropagationTimeout bounds Wait. Default
	// dns.DefaultPropagationTimeout (2 minutes).
	PropagationTimeout time.Duration
	// TTL of the TXT records. Default DefaultTTL.
	TTL uint32
}

// Solver is a solve.Solver and solve.Waiter for dns-01 through RFC 2136.
type Solver struct {
	log     *slog.Logger
	server  string
	zone    string
	timeout time.Duration
	ttl     uint32
	client  *dns.Client
	updater *dns.Updater

	mu     sync.Mutex
	placed map[placeKey]placement // where Present put each value
}

var (
	_ solve.Solver = (*Solver)(nil)
	_ solve.Waiter = (*Solver)(nil)
)

type placeKey struct{ name, value string }

// placement is where one challenge's record goes.
type placement struct {
	zone, target, server string
}

// New validates opts and returns a Solver.
func New(opts Options) (*Solver, error) {
	s := &Solver{log: opts.Logger, server: opts.Server, timeout: opts.PropagationTimeout, ttl: opts.TTL,
		placed: map[placeKey]placement{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.ttl == 0 {
		s.ttl = DefaultTTL
	}
	if s.server != "" {
		if _, port, err := net.SplitHostPort(s.server); err != nil || port == "" {
			return nil, fmt.Errorf("update server %q is not host:port; write e.g. \"192.0.2.53:53\"", s.server)
		}
	}
	if opts.Zone != "" {
		if _, ok := mdns.IsDomainName(opts.Zone); !ok {
			return nil, fmt.Errorf("zone %q is not a DNS name; write e.g. \"example.com\"", opts.Zone)
		}
		s.zone = mdns.CanonicalName(opts.Zone)
	}
	var key *dns.TSIGKey
	switch {
	case opts.TSIGKey != "":
		key = &dns.TSIGKey{Name: opts.TSIGKey, Algorithm: opts.TSIGAlgorithm, Secret: opts.TSIGSecret}
	case opts.TSIGSecret != "":
		return nil, errors.New("a TSIG secret is set without tsig_key; set tsig_key to the key's name in the server's configuration")
	}
	var err error
	if s.updater, err = dns.NewUpdater(dns.UpdaterOptions{Logger: s.log, Key: key}); err != nil {
		return nil, err
	}
	if s.client, err = dns.New(dns.Options{Logger: s.log, Resolver: opts.Resolver, Port: opts.Port, Nameservers: opts.Nameservers}); err != nil {
		return nil, err
	}
	return s, nil
}

// Type returns solve.DNS01.
func (s *Solver) Type() string { return solve.DNS01 }

// Check finds the zone of id's challenge record and proves, with an update
// that changes nothing, that the server accepts the key for it. It refuses
// IP identifiers, which dns-01 cannot validate (RFC 8738 §7).
func (s *Solver) Check(ctx context.Context, id ident.Identifier) error {
	if id.Type == ident.TypeIP {
		return fmt.Errorf("%w: %s is an IP address, which dns-01 cannot validate (RFC 8738); use an http-01 or tls-alpn-01 path for it",
			solve.ErrNotApplicable, id.Value)
	}
	p, err := s.locate(ctx, id)
	if err != nil {
		return err
	}
	if err := s.updater.Probe(ctx, p.server, p.zone); err != nil {
		return err
	}
	s.log.DebugContext(ctx, "update credentials accepted", "identifier", id.Value, "zone", p.zone, "server", p.server)
	return nil
}

// Present adds the challenge's TXT value, keeping the other values at the
// same name.
func (s *Solver) Present(ctx context.Context, ch solve.Challenge) error {
	p, err := s.locate(ctx, ch.Identifier)
	if err != nil {
		return err
	}
	value := ch.DNS01Value()
	if err := s.updater.AddTXT(ctx, p.server, dns.TXT{Zone: p.zone, Name: p.target, Value: value, TTL: s.ttl}); err != nil {
		return err
	}
	s.mu.Lock()
	s.placed[placeKey{ch.DNS01Name(), value}] = p
	s.mu.Unlock()
	s.log.InfoContext(ctx, "dns-01 record presented", "identifier", ch.Identifier.Value, "challenge", solve.DNS01,
		"name", p.target, "zone", p.zone, "server", p.server)
	return nil
}

// Wait returns when every authoritative server of the zone answers the
// challenge's value, or fails after the propagation timeout naming the
// servers that do not.
func (s *Solver) Wait(ctx context.Context, ch solve.Challenge) error {
	p, err := s.placement(ctx, ch)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := s.client.Wait(ctx, p.target, ch.DNS01Value(), dns.WaitOptions{Zone: p.zone, Timeout: s.timeout}); err != nil {
		return fmt.Errorf("waiting for the dns-01 record of %s: %w", ch.Identifier.Value, err)
	}
	s.log.InfoContext(ctx, "dns-01 record visible on every authoritative server", "identifier", ch.Identifier.Value,
		"name", p.target, "elapsed", time.Since(start))
	return nil
}

// CleanUp removes exactly the challenge's value.
func (s *Solver) CleanUp(ctx context.Context, ch solve.Challenge) error {
	p, err := s.placement(ctx, ch)
	if err != nil {
		return err
	}
	if err := s.updater.RemoveTXT(ctx, p.server, dns.TXT{Zone: p.zone, Name: p.target, Value: ch.DNS01Value()}); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.placed, placeKey{ch.DNS01Name(), ch.DNS01Value()})
	s.mu.Unlock()
	return nil
}

// placement returns where Present put ch's value, or finds it again.
func (s *Solver) placement(ctx context.Context, ch solve.Challenge) (placement, error) {
	s.mu.Lock()
	p, ok := s.placed[placeKey{ch.DNS01Name(), ch.DNS01Value()}]
	s.mu.Unlock()
	if ok {
		return p, nil
	}
	return s.locate(ctx, ch.Identifier)
}

// locate finds the zone, owner name and server for id's challenge record.
func (s *Solver) locate(ctx context.Context, id ident.Identifier) (placement, error) {
	base := id.Base()
	name := "_acme-challenge." + base + "."
	var p placement
	var primary string
	if s.zone == "" {
		z, err := s.client.FindZone(ctx, name)
		if err != nil {
			return p, zoneError(base, s.client.Resolver(), err)
		}
		p.zone, p.target, primary = z.Name, z.Target, z.Primary
	} else {
		target, chain, err := s.client.FollowCNAMEs(ctx, name)
		if err != nil {
			return p, zoneError(base, s.client.Resolver(), err)
		}
		if !mdns.IsSubDomain(s.zone, target) {
			return p, fmt.Errorf("the dns-01 record of %s lives at %s, outside zone %s (CNAME chain %s); set zone to the zone of %s, or leave it unset",
				base, target, s.zone, strings.Join(chain, " -> "), target)
		}
		p.zone, p.target = s.zone, target
	}
	p.server = s.server
	if p.server != "" {
		return p, nil
	}
	if primary == "" {
		_, mname, err := s.client.ZoneOf(ctx, p.zone)
		if err != nil {
			return p, zoneError(base, s.client.Resolver(), err)
		}
		primary = mname
	}
	addr, err := s.client.PrimaryAddr(ctx, dns.Zone{Name: p.zone, Primary: primary}, "53")
	if err != nil {
		return p, err
	}
	p.server = addr
	return p, nil
}

// zoneError says what to do about a failed zone search for base.
func zoneError(base, resolver string, err error) error {
	if errors.Is(err, dns.ErrZoneNotFound) {
		return fmt.Errorf("the zone of %s could not be found (%w); set zone = \"<your zone>\" in the path, or check that the resolver %s answers for it", base, err, resolver)
	}
	return fmt.Errorf("finding the zone of %s: %w", base, err)
}
