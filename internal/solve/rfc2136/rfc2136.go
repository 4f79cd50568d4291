// Package rfc2136 answers TXT challenges (dns-01, RFC 8555 §8.4, and the
// other types of solve.TXTChallenges) by changing the zone with RFC 2136
// dynamic updates signed with a TSIG key (RFC 8945), the way BIND, Knot,
// PowerDNS and Windows DNS accept them.
//
// The generic solve.TXT solver names the record (for dns-01,
// _acme-challenge.<name>) and computes its value; this package's backend
// adds the value at that owner name (or at the end of its CNAME chain,
// which the CA follows too), with a short TTL. CleanUp removes exactly that
// value: a wildcard and its base name share one owner name, and both
// values must coexist while both are validated. Wait returns when every
// authoritative server of the zone answers the value, asked directly,
// instead of sleeping a fixed time.
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
	// Challenge is the challenge type answered, one of
	// solve.TXTChallenges(); default dns-01.
	Challenge string
	// AccountURL returns the ACME account URL, for challenge types whose
	// record is named after the account (see solve.NeedsAccount).
	AccountURL func(ctx context.Context) (string, error)
}

// Solver is a solve.Solver and solve.Waiter for the TXT challenges
// through RFC 2136: the generic solve.TXT names the record and computes its
// value, the records backend updates the zone.
type Solver struct {
	*solve.TXT
	r *records
}

// records is the solve.Records backend: signed updates to the zone that
// holds each owner name (or the end of its CNAME chain).
type records struct {
	log     *slog.Logger
	server  string
	zone    string
	timeout time.Duration
	ttl     uint32
	client  *dns.Client
	updater *dns.Updater

	mu     sync.Mutex
	placed map[placeKey]placement // where SetTXT put each value
}

var (
	_ solve.Solver  = (*Solver)(nil)
	_ solve.Waiter  = (*Solver)(nil)
	_ solve.Records = (*records)(nil)
)

type placeKey struct{ name, value string }

// placement is where one challenge's record goes.
type placement struct {
	zone, target, server string
}

// New validates opts and returns a Solver.
func New(opts Options) (*Solver, error) {
	s := &records{log: opts.Logger, server: opts.Server, timeout: opts.PropagationTimeout, ttl: opts.TTL,
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
	txt, err := solve.NewTXT(solve.TXTOptions{Challenge: opts.Challenge, Records: s, AccountURL: opts.AccountURL})
	if err != nil {
		return nil, err
	}
	return &Solver{TXT: txt, r: s}, nil
}

// Check refuses IP identifiers, which no DNS challenge can validate
// (RFC 8738 §7), saying which paths can; then solve.TXT.Check names the
// record and CheckTXT proves the update credentials for it.
func (s *Solver) Check(ctx context.Context, id ident.Identifier) error {
	if id.Type == ident.TypeIP {
		return fmt.Errorf("%w: %s is an IP address, which %s cannot validate (RFC 8738); use an http-01 or tls-alpn-01 path for it",
			solve.ErrNotApplicable, id.Value, s.Type())
	}
	return s.TXT.Check(ctx, id)
}

// CheckTXT finds the zone of r.Name and proves, with an update that
// changes nothing, that the server accepts the key for it.
func (s *records) CheckTXT(ctx context.Context, r solve.TXTRecord) error {
	p, err := s.locate(ctx, r)
	if err != nil {
		return err
	}
	if err := s.updater.Probe(ctx, p.server, p.zone); err != nil {
		return err
	}
	s.log.DebugContext(ctx, "update credentials accepted", "identifier", r.Challenge.Identifier.Value, "name", r.Name,
		"zone", p.zone, "server", p.server)
	return nil
}

// SetTXT adds r.Value at r.Name (or the end of its CNAME chain), keeping
// the other values at the same name.
func (s *records) SetTXT(ctx context.Context, r solve.TXTRecord) error {
	p, err := s.locate(ctx, r)
	if err != nil {
		return err
	}
	if err := s.updater.AddTXT(ctx, p.server, dns.TXT{Zone: p.zone, Name: p.target, Value: r.Value, TTL: s.ttl}); err != nil {
		return err
	}
	s.mu.Lock()
	s.placed[placeKey{r.Name, r.Value}] = p
	s.mu.Unlock()
	s.log.InfoContext(ctx, "TXT record presented", "identifier", r.Challenge.Identifier.Value, "challenge", r.Challenge.Type,
		"name", p.target, "zone", p.zone, "server", p.server)
	return nil
}

// WaitTXT returns when every authoritative server of the zone answers
// r.Value, or fails after the propagation timeout naming the servers that
// do not.
func (s *records) WaitTXT(ctx context.Context, r solve.TXTRecord) error {
	p, err := s.placement(ctx, r)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := s.client.Wait(ctx, p.target, r.Value, dns.WaitOptions{Zone: p.zone, Timeout: s.timeout}); err != nil {
		return fmt.Errorf("waiting for the %s record of %s: %w", challengeType(r), subject(r), err)
	}
	s.log.InfoContext(ctx, "TXT record visible on every authoritative server", "identifier", r.Challenge.Identifier.Value,
		"challenge", r.Challenge.Type, "name", p.target, "elapsed", time.Since(start))
	return nil
}

// DeleteTXT removes exactly r.Value.
func (s *records) DeleteTXT(ctx context.Context, r solve.TXTRecord) error {
	p, err := s.placement(ctx, r)
	if err != nil {
		return err
	}
	if err := s.updater.RemoveTXT(ctx, p.server, dns.TXT{Zone: p.zone, Name: p.target, Value: r.Value}); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.placed, placeKey{r.Name, r.Value})
	s.mu.Unlock()
	return nil
}

// placement returns where SetTXT put r's value, or finds it again.
func (s *records) placement(ctx context.Context, r solve.TXTRecord) (placement, error) {
	s.mu.Lock()
	p, ok := s.placed[placeKey{r.Name, r.Value}]
	s.mu.Unlock()
	if ok {
		return p, nil
	}
	return s.locate(ctx, r)
}

// locate finds the zone, the owner name at the end of r.Name's CNAME chain
// and the update server for r's record.
func (s *records) locate(ctx context.Context, r solve.TXTRecord) (placement, error) {
	name, subj := r.Name, subject(r)
	var p placement
	var primary string
	if s.zone == "" {
		z, err := s.client.FindZone(ctx, name)
		if err != nil {
			return p, zoneError(subj, s.client.Resolver(), err)
		}
		p.zone, p.target, primary = z.Name, z.Target, z.Primary
	} else {
		target, chain, err := s.client.FollowCNAMEs(ctx, name)
		if err != nil {
			return p, zoneError(subj, s.client.Resolver(), err)
		}
		if !mdns.IsSubDomain(s.zone, target) {
			return p, fmt.Errorf("the %s record of %s lives at %s, outside zone %s (CNAME chain %s); set zone to the zone of %s, or leave it unset",
				challengeType(r), subj, target, s.zone, strings.Join(chain, " -> "), target)
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
			return p, zoneError(subj, s.client.Resolver(), err)
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

// subject names what r's record validates, for messages: the identifier
// without "*.", or the owner name when r carries no identifier.
func subject(r solve.TXTRecord) string {
	if r.Challenge.Identifier.Value != "" {
		return r.Challenge.Identifier.Base()
	}
	return strings.TrimSuffix(r.Name, ".")
}

// challengeType names r's challenge type for messages.
func challengeType(r solve.TXTRecord) string {
	if r.Challenge.Type != "" {
		return r.Challenge.Type
	}
	return "TXT"
}

// zoneError says what to do about a failed zone search for base.
func zoneError(base, resolver string, err error) error {
	if errors.Is(err, dns.ErrZoneNotFound) {
		return fmt.Errorf("the zone of %s could not be found (%w); set zone = \"<your zone>\" in the path, or check that the resolver %s answers for it", base, err, resolver)
	}
	return fmt.Errorf("finding the zone of %s: %w", base, err)
}
