package plan

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/detour-acme/detour/internal/acme"
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
