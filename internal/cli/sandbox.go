package cli

import (
	"cmp"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/sandbox/demo"
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
		f.httpAddr = cmp.Or(f.httpAddr, "127.0.0.1:5002")
		f.tlsAddr = cmp.Or(f.tlsAddr, "127.0.0.1:5001")
		f.dnsAddr = cmp.Or(f.dnsAddr, "127.0.0.1:8053")
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tCHALLENGE\tNAMES\tVERSION\tWALL TIME\tNOT AFTER\tFILES")
	sb, err := demo.Run(ctx, demo.Options{Logger: a.log, StateDir: a.stateDir, HTTPAddr: f.httpAddr, TLSAddr: f.tlsAddr, DNSAddr: f.dnsAddr},
		func(r demo.Row) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Path, r.Challenge, strings.Join(r.Names, ","), r.Version,
				r.Elapsed.Round(time.Millisecond), r.NotAfter.UTC().Format("2006-01-02 15:04"), r.LiveDir+"/")
		})
	if err != nil {
		return err
	}
	defer sb.Close()
	tw.Flush()
	dir := sb.Store.Dir()
	fmt.Fprintf(a.stdout, "\nAll certificates issued by the local CA in %s. State directory: %s\n", time.Since(total).Round(time.Millisecond), dir)
	fmt.Fprintf(a.stdout, "Look at them with:  detour --state-dir %s status\n", dir)
	if !f.serve {
		return nil
	}
	// Free the validation ports for the user's own detour process.
	if err := sb.FreePorts(); err != nil {
		return err
	}
	env := sb.Env
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
`, env.CA.DirectoryURL(), sb.RootsFile, env.DNSAddr, env.HTTPListener.Addr(), env.TLSListener.Addr(),
		env.CA.DirectoryURL(), sb.RootsFile, env.HTTPListener.Addr(), env.DNSAddr, sb.HTTPPort(), sb.TLSPort())
	<-ctx.Done()
	return nil
}
