package cli

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/rfc2136"
)

// rfc2136Solver builds the dns-01 solver of an rfc2136 path, reading the
// TSIG secret from tsig_secret_file when set. The settings were validated
// when the configuration was loaded.
func (ps *pathSet) rfc2136Solver(p config.Path, log *slog.Logger) (solve.Solver, error) {
	opts := rfc2136.Options{
		Logger:        log,
		Server:        p.Setting("server"),
		Zone:          p.Setting("zone"),
		TSIGKey:       p.Setting("tsig_key"),
		TSIGAlgorithm: p.Setting("tsig_algorithm"),
		TSIGSecret:    p.Setting("tsig_secret"),
		Resolver:      ps.resolver,
	}
	if f := p.Setting("tsig_secret_file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading tsig_secret_file: %w; check the path and that detour may read it", err)
		}
		opts.TSIGSecret = strings.TrimSpace(string(b))
	}
	if t := p.Setting("propagation_timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil {
			return nil, fmt.Errorf("propagation_timeout %q: %w; write e.g. \"2m\"", t, err)
		}
		opts.PropagationTimeout = d
	}
	return rfc2136.New(opts)
}
