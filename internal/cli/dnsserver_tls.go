package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/dnsserver"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/dnsembed"
	"github.com/detour-acme/detour/internal/store"
)

// fileCheckInterval is how often the API's certificate files are checked
// for a change.
const fileCheckInterval = 30 * time.Second

// fileCert serves a certificate from PEM files and re-reads them when they
// change, so that an externally renewed certificate is picked up without a
// restart.
type fileCert struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // modification times of both files when loaded
	checked time.Time
}

func newFileCert(certFile, keyFile string, log *slog.Logger) (*fileCert, error) {
	f := &fileCert{certFile: certFile, keyFile: keyFile, log: log}
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *fileCert) modStamp() string {
	var b strings.Builder
	for _, p := range []string{f.certFile, f.keyFile} {
		if fi, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%d/%d;", fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return b.String()
}

// load reads both files; the caller holds f.mu or owns f.
func (f *fileCert) load() error {
	stamp := f.modStamp()
	c, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return fmt.Errorf("loading the API certificate from --%s %s and --%s %s: %w", flagTLSCert, f.certFile, flagTLSKey, f.keyFile, err)
	}
	f.cert, f.stamp, f.checked = &c, stamp, time.Now()
	return nil
}

// get is tls.Config.GetCertificate.
func (f *fileCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) >= fileCheckInterval {
		f.checked = time.Now()
		if f.modStamp() != f.stamp {
			if err := f.load(); err != nil {
				f.log.Warn("keeping the previous API certificate", "error", err)
			} else {
				f.log.Info("API certificate reloaded", "file", f.certFile)
			}
		}
	}
	return f.cert, nil
}

// acmeCert obtains the API's certificate through dns-01 answered by the
// server's own zone, serves it, and renews it when it is due.
type acmeCert struct {
	log  *slog.Logger
	mgr  *renew.Manager
	st   *store.FS
	req  renew.Request
	frac float64 // jitter of the renewal time, drawn once

	cur  atomic.Pointer[tls.Certificate]
	next time.Time // when to look again; used by renewLoop only
}

// acmeAPICert prepares --acme: its certificates live in <state>/dns-server/,
// a store of their own, so that `detour renew` does not try to renew them
// through a second DNS listener. It returns once a valid certificate is
// available, obtaining one first if needed.
func (a *app) acmeAPICert(ctx context.Context, cfg *config.Config, f dnsServerFlags, p dnsServerPlan, dnsSrv *dnsserver.Server, queryAddr string) (*acmeCert, error) {
	st, err := store.NewFS(filepath.Join(a.st.Dir(), "dns-server"), store.FSOptions{Logger: a.log})
	if err != nil {
		return nil, err
	}
	mgr, err := renew.New(renew.Options{Store: st, Logger: a.log})
	if err != nil {
		return nil, err
	}
	ca, err := config.ResolveCA(cfg, f.ca)
	if err != nil {
		return nil, usagef("--%s: %v", flagCA, err)
	}
	if f.caRoots != "" {
		ca.RootBundle = f.caRoots
	}
	if f.email != "" {
		ca.Email = f.email
	}
	rca, err := a.caClient(ca, false, f.agreeTOS || cfg.AgreeTOS)
	if err != nil {
		return nil, err
	}
	log := a.log.With("component", "api-certificate")
	solver, err := dnsembed.New(dnsembed.Options{Logger: log, Server: dnsSrv, QueryAddr: queryAddr})
	if err != nil {
		return nil, err
	}
	id, err := ident.Parse(strings.TrimSuffix(p.apiHost, "."))
	if err != nil {
		return nil, usagef("--%s: %v", flagAPIHostname, err)
	}
	c := &acmeCert{
		log: log, mgr: mgr, st: st, frac: rand.Float64(),
		req: renew.Request{
			Name: id.Value, Identifiers: []ident.Identifier{id}, Profile: f.profile, CA: rca,
			Paths: []solve.Path{{Name: "dns-server", Solver: solver}},
			Refs:  []store.PathRef{{Name: "dns-server", Kind: config.KindDNSEmbedded}},
		},
	}
	if err := c.ensure(ctx); err != nil {
		return nil, fmt.Errorf("obtaining the API's certificate for %s: %w", id.Value, err)
	}
	return c, nil
}

// ensure obtains a new certificate when none is stored or the stored one
// is due, loads it for serving, and sets c.next.
func (c *acmeCert) ensure(ctx context.Context) error {
	name := c.req.Name
	rec, err := c.st.LoadRecord(ctx, name)
	due := errors.Is(err, fs.ErrNotExist)
	switch {
	case err != nil && !due:
		return err
	case !due:
		due = renew.Due(rec, time.Now(), c.frac).Due
	}
	if due {
		res, err := c.mgr.Obtain(ctx, c.req)
		if err != nil {
			return err
		}
		c.log.Info("API certificate obtained", "identifier", name, "not_after", res.NotAfter)
		if rec, err = c.st.LoadRecord(ctx, name); err != nil {
			return err
		}
	}
	b, _, err := c.st.LoadCertificate(ctx, name)
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(b.FullchainPEM(), b.KeyPEM)
	if err != nil {
		return fmt.Errorf("loading the stored API certificate: %w", err)
	}
	c.cur.Store(&cert)
	c.next = renew.Due(rec, time.Now(), c.frac).At
	return nil
}

// get is tls.Config.GetCertificate.
func (c *acmeCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil }

// renewLoop renews the certificate when it is due until ctx is done,
// backing off from one minute to an hour after failures.
func (c *acmeCert) renewLoop(ctx context.Context) {
	failures := 0
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
			failures++
			backoff := min(time.Minute<<min(failures-1, 6), time.Hour)
			c.next = time.Now().Add(backoff)
			c.log.Error("renewing the API certificate failed; still serving the current one", "error", err, "retry_in", backoff)
			continue
		}
		failures = 0
	}
}
