package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// Defaults of Options.
const (
	// DefaultResolvConf is where the default resolver is read from.
	DefaultResolvConf = "/etc/resolv.conf"
	// DefaultQueryTimeout bounds one DNS query (all its attempts).
	DefaultQueryTimeout = 3 * time.Second
	// MaxCNAMEs bounds the CNAME chain FollowCNAMEs follows.
	MaxCNAMEs = 8
)

// attempts is how often a UDP query is sent before giving up: a lost
// datagram should not fail a renewal.
const attempts = 3

// Options configure a Client.
type Options struct {
	// Logger receives debug messages about queries; nil discards them.
	Logger *slog.Logger
	// Resolver is the host:port of the DNS server that answers questions
	// about names (SOA, NS, CNAME, A/AAAA): a recursive resolver, or an
	// authoritative server for the zones involved. Default: the first
	// nameserver of ResolvConf.
	Resolver string
	// ResolvConf is the resolv.conf file the default resolver is read
	// from. Default DefaultResolvConf.
	ResolvConf string
	// Port is the port authoritative servers are asked on when Wait queries
	// them directly. Default 53; tests set the port of a local server.
	Port int
	// Nameservers overrides where Wait reaches an authoritative server: NS
	// name ("ns2.example.com.") to host:port, instead of the name's
	// addresses on Port. For servers reachable only at another address
	// (NAT, split horizon) and for tests.
	Nameservers map[string]string
	// QueryTimeout bounds one query. Default DefaultQueryTimeout.
	QueryTimeout time.Duration
}

// Client asks DNS questions for zone finding and propagation checks. It is
// safe for concurrent use.
type Client struct {
	log      *slog.Logger
	resolver string
	port     string
	nsAddrs  map[string]string // canonical NS name -> host:port
	timeout  time.Duration
}

// New returns a Client. It fails when no resolver is configured and none
// can be read from /etc/resolv.conf.
func New(opts Options) (*Client, error) {
	c := &Client{log: opts.Logger, resolver: opts.Resolver, port: "53", timeout: opts.QueryTimeout}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.timeout <= 0 {
		c.timeout = DefaultQueryTimeout
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("DNS port %d out of range; use 1-65535 (0 means 53)", opts.Port)
	}
	if opts.Port > 0 {
		c.port = strconv.Itoa(opts.Port)
	}
	c.nsAddrs = make(map[string]string, len(opts.Nameservers))
	for n, a := range opts.Nameservers {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("address %q of nameserver %s is not host:port", a, n)
		}
		c.nsAddrs[mdns.CanonicalName(n)] = a
	}
	if c.resolver == "" {
		path := opts.ResolvConf
		if path == "" {
			path = DefaultResolvConf
		}
		r, err := systemResolver(path)
		if err != nil {
			return nil, err
		}
		c.resolver = r
	} else if _, _, err := net.SplitHostPort(c.resolver); err != nil {
		return nil, fmt.Errorf("resolver %q is not host:port; write e.g. \"127.0.0.53:53\"", c.resolver)
	}
	return c, nil
}

// Resolver returns the host:port questions about names are sent to.
func (c *Client) Resolver() string { return c.resolver }

// systemResolver returns the first nameserver of the resolv.conf file at path.
func systemResolver(path string) (string, error) {
	cfg, err := mdns.ClientConfigFromFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the system resolver from %s: %w; set a resolver (host:port) explicitly", path, err)
	}
	if len(cfg.Servers) == 0 {
		return "", fmt.Errorf("%s lists no nameserver; set a resolver (host:port) explicitly", path)
	}
	return net.JoinHostPort(cfg.Servers[0], cfg.Port), nil
}

// query asks addr one question and returns the answer. recurse sets the RD
// bit: on for the resolver, off for authoritative servers.
func (c *Client) query(ctx context.Context, addr, name string, qtype uint16, recurse bool) (*mdns.Msg, error) {
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	m.RecursionDesired = recurse
	m.SetEdns0(1232, false)
	return c.exchange(ctx, m, addr)
}

// exchange sends m to addr over UDP, resending a lost datagram, and over TCP
// when the answer is truncated.
func (c *Client) exchange(ctx context.Context, m *mdns.Msg, addr string) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	per := c.timeout / attempts
	udp := &mdns.Client{Net: "udp", Timeout: per}
	var (
		r   *mdns.Msg
		err error
	)
	for range attempts {
		actx, acancel := context.WithTimeout(ctx, per)
		r, _, err = udp.ExchangeContext(actx, m, addr)
		acancel()
		if !isTimeout(err) || ctx.Err() != nil {
			break
		}
	}
	if err == nil && r.Truncated {
		tcp := &mdns.Client{Net: "tcp", Timeout: c.timeout}
		r, _, err = tcp.ExchangeContext(ctx, m, addr)
	}
	if err != nil {
		return nil, fmt.Errorf("asking %s for %s %s: %w", addr, mdns.TypeToString[m.Question[0].Qtype], m.Question[0].Name, err)
	}
	c.log.DebugContext(ctx, "dns answer", "server", addr, "name", m.Question[0].Name,
		"type", mdns.TypeToString[m.Question[0].Qtype], "rcode", mdns.RcodeToString[r.Rcode], "answers", len(r.Answer))
	return r, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// hostAddrs returns the addresses of host (an IP literal or a name, looked
// up as A and AAAA through the resolver).
func (c *Client) hostAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{a}, nil
	}
	var out []netip.Addr
	var errs []error
	for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		r, err := c.query(ctx, c.resolver, host, qt, true)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rr := range r.Answer {
			switch rr := rr.(type) {
			case *mdns.A:
				if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
					out = append(out, a)
				}
			case *mdns.AAAA:
				if a, ok := netip.AddrFromSlice(rr.AAAA); ok {
					out = append(out, a)
				}
			}
		}
	}
	if len(out) == 0 {
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("looking up the address of %s: %w", host, err)
		}
		return nil, fmt.Errorf("%s has no A or AAAA record at resolver %s", host, c.resolver)
	}
	return out, nil
}

// rcodeName returns the mnemonic of a DNS rcode ("NOTAUTH").
func rcodeName(rc int) string {
	if s, ok := mdns.RcodeToString[rc]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rc)
}
