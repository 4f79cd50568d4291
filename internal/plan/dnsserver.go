package plan

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/acmedns"
	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/dnsserver"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/dnsembed"
	"github.com/detour-acme/detour/internal/store"
)

// fileCheckInterval is how often FileCert looks for changed files.
const fileCheckInterval = 30 * time.Second

// FileCert serves a certificate from PEM files and re-reads them when they
// change, so that an externally renewed certificate is picked up without a
// restart.
type FileCert struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // modification times of both files when loaded
	checked time.Time
}

// NewFileCert loads the pair certFile, keyFile.
func NewFileCert(certFile, keyFile string, log *slog.Logger) (*FileCert, error) {
	f := &FileCert{certFile: certFile, keyFile: keyFile, log: log}
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *FileCert) modStamp() string {
	var b strings.Builder
	for _, p := range []string{f.certFile, f.keyFile} {
		if fi, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%d/%d;", fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return b.String()
}

// load reads both files; the caller holds f.mu or owns f.
func (f *FileCert) load() error {
	stamp := f.modStamp()
	c, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return fmt.Errorf("loading the certificate %s and key %s: %w", f.certFile, f.keyFile, err)
	}
	f.cert, f.stamp, f.checked = &c, stamp, time.Now()
	return nil
}

// GetCertificate is tls.Config.GetCertificate.
func (f *FileCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) >= fileCheckInterval {
		f.checked = time.Now()
		if f.modStamp() != f.stamp {
			if err := f.load(); err != nil {
				f.log.Warn("keeping the previous certificate", "error", err)
			} else {
				f.log.Info("certificate reloaded", "file", f.certFile)
			}
		}
	}
	return f.cert, nil
}

// APICertInput describes the certificate `detour dns-server --acme`
// obtains for its API, through dns-01 answered by its own zone.
type APICertInput struct {
	Account AccountInput
	Profile string
	// Host is the API's host name (inside the served zone).
	Host string
	// Server is the DNS server of the zone; QueryAddr where it answers.
	Server    *dnsserver.Server
	QueryAddr string
}

// APICert is the API's certificate, obtained and renewed by the renewal
// step in a store of its own (<state>/dns-server), so that `detour renew`
// does not try to renew it through a second DNS listener.
type APICert struct {
	log    *slog.Logger
	mgr    *renew.Manager
	st     *store.FS
	t      renew.Target
	policy renew.Policy
	frac   float64 // jitter of the renewal time, drawn once

	cur    atomic.Pointer[tls.Certificate]
	next   time.Time    // when to look again; used by RenewLoop only
	client *acme.Client // closed when RenewLoop returns
}

// APICert returns the API's certificate once a valid one is available,
// obtaining one first when none is stored or the stored one is due.
func (p *Planner) APICert(ctx context.Context, in APICertInput) (*APICert, error) {
	st, err := store.NewFS(filepath.Join(p.Store.Dir(), "dns-server"), store.FSOptions{Logger: p.log})
	if err != nil {
		return nil, err
	}
	mgr, err := renew.New(renew.Options{Store: st, Logger: p.log, Policy: p.opts.Policy})
	if err != nil {
		return nil, err
	}
	id, err := ident.Parse(strings.TrimSuffix(in.Host, "."))
	if err != nil {
		return nil, inputErr("api-hostname", err)
	}
	log := p.log.With("component", "api-certificate")
	solver, err := dnsembed.New(dnsembed.Options{Logger: log, Server: in.Server, QueryAddr: in.QueryAddr})
	if err != nil {
		return nil, err
	}
	ca, err := p.AccountCA(in.Account)
	if err != nil {
		return nil, err
	}
	req := renew.Request{
		Name: id.Value, Identifiers: []ident.Identifier{id}, Profile: in.Profile, CA: ca,
		Paths: []solve.Path{{Name: "dns-server", Solver: solver}},
		Refs:  []store.PathRef{{Name: "dns-server", Kind: dnsembed.Kind}},
	}
	c := &APICert{
		log: log, mgr: mgr, st: st, policy: p.opts.Policy, frac: rand.Float64(),
		t: renew.Target{Name: id.Value, CAs: []string{orDefault(ca.Name, config.DefaultCA)},
			Request: func(context.Context, int) (renew.Request, func(), error) { return req, func() {}, nil }},
	}
	if err := c.ensure(ctx); err != nil {
		ca.Client.Close()
		return nil, fmt.Errorf("obtaining the API's certificate for %s: %w", id.Value, err)
	}
	c.client = ca.Client
	return c, nil
}

// ensure runs the renewal step (obtaining a certificate when none is
// stored or the stored one is due), loads the stored one for serving, and
// sets c.next from the step's schedule, backoff after failures included.
func (c *APICert) ensure(ctx context.Context) error {
	out := c.mgr.Renew(ctx, c.t, renew.StepOptions{Frac: c.frac, RetryFrac: 1})
	if out.Ran && out.Err == nil {
		c.log.Info("API certificate obtained", "identifier", c.t.Name, "not_after", out.Result.NotAfter)
	}
	rec, rerr := c.st.LoadRecord(ctx, c.t.Name)
	if rerr == nil {
		c.next = c.policy.Due(rec, time.Now(), c.frac, 1).At
	}
	if out.Err != nil {
		// A failure the record does not hold (another process had the
		// lock) must not make the loop spin.
		if soon := time.Now().Add(time.Minute); c.next.Before(soon) {
			c.next = soon
		}
		return out.Err
	}
	if rerr != nil {
		return rerr
	}
	b, _, err := c.st.LoadCertificate(ctx, c.t.Name)
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(b.FullchainPEM(), b.KeyPEM)
	if err != nil {
		return fmt.Errorf("loading the stored API certificate: %w", err)
	}
	c.cur.Store(&cert)
	return nil
}

// GetCertificate is tls.Config.GetCertificate.
func (c *APICert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// RenewLoop renews the certificate when it is due until ctx is done; after
// a failure the step's backoff decides when to try again.
func (c *APICert) RenewLoop(ctx context.Context) {
	defer c.client.Close()
	for {
		t := time.NewTimer(max(0, time.Until(c.next)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := c.ensure(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.Error("renewing the API certificate failed; still serving the current one", "error", err, "retry_at", c.next)
		}
	}
}

// DNSServerInput describes `detour dns-server`: an authoritative DNS
// server for a delegated zone and an acme-dns compatible API over it.
type DNSServerInput struct {
	// Zone is the delegated zone, NSName its name server and APIHost the
	// API's host name, all absolute (with a trailing dot).
	Zone, NSName, APIHost string
	// Addrs are this server's public addresses, served for NSName and
	// APIHost when they lie in the zone.
	Addrs []netip.Addr
	// DNSListen and APIListen are where the DNS server and the API bind.
	DNSListen, APIListen string
	// TLSCert and TLSKey serve the API from PEM files (re-read when they
	// change); ACME obtains and renews its certificate from Account's CA
	// through dns-01 answered by the zone itself; neither: plain HTTP (a
	// loopback APIListen only).
	TLSCert, TLSKey string
	ACME            bool
	Account         AccountInput
	Profile         string
	// TXTLifetime, DisableRegistration and RateLimit tune the API (see
	// acmedns.Options).
	TXTLifetime         time.Duration
	DisableRegistration bool
	RateLimit           float64
}

// DNSServerEvents tell the caller what runs where, as soon as it does.
type DNSServerEvents struct {
	// DNSListening is called once the DNS server answers on addr.
	DNSListening func(addr string)
	// APIListening is called once the API listens on addr, with its
	// scheme ("https", or "http" on loopback).
	APIListening func(scheme, addr string)
}

// ListenError is a server of `detour dns-server` that could not bind its
// address; Which is "dns" or "api".
type ListenError struct {
	Which, Addr string
	Err         error
}

func (e *ListenError) Error() string {
	what := "the DNS server"
	if e.Which == "api" {
		what = "the API"
	}
	msg := fmt.Sprintf("binding %s on %s: %v", what, e.Addr, e.Err)
	switch {
	case e.Which == "dns" && errors.Is(e.Err, os.ErrPermission):
		msg += "; port 53 needs root or CAP_NET_BIND_SERVICE (AmbientCapabilities=CAP_NET_BIND_SERVICE in the systemd unit)"
	case e.Which == "dns" && errors.Is(e.Err, syscall.EADDRINUSE):
		msg += "; another program listens there (often systemd-resolved on 127.0.0.53:53): stop it, or bind this host's public address, e.g. 203.0.113.7:53"
	}
	return msg
}

func (e *ListenError) Unwrap() error { return e.Err }

// ServeDNS runs `detour dns-server` until ctx is done (a clean exit) or a
// server fails.
func (p *Planner) ServeDNS(ctx context.Context, in DNSServerInput, ev DNSServerEvents) error {
	dnsSrv := dnsserver.New(dnsserver.Options{Logger: p.log.With("component", "dns"), Zones: []string{in.Zone}, NS: in.NSName})
	if len(in.Addrs) > 0 {
		dnsSrv.SetAddrs(in.NSName, in.Addrs...)
		if in.APIHost != in.NSName && mdns.IsSubDomain(in.Zone, in.APIHost) {
			dnsSrv.SetAddrs(in.APIHost, in.Addrs...)
		}
	}
	// The accounts: the state directory on a single host; in a fleet,
	// etcd, which every node's dns-server shares (acmedns follows the
	// others' writes), so that any of them answers the API and DNS.
	var accounts store.Storage = p.Store
	if p.fleet != nil {
		accounts = p.fleet.store
	}
	// ctx ends when one server stops (or New fails): it also ends the
	// following of the other nodes' writes.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	api, err := acmedns.New(ctx, acmedns.Options{
		Logger: p.log.With("component", "acme-dns"), Storage: accounts, DNS: dnsSrv, Zone: in.Zone,
		TXTLifetime: in.TXTLifetime, DisableRegistration: in.DisableRegistration, RateLimit: in.RateLimit,
	})
	if err != nil {
		return err
	}
	pc, dln, err := dnsserver.Listen(in.DNSListen)
	if err != nil {
		return &ListenError{Which: "dns", Addr: in.DNSListen, Err: err}
	}
	errc := make(chan error, 2)
	go func() { errc <- dnsSrv.Serve(ctx, pc, dln) }()
	running := 1
	select {
	case <-dnsSrv.Ready():
	case err := <-errc:
		return err
	}
	dnsAddr := pc.LocalAddr().String()
	ev.DNSListening(dnsAddr)

	var tlsConf *tls.Config
	var loopDone chan struct{} // closed when the ACME renewal loop has stopped
	scheme := "http"
	switch {
	case in.TLSCert != "":
		src, err := NewFileCert(in.TLSCert, in.TLSKey, p.log)
		if err != nil {
			cancel()
			return errors.Join(err, <-errc)
		}
		tlsConf, scheme = &tls.Config{GetCertificate: src.GetCertificate}, "https"
	case in.ACME:
		src, err := p.APICert(ctx, APICertInput{Account: in.Account, Profile: in.Profile, Host: in.APIHost, Server: dnsSrv, QueryAddr: queryableAddr(dnsAddr)})
		if err != nil {
			cancel()
			return errors.Join(err, <-errc)
		}
		loopDone = make(chan struct{})
		go func() { src.RenewLoop(ctx); close(loopDone) }()
		tlsConf, scheme = &tls.Config{GetCertificate: src.GetCertificate}, "https"
	}
	ln, err := net.Listen("tcp", in.APIListen)
	if err != nil {
		cancel()
		if loopDone != nil {
			<-loopDone
		}
		return errors.Join(&ListenError{Which: "api", Addr: in.APIListen, Err: err}, <-errc)
	}
	go func() { errc <- api.Serve(ctx, ln, tlsConf) }()
	running++
	ev.APIListening(scheme, ln.Addr().String())

	var errs []error
	for ; running > 0; running-- {
		if err := <-errc; err != nil {
			errs = append(errs, err)
		}
		cancel() // one stopped: stop the other
	}
	if loopDone != nil {
		<-loopDone
	}
	if len(errs) == 0 && ctx.Err() != nil {
		return nil // interrupted: a clean exit
	}
	return errors.Join(errs...)
}

// queryableAddr turns a bound address into one this host can query: an
// unspecified host becomes loopback.
func queryableAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.Is6() && !ip.Is4In6() {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}
