package cli

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/dnsprovider"
)

// dnsProviderSolver builds the dns-01 solver of a dns-provider path: the
// provider's API client from its credentials_file, and Detour's own
// propagation check. The settings were validated when the configuration
// was loaded; the credentials file is read here.
func (ps *pathSet) dnsProviderSolver(p config.Path, log *slog.Logger) (solve.Solver, error) {
	opts := dnsprovider.Options{
		Logger:          log,
		Provider:        p.Setting(config.KeyDNSProvider),
		CredentialsFile: p.Setting(config.KeyDNSProviderCredentials),
		Resolver:        ps.resolver,
	}
	if t := p.Setting(config.KeyDNSProviderTimeout); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil {
			return nil, fmt.Errorf("propagation_timeout %q: %w; write e.g. \"5m\"", t, err)
		}
		opts.PropagationTimeout = d
	}
	if ps.resolver != "" {
		// --resolver applies to the whole process, as lego's zone lookups do.
		dnsprovider.SetNameservers(ps.resolver)
	}
	return dnsprovider.New(opts)
}
