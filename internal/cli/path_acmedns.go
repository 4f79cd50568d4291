package cli

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/acmedns"
)

// acmeDNSSolver builds the dns-01 solver of an acme-dns path. Accounts are
// kept in the state store unless credentials_file names a lego/certbot
// style file. The settings were validated when the configuration was
// loaded.
func (ps *pathSet) acmeDNSSolver(p config.Path, log *slog.Logger) (solve.Solver, error) {
	opts, err := acmeDNSOptions(p, log)
	if err != nil {
		return nil, err
	}
	opts.Storage, opts.Resolver = ps.store, ps.resolver
	return acmedns.New(opts)
}

// acmeDNSOptions reads the settings of an acme-dns path.
func acmeDNSOptions(p config.Path, log *slog.Logger) (acmedns.Options, error) {
	opts := acmedns.Options{Logger: log, Server: p.Setting("server"), CredentialsFile: p.Setting("credentials_file")}
	for _, c := range strings.Split(p.Setting("allow_from"), ",") {
		if c = strings.TrimSpace(c); c != "" {
			opts.AllowFrom = append(opts.AllowFrom, c)
		}
	}
	if t := p.Setting("propagation_timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil {
			return opts, fmt.Errorf("propagation_timeout %q: %w; write e.g. \"2m\"", t, err)
		}
		opts.PropagationTimeout = d
	}
	return opts, nil
}
