package acmedns

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/crypto/bcrypt"

	"github.com/detour-acme/detour/internal/dnsserver"
	"github.com/detour-acme/detour/internal/store"
)

const testZone = "auth.detour.test."

// fakeClock moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a running acme-dns server: the API over plain HTTP on loopback and
// the DNS responder, both on 127.0.0.1:0.
type env struct {
	t       testing.TB
	api     *Server
	dns     *dnsserver.Server
	url     string // http://127.0.0.1:port
	dnsAddr string
	st      *store.FS
	stop    func()
}

type envOptions struct {
	dir     string        // state directory; default a new temporary one
	storage store.Storage // instead of a store.FS in dir (e.st is then nil)
	clock   *fakeClock
	opts    Options // Storage, DNS and Zone are filled in
}

// start runs a server for t; it is stopped when the test ends, or earlier
// with e.stop.
func start(t testing.TB, eo envOptions) *env {
	t.Helper()
	var st *store.FS
	storage := eo.storage
	if storage == nil {
		if eo.dir == "" {
			eo.dir = t.TempDir()
		}
		var err error
		if st, err = store.NewFS(eo.dir, store.FSOptions{}); err != nil {
			t.Fatal(err)
		}
		storage = st
	}
	dopts := dnsserver.Options{Zones: []string{testZone}, RateLimit: -1}
	if eo.clock != nil {
		dopts.Now = eo.clock.Now
	}
	d := dnsserver.New(dopts)
	o := eo.opts
	o.Storage, o.DNS, o.Zone = storage, d, testZone
	if o.BcryptCost == 0 {
		o.BcryptCost = bcrypt.MinCost
	}
	ctx, cancel := context.WithCancel(context.Background())
	api, err := New(ctx, o)
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	pc, dln, err := dnsserver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dnsDone, apiDone := make(chan error, 1), make(chan error, 1)
	go func() { dnsDone <- d.Serve(ctx, pc, dln) }()
	go func() { apiDone <- api.Serve(ctx, ln, nil) }()
	<-d.Ready()
	e := &env{t: t, api: api, dns: d, url: "http://" + ln.Addr().String(), dnsAddr: pc.LocalAddr().String(), st: st}
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-dnsDone; err != nil {
				t.Errorf("DNS Serve: %v", err)
			}
			if err := <-apiDone; err != nil {
				t.Errorf("API Serve: %v", err)
			}
		})
	}
	t.Cleanup(e.stop)
	return e
}

// response is an API answer.
type response struct {
	status int
	ctype  string
	body   []byte
}

func (r response) errorCode(t testing.TB) string {
	t.Helper()
	var doc struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatalf("error body %q is not JSON: %v", r.body, err)
	}
	return doc.Error
}

// do sends a request through client c (http.DefaultClient when nil).
func (e *env) do(c *http.Client, method, path string, hdr map[string]string, body string) response {
	e.t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), body: b}
}

// register registers an account, failing the test unless it succeeds.
func (e *env) register(body string) Registration {
	e.t.Helper()
	r := e.do(nil, http.MethodPost, "/register", nil, body)
	if r.status != http.StatusCreated {
		e.t.Fatalf("register: %d %s", r.status, r.body)
	}
	var reg Registration
	if err := json.Unmarshal(r.body, &reg); err != nil {
		e.t.Fatalf("register response %q: %v", r.body, err)
	}
	return reg
}

func (e *env) update(c *http.Client, reg Registration, subdomain, txt string) response {
	e.t.Helper()
	body, _ := json.Marshal(map[string]string{"subdomain": subdomain, "txt": txt})
	return e.do(c, http.MethodPost, "/update", map[string]string{"X-Api-User": reg.Username, "X-Api-Key": reg.Password}, string(body))
}

// mustUpdate updates reg's TXT value, failing the test unless it succeeds.
func (e *env) mustUpdate(reg Registration, txt string) {
	e.t.Helper()
	if r := e.update(nil, reg, reg.Subdomain, txt); r.status != http.StatusOK {
		e.t.Fatalf("update %q: %d %s", txt, r.status, r.body)
	}
}

// txt asks the DNS server for the TXT values of name over UDP, sorted.
func (e *env) txt(name string) []string {
	e.t.Helper()
	c := &dns.Client{Timeout: 5 * time.Second}
	m := new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	r, _, err := c.Exchange(m, e.dnsAddr)
	if err != nil {
		e.t.Fatalf("TXT query for %s: %v", name, err)
	}
	if !r.Authoritative {
		e.t.Errorf("TXT answer for %s is not authoritative", name)
	}
	var out []string
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	slices.Sort(out)
	return out
}

// value returns a valid dns-01 TXT value (43 base64url characters) made
// from seed.
func value(seed string) string {
	v := strings.Repeat(seed, 43/len(seed)+1)[:43]
	return v
}

// clientFrom returns an HTTP client whose connections come from the local
// address ip (e.g. "127.0.0.2": Linux routes all of 127/8 to loopback).
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}, Timeout: 10 * time.Second}
}

func jsonBody(v any) string {
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(v)
	return b.String()
}
