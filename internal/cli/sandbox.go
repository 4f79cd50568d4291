package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/store"
)

const (
	flagServe      = "serve"
	flagVAHTTPAddr = "va-http-addr"
	flagVATLSAddr  = "va-tls-addr"
	flagSandboxDNS = "dns-addr"
	flagExtraName  = "name"
)

type sandboxFlags struct {
	serve                      bool
	httpAddr, tlsAddr, dnsAddr string
	names                      []string
}

func (a *app) sandboxCommand() *cobra.Command {
	var f sandboxFlags
	cmd := &cobra.Command{
		Use:   "sandbox",
		Short: "Rehearse offline: a local ACME CA and DNS, and real certificates through every path",
		Long: `Start a local ACME CA (Pebble, in-process) and Detour's DNS responder on
loopback, then obtain real certificates from it through every validation path
that can run on this machine alone: http-01 through standalone, webroot, side
port and stateless (behind a local web server that dispatches by name, as
yours would), tls-alpn-01 through standalone, the front door (a Detour router
passing other TLS to a local HTTPS backend) and alpn-forward (a TLS proxy
forwarding one name to Detour's port), dns-01 through the embedded DNS
responder and dns-persist-01 through a standing record (both with a
wildcard), and renew one of them. Prints what was issued.

Nothing leaves this machine. Certificates go to a temporary state directory
unless --state-dir is given.

With --serve the CA stays up after the demonstration so you can rehearse your
own configuration against it with 'detour issue --ca <directory URL>'; the
command prints the URL, the root bundle and the addresses to use.`,
		Example: `  detour sandbox
  detour sandbox --serve --name www.detour.test`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.sandbox(cmd, f) },
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.serve, flagServe, false, "keep the CA and DNS running after the demonstration")
	fl.StringVar(&f.httpAddr, flagVAHTTPAddr, "", "where the CA validates http-01 (default 127.0.0.1:0; with --serve 127.0.0.1:5002)")
	fl.StringVar(&f.tlsAddr, flagVATLSAddr, "", "where the CA validates tls-alpn-01 (default 127.0.0.1:0; with --serve 127.0.0.1:5001)")
	fl.StringVar(&f.dnsAddr, flagSandboxDNS, "", "sandbox DNS address (default 127.0.0.1:0; with --serve 127.0.0.1:8053)")
	fl.StringSliceVar(&f.names, flagExtraName, nil, "with --serve: extra names under detour.test to resolve to 127.0.0.1")
	return cmd
}

// demo is one certificate the sandbox issues.
type demo struct {
	name  string
	path  string
	ids   []string
	renew bool
	// before, if set, runs just before the demo, e.g. to hand a validation
	// port from one path to the next.
	before func(context.Context) error
}

func (a *app) sandbox(cmd *cobra.Command, f sandboxFlags) error {
	ctx := cmd.Context()
	total := time.Now()
	if !cmd.Flags().Changed(flagLogLevel) && a.logLevel == "info" {
		// The table is the output; logs only for trouble.
		a.logLevel = "warn"
		if err := a.setupLogging(); err != nil {
			return err
		}
	}
	if f.serve {
		f.httpAddr = orDefault(f.httpAddr, "127.0.0.1:5002")
		f.tlsAddr = orDefault(f.tlsAddr, "127.0.0.1:5001")
		f.dnsAddr = orDefault(f.dnsAddr, "127.0.0.1:8053")
	}
	stateDir := a.stateDir
	if stateDir == "" {
		d, err := os.MkdirTemp("", "detour-sandbox-")
		if err != nil {
			return fmt.Errorf("creating a temporary state directory: %w", err)
		}
		stateDir = d
	}
	st, err := store.NewFS(stateDir, store.FSOptions{Logger: a.log})
	if err != nil {
		return err
	}
	env, err := sandbox.Start(ctx, sandbox.EnvOptions{Logger: a.log, HTTPAddr: f.httpAddr, TLSAddr: f.tlsAddr, DNSAddr: f.dnsAddr})
	if err != nil {
		return err
	}
	defer env.Close()

	client, err := acme.New(acme.Options{Directory: env.CA.DirectoryURL(), RootsPEM: env.CA.TLSRootsPEM(), Logger: a.log})
	if err != nil {
		return err
	}
	defer client.Close()
	rootsFile := filepath.Join(st.Dir(), "sandbox-ca-roots.pem")
	if err := env.CA.WriteTLSRoots(rootsFile); err != nil {
		return err
	}
	m, err := renew.New(renew.Options{Store: st, Logger: a.log})
	if err != nil {
		return err
	}
	ca := renew.CA{Client: client, Name: "sandbox", Email: "sandbox@detour.test", AgreeTOS: true, RootBundle: rootsFile}
	acct, err := m.Account(ctx, ca)
	if err != nil {
		return err
	}
	sp, err := a.sandboxPaths(ctx, env, st, ca, acct)
	defer sp.close()
	if err != nil {
		return err
	}
	demos := sp.demos
	for _, d := range demos {
		for _, n := range d.ids {
			if !strings.HasPrefix(n, "*.") && strings.HasSuffix(n, ".test") {
				env.AddName(n)
			}
		}
	}
	// Self-check each answer as the sandbox CA will fetch it: through the
	// sandbox DNS, on the ports its validation authority uses.
	a.resolver = env.DNSAddr
	a.checkHTTPPort = env.HTTPListener.Addr().(*net.TCPAddr).Port
	a.checkTLSPort = env.TLSListener.Addr().(*net.TCPAddr).Port
	check := a.selfCheck(nil)

	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tCHALLENGE\tNAMES\tVERSION\tWALL TIME\tNOT AFTER\tFILES")
	for _, d := range demos {
		ids, err := ident.ParseAll(d.ids)
		if err != nil {
			return err
		}
		if d.before != nil {
			if err := d.before(ctx); err != nil {
				return fmt.Errorf("sandbox: %s: %w", d.path, err)
			}
		}
		p := sp.paths[d.path]
		req := renew.Request{
			Name: d.name, Identifiers: ids, Profile: env.CA.DefaultProfile(), CA: ca,
			Paths: []solve.Path{{Name: d.path, Solver: p.s}}, Refs: []store.PathRef{p.ref},
			SelfCheck: check,
		}
		rounds := 1
		if d.renew {
			rounds = 2
		}
		for i := range rounds {
			label := d.path
			if i > 0 {
				label += " (renewal)"
				rec, err := st.LoadRecord(ctx, d.name)
				if err == nil {
					req.Replaces = rec.ARIID
				}
			}
			res, err := m.Obtain(ctx, req)
			if err != nil {
				return fmt.Errorf("sandbox: %s: %w", d.path, err)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", label, p.s.Type(), strings.Join(d.ids, ","), res.Version,
				res.Elapsed.Round(time.Millisecond), res.NotAfter.UTC().Format("2006-01-02 15:04"), filepath.Join(st.Dir(), "live", d.name)+"/")
		}
	}
	tw.Flush()
	fmt.Fprintf(a.stdout, "\nAll certificates issued by the local CA in %s. State directory: %s\n", time.Since(total).Round(time.Millisecond), st.Dir())
	fmt.Fprintf(a.stdout, "Look at them with:  detour --state-dir %s status\n", st.Dir())
	if !f.serve {
		return nil
	}
	// Free the validation ports for the user's own detour process.
	if err := sp.close(); err != nil {
		return err
	}
	for _, n := range f.names {
		env.AddName(n)
	}
	fmt.Fprintf(a.stdout, `
The sandbox CA is running. Press Ctrl-C to stop it.
  directory:   %s
  root bundle: %s
  profiles:    tlsserver (90 days), shortlived (160 hours)
  DNS:         %s (names under detour.test; add more with --name)
  validation:  http-01 connects to %s, tls-alpn-01 to %s

Rehearse, for example (the last three flags point Detour's self-check at the
sandbox DNS and validation ports, as the sandbox CA will use them):
  detour issue --state-dir /tmp/rehearsal --ca %s --ca-roots %s \
    --profile tlsserver --agree-tos -d http.detour.test --http-addr %s \
    --resolver %s --check-http-port %d --check-tls-port %d
`, env.CA.DirectoryURL(), rootsFile, env.DNSAddr, env.HTTPListener.Addr(), env.TLSListener.Addr(),
		env.CA.DirectoryURL(), rootsFile, env.HTTPListener.Addr(), env.DNSAddr, a.checkHTTPPort, a.checkTLSPort)
	<-ctx.Done()
	return nil
}
