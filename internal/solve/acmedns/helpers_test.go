package acmedns_test

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/crypto/bcrypt"

	apiserver "github.com/detour-acme/detour/internal/acmedns"
	ddns "github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/dnsserver"
	"github.com/detour-acme/detour/internal/solve/acmedns"
	"github.com/detour-acme/detour/internal/store"
)

const (
	authZone     = "auth.detour.test."
	authNS       = "ns.auth.detour.test."
	customerZone = "example.test."
)

// world is the DNS of a small internet: the customer's zone (where the
// one-time CNAME lives), an acme-dns server (`detour dns-server`'s parts:
// the authoritative responder for authZone and the HTTP API), and a
// recursive resolver in front of both, as a CA and a client would use.
type world struct {
	customer     *dnsserver.Server
	auth         *dnsserver.Server
	api          *apiserver.Server
	apiURL       string
	authAddr     string // the acme-dns server's DNS, UDP and TCP
	resolverAddr string // the recursive resolver, UDP and TCP
	state        *store.FS
}

func newWorld(t testing.TB) *world {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan error
	t.Cleanup(func() {
		cancel()
		for _, d := range done {
			if err := <-d; err != nil {
				t.Errorf("server: %v", err)
			}
		}
	})
	serveDNS := func(s *dnsserver.Server) string {
		pc, ln, err := dnsserver.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		d := make(chan error, 1)
		done = append(done, d)
		go func() { d <- s.Serve(ctx, pc, ln) }()
		<-s.Ready()
		return pc.LocalAddr().String()
	}
	w := &world{}
	w.customer = dnsserver.New(dnsserver.Options{Zones: []string{customerZone}, RateLimit: -1})
	w.auth = dnsserver.New(dnsserver.Options{Zones: []string{authZone}, NS: authNS, RateLimit: -1})
	w.auth.SetAddrs(authNS, netip.MustParseAddr("127.0.0.1"))
	customerAddr := serveDNS(w.customer)
	w.authAddr = serveDNS(w.auth)

	st, err := store.NewFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.api, err = apiserver.New(ctx, apiserver.Options{Storage: st, DNS: w.auth, Zone: authZone, BcryptCost: bcrypt.MinCost, RateLimit: -1})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := make(chan error, 1)
	done = append(done, d)
	go func() { d <- w.api.Serve(ctx, ln, nil) }()
	w.apiURL = "http://" + ln.Addr().String()

	w.resolverAddr = startRecursor(t, ctx, map[string]string{customerZone: customerAddr, authZone: w.authAddr}, &done)
	if w.state, err = store.NewFS(t.TempDir(), store.FSOptions{}); err != nil {
		t.Fatal(err)
	}
	return w
}

// dnsClient returns the client a solver uses: questions to the resolver,
// the acme-dns zone's server reached at its test port.
func (w *world) dnsClient(t testing.TB) *ddns.Client {
	t.Helper()
	c, err := ddns.New(ddns.Options{Resolver: w.resolverAddr, Nameservers: map[string]string{authNS: w.authAddr}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// solver returns a solver for the world, with opts' other fields kept.
func (w *world) solver(t testing.TB, opts acmedns.Options) *acmedns.Solver {
	t.Helper()
	if opts.Server == "" {
		opts.Server = w.apiURL
	}
	if opts.Storage == nil && opts.CredentialsFile == "" {
		opts.Storage = w.state
	}
	if opts.DNS == nil {
		opts.DNS = w.dnsClient(t)
	}
	s, err := acmedns.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// recursor is a minimal recursive resolver: it sends each question to the
// server of the closest enclosing zone it knows, and follows a CNAME into
// another zone as a real resolver does (RFC 1034 §5.3.3), appending the
// records found there. A CA's validation authority trusts its resolver to
// do exactly that.
type recursor struct{ zones map[string]string }

func startRecursor(t testing.TB, ctx context.Context, zones map[string]string, done *[]chan error) string {
	t.Helper()
	pc, ln, err := dnsserver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recursor{zones: zones}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: r}, {Listener: ln, Handler: r}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		d := make(chan error, 1)
		*done = append(*done, d)
		go func() { d <- srv.ActivateAndServe() }()
		go func() { <-ctx.Done(); _ = srv.Shutdown() }()
		<-started
	}
	return pc.LocalAddr().String()
}

func (r *recursor) serverFor(name string) string {
	best := ""
	for z := range r.zones {
		if dns.IsSubDomain(z, name) && len(z) > len(best) {
			best = z
		}
	}
	return r.zones[best]
}

func (r *recursor) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg).SetReply(q)
	m.RecursionAvailable = true
	qtype := q.Question[0].Qtype
	name := dns.CanonicalName(q.Question[0].Name)
	for range 8 {
		addr := r.serverFor(name)
		if addr == "" {
			m.Rcode = dns.RcodeRefused
			break
		}
		c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
		resp, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, qtype), addr)
		if err != nil {
			m.Rcode = dns.RcodeServerFailure
			break
		}
		m.Answer = append(m.Answer, resp.Answer...)
		m.Ns, m.Extra, m.Rcode = resp.Ns, nil, resp.Rcode
		// Where does the chain in this answer end, and is it answered?
		end := name
		for moved := true; moved; {
			moved = false
			for _, rr := range resp.Answer {
				if c, ok := rr.(*dns.CNAME); ok && dns.CanonicalName(c.Hdr.Name) == end {
					end, moved = dns.CanonicalName(c.Target), true
				}
			}
		}
		answered := slices.ContainsFunc(resp.Answer, func(rr dns.RR) bool {
			return rr.Header().Rrtype == qtype && strings.EqualFold(rr.Header().Name, end)
		})
		if end == name || answered || qtype == dns.TypeCNAME || resp.Rcode != dns.RcodeSuccess {
			break
		}
		name = end
	}
	_ = w.WriteMsg(m)
}

// txtAt asks addr (recursion desired) for the TXT values of name, sorted.
func txtAt(t testing.TB, addr, name string) []string {
	t.Helper()
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	r, _, err := c.Exchange(new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeTXT), addr)
	if err != nil {
		t.Fatalf("TXT %s at %s: %v", name, addr, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if tx, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(tx.Txt, ""))
		}
	}
	slices.Sort(out)
	return out
}
