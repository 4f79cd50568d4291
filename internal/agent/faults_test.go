package agent

import (
	"context"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/renew"
)

// faultProxy sits between Detour and Pebble and, before forwarding, fails
// a share of the requests: the connection is reset, or the answer is a 500
// or a 429 with Retry-After. Faults strike before Pebble sees the request,
// as a lost connection or an overloaded front end would. It counts the
// orders Pebble created (201 answers to newOrder).
type faultProxy struct {
	rate float64
	next http.Handler

	mu       sync.Mutex
	rnd      *rand.Rand
	faults   map[string]int
	orders   int
	requests int
}

func newFaultProxy(t *testing.T, target string, hc *http.Client, rate float64) (p *faultProxy, proxyURL string, rootsPEM []byte) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "" // SetURL joins the target's path with the request's
	p = &faultProxy{rate: rate, rnd: rand.New(rand.NewPCG(3, 4)), faults: map[string]int{}}
	p.next = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			// Pebble builds every URL from the Host header, so its
			// answers point at the proxy (which speaks HTTPS, as Pebble
			// insists the JWS url says).
			r.Out.Host = r.In.Host
		},
		Transport: hc.Transport,
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.Method == http.MethodPost && resp.Request.URL.Path == "/order-plz" && resp.StatusCode == http.StatusCreated {
				p.mu.Lock()
				p.orders++
				p.mu.Unlock()
			}
			return nil
		},
	}
	srv := httptest.NewTLSServer(p)
	t.Cleanup(srv.Close)
	return p, srv.URL, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.requests++
	fault := ""
	if p.rnd.Float64() < p.rate {
		fault = []string{"reset", "500", "429"}[p.rnd.IntN(3)]
		p.faults[fault]++
	}
	p.mu.Unlock()
	switch fault {
	case "reset":
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // RST, not FIN
			}
			conn.Close()
		}
	case "500":
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, `{"type":"urn:ietf:params:acme:error:serverInternal","detail":"injected fault","status":500}`)
	case "429":
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"type":"urn:ietf:params:acme:error:rateLimited","detail":"injected fault","status":429}`)
	default:
		p.next.ServeHTTP(w, r)
	}
}

// With 30 % of the requests to the CA failing (resets, 500s, 429s with
// Retry-After) and Pebble rejecting 30 % of the nonces, the agent still
// issues and renews every certificate: none is ever lost (each live pair
// matches), and no attempt creates more than one order.
func TestAgentConvergesThroughFaults(t *testing.T) {
	t.Parallel()
	env := newEnv(t, 10*time.Second, 30)
	p, proxyURL, roots := newFaultProxy(t, env.CA.DirectoryURL(), env.CA.HTTPClient(), 0.30)
	u, _ := url.Parse(env.CA.DirectoryURL())
	client, err := acme.New(acme.Options{Directory: proxyURL + u.Path, RootsPEM: roots, Logger: env.Log, PollMin: 2 * time.Millisecond, MaxRetryWait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	names := []string{"f1.detour.test", "f2.detour.test"}
	// No renewal-info polls: every request through the proxy is part of a
	// renewal attempt.
	plan := Plan{}
	for _, n := range names {
		plan.Certs = append(plan.Certs, pebbleCert(t, env, client, n, profileBrief))
	}
	counter := &countingObtainer{Obtainer: env.Manager(t)}
	a := runAgentWith(t, env, counter, plan, nil)
	waitFor(t, a, 60*time.Second, "a renewal of every certificate", func(st map[string]Status) bool {
		for _, n := range names {
			if s := st[n]; s.Version > 0 && !s.Running {
				liveLeaf(t, env, n) // never lost: the live pair always matches
			}
			if st[n].Version < 2 {
				return false
			}
		}
		return true
	})
	for _, n := range names {
		liveLeaf(t, env, n)
	}
	// Counted before the orders: an attempt still running may have
	// created its order by then, and is counted as started.
	p.mu.Lock()
	orders := p.orders
	p.mu.Unlock()
	counter.mu.Lock()
	started, attempts, failures := counter.started, counter.attempts, counter.failures
	counter.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if orders > started {
		t.Errorf("%d orders created in %v attempts begun: more than one order per attempt", orders, started)
	}
	if failures == 0 || p.faults["reset"] == 0 || p.faults["500"] == 0 || p.faults["429"] == 0 {
		t.Errorf("faults %v, failed attempts %v: the proxy did not exercise every fault", p.faults, failures)
	}
	t.Logf("%d requests, faults %v; %d attempts begun, %d ended, %d failed; %d orders", p.requests, p.faults, started, attempts, failures, orders)
}

// countingObtainer counts the renewal attempts and failures.
type countingObtainer struct {
	Obtainer
	mu sync.Mutex
	// started counts the attempts begun (one may be running when they
	// are read), attempts those that ended.
	started, attempts, failures int
}

func (c *countingObtainer) Obtain(ctx context.Context, req renew.Request) (renew.Result, error) {
	c.mu.Lock()
	c.started++
	c.mu.Unlock()
	res, err := c.Obtainer.Obtain(ctx, req)
	c.mu.Lock()
	c.attempts++
	if err != nil {
		c.failures++
	}
	c.mu.Unlock()
	return res, err
}
