package cli

import (
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
	"github.com/detour-acme/detour/internal/solve/dnsembed"
	"github.com/detour-acme/detour/internal/solve/standalone"
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
loopback, then obtain real certificates from it through every validation path:
standalone http-01, standalone tls-alpn-01 and dns-01 through the embedded DNS
responder (including a wildcard), and renew one of them. Prints what was issued.

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

	demos := []demo{
		{name: "http-demo", path: "standalone-http", ids: []string{"http.detour.test", "127.0.0.1"}, renew: true},
		{name: "alpn-demo", path: "standalone-tls-alpn", ids: []string{"alpn.detour.test"}},
		{name: "dns-demo", path: "dns-embedded", ids: []string{"dns.detour.test", "*.dns.detour.test"}},
	}
	for _, d := range demos {
		for _, n := range d.ids {
			if !strings.HasPrefix(n, "*.") && strings.HasSuffix(n, ".test") {
				env.AddName(n)
			}
		}
	}
	httpS, err := standalone.NewHTTP01(standalone.Options{Logger: a.log, Listener: env.HTTPListener})
	if err != nil {
		return err
	}
	defer httpS.Close()
	tlsS, err := standalone.NewTLSALPN01(standalone.Options{Logger: a.log, Listener: env.TLSListener})
	if err != nil {
		return err
	}
	defer tlsS.Close()
	dnsS, err := dnsembed.New(dnsembed.Options{Logger: a.log, Server: env.DNS, QueryAddr: env.DNSAddr})
	if err != nil {
		return err
	}
	paths := map[string]struct {
		s   solve.Solver
		ref store.PathRef
	}{
		"standalone-http":     {httpS, store.PathRef{Name: "standalone-http", Kind: "standalone", Settings: map[string]string{"challenge": solve.HTTP01, "listen": env.HTTPListener.Addr().String()}}},
		"standalone-tls-alpn": {tlsS, store.PathRef{Name: "standalone-tls-alpn", Kind: "standalone", Settings: map[string]string{"challenge": solve.TLSALPN01, "listen": env.TLSListener.Addr().String()}}},
		"dns-embedded":        {dnsS, store.PathRef{Name: "dns-embedded", Kind: "dns-embedded", Settings: map[string]string{"challenge": solve.DNS01, "listen": env.DNSAddr}}},
	}
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
		p := paths[d.path]
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
	httpS.Close()
	tlsS.Close()
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
