package persist

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/dns"
)

// Lookup reads the TXT records at a name from every authoritative server
// of its zone.
type Lookup interface {
	// Authoritative returns one Answer per authoritative server address.
	// An error means the servers could not even be found.
	Authoritative(ctx context.Context, name string) ([]Answer, error)
}

// Answer is what one authoritative server answered for TXT name.
type Answer struct {
	// Server names the server, e.g. "ns1.example.com. (192.0.2.1:53)".
	Server string
	// Values are the TXT values, each record's character-strings joined
	// (RFC 1035 §3.3.14). Empty for NXDOMAIN or NODATA.
	Values []string
	// Problem, when set, says why the answer cannot be trusted (timeout,
	// SERVFAIL, REFUSED, no AA bit); Values is then empty.
	Problem string
}

// DNSLookup is the Lookup over package dns: it follows the name's CNAMEs
// (the CA follows them too), finds the zone and its NS RRset through the
// client's resolver, and asks every server address with recursion off.
type DNSLookup struct {
	Client *dns.Client
	// Timeout bounds each query. Default 3s.
	Timeout time.Duration
}

var _ Lookup = DNSLookup{}

// Authoritative implements Lookup.
func (l DNSLookup) Authoritative(ctx context.Context, name string) ([]Answer, error) {
	if l.Client == nil {
		return nil, errors.New("persist: DNSLookup has no DNS client")
	}
	z, err := l.Client.FindZone(ctx, name)
	if err != nil {
		return nil, err
	}
	servers, err := l.Client.Nameservers(ctx, z.Name)
	if err != nil {
		return nil, err
	}
	timeout := l.Timeout
	if timeout <= 0 {
		timeout = dns.DefaultQueryTimeout
	}
	out := make([]Answer, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() {
			out[i] = askTXT(ctx, s.Addr, z.Target, timeout)
			out[i].Server = s.String()
		})
	}
	wg.Wait()
	return out, nil
}

// askTXT asks addr for TXT name with recursion off, over UDP and then TCP
// when the answer is truncated (long dns-persist-01 values may be).
func askTXT(ctx context.Context, addr, name string, timeout time.Duration) Answer {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), mdns.TypeTXT)
	m.RecursionDesired = false
	m.SetEdns0(1232, false)
	r, _, err := (&mdns.Client{Net: "udp", Timeout: timeout}).ExchangeContext(ctx, m, addr)
	if err == nil && r.Truncated {
		r, _, err = (&mdns.Client{Net: "tcp", Timeout: timeout}).ExchangeContext(ctx, m, addr)
	}
	switch {
	case err != nil:
		return Answer{Problem: fmt.Sprintf("no answer (%v)", err)}
	case r.Rcode == mdns.RcodeNameError:
		return Answer{}
	case r.Rcode != mdns.RcodeSuccess:
		return Answer{Problem: "answered " + mdns.RcodeToString[r.Rcode]}
	case !r.Authoritative:
		return Answer{Problem: "answered without the AA bit (not authoritative for the zone: lame delegation)"}
	}
	var a Answer
	for _, rr := range r.Answer {
		if t, ok := rr.(*mdns.TXT); ok && strings.EqualFold(t.Hdr.Name, name) {
			a.Values = append(a.Values, strings.Join(t.Txt, ""))
		}
	}
	return a
}
