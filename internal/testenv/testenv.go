// Package testenv starts the pieces Detour's tests run against: an
// in-process ACME CA (Pebble) and Detour's own DNS responder on 127.0.0.1,
// with standalone solvers already bound to the ports the CA validates on.
// Everything is torn down by t.Cleanup.
package testenv

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/dnsembed"
	"github.com/detour-acme/detour/internal/solve/standalone"
	"github.com/detour-acme/detour/internal/store"
)

// Options configure New.
type Options struct {
	// CA configures the CA: profiles, EAB, nonce rejection, alternate
	// roots, retry hints.
	CA sandbox.CAOptions
	// KeepPorts leaves the validation listeners unused, for tests that
	// bind them in another process; they are closed, and their addresses
	// kept in HTTPAddr and TLSAddr.
	KeepPorts bool
	// VADNSAddr makes the CA validate through another DNS server (host:port,
	// queried over TCP) instead of the sandbox one; see
	// sandbox.EnvOptions.VADNSAddr.
	VADNSAddr string
}

// Env is a running test environment.
type Env struct {
	*sandbox.Env
	// Paths answering through the sandbox (nil with KeepPorts for the
	// standalone ones).
	HTTPPath, TLSPath, DNSPath solve.Path
	// HTTPAddr and TLSAddr are where the CA validates.
	HTTPAddr, TLSAddr string
	// RootsFile holds the CA API's root, for --ca-roots.
	RootsFile string
	// Dir is a fresh state directory.
	Dir   string
	Store *store.FS
	Log   *slog.Logger
}

// New starts an environment for t.
func New(t testing.TB, opts Options) *Env {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if os.Getenv("DETOUR_TEST_VERBOSE") == "" {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	senv, err := sandbox.Start(ctx, sandbox.EnvOptions{Logger: log, CA: opts.CA, VADNSAddr: opts.VADNSAddr})
	if err != nil {
		t.Fatalf("starting sandbox: %v", err)
	}
	t.Cleanup(func() { senv.Close() })
	e := &Env{Env: senv, Log: log, Dir: t.TempDir()}
	e.HTTPAddr = senv.HTTPListener.Addr().String()
	e.TLSAddr = senv.TLSListener.Addr().String()
	if opts.KeepPorts {
		senv.HTTPListener.Close()
		senv.TLSListener.Close()
	} else {
		h, err := standalone.NewHTTP01(standalone.Options{Logger: log, Listener: senv.HTTPListener})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		s, err := standalone.NewTLSALPN01(standalone.Options{Logger: log, Listener: senv.TLSListener})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		e.HTTPPath = solve.Path{Name: "standalone-http", Solver: h}
		e.TLSPath = solve.Path{Name: "standalone-tls-alpn", Solver: s}
	}
	d, err := dnsembed.New(dnsembed.Options{Logger: log, Server: senv.DNS, QueryAddr: senv.DNSAddr})
	if err != nil {
		t.Fatal(err)
	}
	e.DNSPath = solve.Path{Name: "dns-embedded", Solver: d}
	e.RootsFile = e.Dir + "/ca-roots.pem"
	if err := senv.CA.WriteTLSRoots(e.RootsFile); err != nil {
		t.Fatal(err)
	}
	if e.Store, err = store.NewFS(e.Dir+"/state", store.FSOptions{Logger: log}); err != nil {
		t.Fatal(err)
	}
	return e
}

// Client returns a new ACME client for the environment's CA.
func (e *Env) Client(t testing.TB) *acme.Client {
	t.Helper()
	c, err := acme.New(acme.Options{Directory: e.CA.DirectoryURL(), RootsPEM: e.CA.TLSRootsPEM(), Logger: e.Log, PollMin: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// Manager returns a renewal manager on the environment's store.
func (e *Env) Manager(t testing.TB) *renew.Manager {
	t.Helper()
	m, err := renew.New(renew.Options{Store: e.Store, Logger: e.Log})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// LeafNames returns the DNS names of the live certificate name.
func (e *Env) LeafNames(t testing.TB, name string) []string {
	t.Helper()
	full, err := os.ReadFile(e.Store.LivePath(name, "fullchain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(full)
	if blk == nil {
		t.Fatalf("live/%s/fullchain.pem holds no PEM block", name)
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return leaf.DNSNames
}

// RenewCA returns the CA as renewals use it, with a fresh client.
func (e *Env) RenewCA(t testing.TB) renew.CA {
	return renew.CA{Client: e.Client(t), Name: "sandbox", Email: "test@detour.test", AgreeTOS: true, RootBundle: e.RootsFile}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
