package cli

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"

	"github.com/detour-acme/detour/internal/agent"
	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/plan"
	"github.com/detour-acme/detour/internal/statuspage"
)

// statusServer is what serveStatusPage starts: the page's source, to
// follow a reloaded configuration, and whether the page's listener also
// serves the metrics.
type statusServer struct {
	page          *plan.StatusPage
	servesMetrics bool
}

// serveStatusPage starts the status page on status_listen, when set,
// under servers. When metrics_listen is the same address, the one
// listener serves the metrics too, behind the page's credentials.
func (a *app) serveStatusPage(ctx context.Context, servers *sync.WaitGroup, p *plan.Planner, ag *agent.Agent, history agent.History,
	metrics *agent.Metrics, fa *plan.FleetAgent, metricsListen string) (statusServer, error) {
	sc := p.Config().Agent.Status
	if sc.Listen == "" {
		return statusServer{}, nil
	}
	out := statusServer{servesMetrics: sameAddress(sc.Listen, metricsListen)}
	out.page = p.NewStatusPage(plan.StatusPageOptions{Agent: ag, History: history, Version: version(debug.ReadBuildInfo()), Started: time.Now()})
	h, err := statusHandler(out.page, sc, a.log, ag, metrics, fa, out.servesMetrics)
	if err != nil {
		return out, err
	}
	ln, err := net.Listen("tcp", sc.Listen)
	if err != nil {
		return out, fmt.Errorf("binding %s for the status page: %w; choose another status_listen address", sc.Listen, err)
	}
	scheme := "http"
	if sc.TLSCert != "" {
		tc, err := statuspage.TLSConfig(sc.TLSCert, sc.TLSKey, sc.ClientCA)
		if err != nil {
			ln.Close()
			return out, fmt.Errorf("status page: %w", err)
		}
		ln, scheme = tls.NewListener(ln, tc), "https"
	}
	a.log.Info("serving the status page", "url", scheme+"://"+ln.Addr().String()+"/", "metrics", out.servesMetrics,
		"basic_auth", sc.User != "", "client_certificate", sc.ClientCA != "")
	servers.Go(func() {
		if err := agent.Serve(ctx, ln, h); err != nil {
			a.log.Error("status page listener stopped", "error", err)
		}
	})
	return out, nil
}

// statusHandler is the status page, with the metrics (and the agent's
// /status and a fleet's /fleet/ready) when it shares their listener, all
// behind the page's basic auth when one is configured.
func statusHandler(page statuspage.Source, sc config.StatusPage, log *slog.Logger, ag *agent.Agent, metrics *agent.Metrics, fa *plan.FleetAgent, withMetrics bool) (http.Handler, error) {
	sp, err := statuspage.Handler(statuspage.Options{Source: page, Logger: log})
	if err != nil {
		return nil, err
	}
	var h http.Handler = sp
	if withMetrics {
		mux := http.NewServeMux()
		mux.Handle("/", sp)
		am := ag.Handler(metrics)
		mux.Handle("GET /metrics", am)
		mux.Handle("GET "+agent.StatusPath, am)
		h = withFleetReady(mux, fa)
	}
	if sc.User != "" {
		return statuspage.RequireBasicAuth(h, statuspage.BasicAuth{User: sc.User, Hash: []byte(sc.PasswordBcrypt), Logger: log})
	}
	return h, nil
}

// sameAddress reports whether two host:port listen addresses are one.
func sameAddress(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	return pa == pb && strings.EqualFold(ha, hb)
}

// hashPasswordCommand is `detour config hash-password`.
func (a *app) hashPasswordCommand() *cobra.Command {
	var cost int
	cmd := &cobra.Command{
		Use:   "hash-password",
		Short: "Print the bcrypt hash of a password read from standard input, for status_password_bcrypt",
		Long: `Read a password from the first line of standard input and print its bcrypt
hash, the value of status_password_bcrypt (the status page's basic auth):

  printf '%s\n' 'a long passphrase' | detour config hash-password

The configuration holds only the hash; the browser or Prometheus sends the
password.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			if err != nil && line == "" {
				return errors.New("no password on standard input; pipe one in: printf '%s\\n' 'PASSWORD' | detour config hash-password")
			}
			pw := strings.TrimRight(line, "\r\n")
			if len(pw) < 8 {
				return errors.New("the password is shorter than 8 characters; choose a longer one")
			}
			hash, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
			if err != nil {
				return fmt.Errorf("hashing the password: %w", err)
			}
			_, err = fmt.Fprintln(a.stdout, string(hash))
			return err
		},
	}
	cmd.Flags().IntVar(&cost, "cost", 12, "bcrypt cost (each step doubles the work of a check)")
	return cmd
}
