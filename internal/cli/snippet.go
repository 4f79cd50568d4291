package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/plan"
	"github.com/detour-acme/detour/internal/snippet"
)

const (
	flagServer = "server"
	flagAddr   = "addr"
)

func (a *app) snippetCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snippet",
		Short: "Print the web-server configuration block a path needs (nginx, Apache, HAProxy, ...)",
		Long: `Print the minimal configuration block your web server needs so that Detour can
validate while the server keeps ports 80 and 443:

  http       forward /.well-known/acme-challenge/ to Detour's side port (side-port path)
  stateless  answer <token>.<account thumbprint> with no Detour process (stateless path)
  tls-alpn   send TLS connections offering acme-tls/1 to Detour (alpn-forward path)`,
	}
	var httpServer, httpAddr string
	httpCmd := &cobra.Command{
		Use:     "http",
		Short:   "Forward /.well-known/acme-challenge/ to Detour's side port",
		Example: "  detour snippet http --server nginx\n  detour snippet http --server haproxy --addr unix:/run/detour/http.sock",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkServer(httpServer, snippet.HTTPForwardServers()); err != nil {
				return err
			}
			addr, err := a.snippetAddr(httpAddr, plan.SnippetHTTP)
			if err != nil {
				return err
			}
			out, err := snippet.HTTPForward(httpServer, addr)
			if err != nil {
				return usagef("--%s: %v", flagServer, err)
			}
			fmt.Fprint(a.stdout, out)
			return nil
		},
	}
	httpCmd.Flags().StringVar(&httpServer, flagServer, "nginx", "web server: "+strings.Join(snippet.HTTPForwardServers(), ", "))
	httpCmd.Flags().StringVar(&httpAddr, flagAddr, "", "Detour's side-port address (default: the side-port path of the config, else 127.0.0.1:8402)")

	var stServer string
	var acctFlags accountFlags
	statelessCmd := &cobra.Command{
		Use:   "stateless",
		Short: "Answer http-01 from the web server itself, with your account thumbprint filled in",
		Long: `Print a block that makes the web server answer every http-01 challenge itself
with "<token>.<account thumbprint>". No Detour process has to listen during
validation. The thumbprint belongs to your ACME account at the CA (--ca, --email
select it); after 'detour account rollover' print the block again.`,
		Example: "  detour snippet stateless --server nginx --email ops@example.com",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Refuse an unsupported server before the account is
			// registered at the CA (or the CA is contacted at all).
			if err := checkServer(stServer, snippet.StatelessServers()); err != nil {
				return err
			}
			m, ca, err := a.accountCA(acctFlags)
			if err != nil {
				return err
			}
			defer ca.Client.Close()
			acct, err := m.Account(cmd.Context(), ca)
			if err != nil {
				return err
			}
			tp, err := acme.Thumbprint(acct)
			if err != nil {
				return err
			}
			out, err := snippet.Stateless(stServer, tp)
			if err != nil {
				return usagef("--%s: %v", flagServer, err)
			}
			fmt.Fprint(a.stdout, out)
			return nil
		},
	}
	statelessCmd.Flags().StringVar(&stServer, flagServer, "nginx", "web server: "+strings.Join(snippet.StatelessServers(), ", "))
	acctFlags.register(statelessCmd)

	var alpnServer, alpnAddr string
	alpnCmd := &cobra.Command{
		Use:     "tls-alpn",
		Short:   "Send TLS connections offering acme-tls/1 to Detour (nginx stream, HAProxy)",
		Example: "  detour snippet tls-alpn --server haproxy",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkServer(alpnServer, snippet.TLSALPNForwardServers()); err != nil {
				return err
			}
			addr, err := a.snippetAddr(alpnAddr, plan.SnippetTLSALPN)
			if err != nil {
				return err
			}
			out, err := snippet.TLSALPNForward(alpnServer, addr)
			if err != nil {
				return usagef("--%s: %v", flagServer, err)
			}
			fmt.Fprint(a.stdout, out)
			return nil
		},
	}
	alpnCmd.Flags().StringVar(&alpnServer, flagServer, "nginx", "web server: "+strings.Join(snippet.TLSALPNForwardServers(), ", "))
	alpnCmd.Flags().StringVar(&alpnAddr, flagAddr, "", "Detour's alpn-forward address (default: the alpn-forward path of the config, else 127.0.0.1:8403)")
	cmd.AddCommand(httpCmd, statelessCmd, alpnCmd)
	return cmd
}

// checkServer is the usage error for a --server that a snippet does not
// support, listing those it does.
func checkServer(server string, supported []string) error {
	if err := snippet.CheckServer(server, supported); err != nil {
		return usagef("--%s: %v", flagServer, err)
	}
	return nil
}

// snippetAddr picks the address a snippet points at: the flag, else the
// only configured path of the snippet's kind, else the kind's default.
func (a *app) snippetAddr(flag, snippet string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	p, err := a.planner(false)
	if err != nil {
		return "", err
	}
	addr, err := p.SnippetAddr(snippet)
	return addr, usage(err)
}
