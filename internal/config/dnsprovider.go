package config

import (
	"github.com/detour-acme/detour/internal/suggest"

	"fmt"
	"path/filepath"
	"slices"
	"time"
)

// Settings of a dns-provider path.
const (
	// KeyDNSProvider names the provider API, one of DNSProviders().
	KeyDNSProvider = "provider"
	// KeyDNSProviderCredentials is the absolute path of the file holding the
	// provider's credentials ("key = value" lines, mode 0600).
	KeyDNSProviderCredentials = "credentials_file"
	// KeyDNSProviderTimeout bounds the wait until every authoritative
	// server answers the TXT record (a Go duration, e.g. "5m").
	KeyDNSProviderTimeout = "propagation_timeout"
)

// dnsProviders are the provider names package solve/dnsprovider registers.
// The configuration cannot import that package (it pulls in every
// provider's API client), so the names are listed here too; a test there
// keeps the two lists equal.
var dnsProviders = []string{"cloudflare", "digitalocean", "gandi", "hetzner", "ovh", "route53"}

// DNSProviders returns the names a dns-provider path accepts in provider,
// sorted.
func DNSProviders() []string { return slices.Clone(dnsProviders) }

func init() {
	k := kinds[KindDNSProvider]
	k.check = checkDNSProvider
	kinds[KindDNSProvider] = k
}

// checkDNSProvider validates the settings of a dns-provider path. The
// credentials file itself is read when the path is built, so that a
// configuration check never needs the secrets.
func checkDNSProvider(p Path) []SettingProblem {
	var probs []SettingProblem
	if v := p.Setting(KeyDNSProvider); v != "" && !slices.Contains(dnsProviders, v) {
		probs = append(probs, SettingProblem{Key: KeyDNSProvider,
			Msg: fmt.Sprintf("%q is not a supported DNS provider%s; use one of %s", v, suggest.DidYouMean(v, dnsProviders), suggest.QuoteList(dnsProviders))})
	}
	switch f := p.Setting(KeyDNSProviderCredentials); {
	case f == "":
		probs = append(probs, SettingProblem{Key: KeyDNSProviderCredentials,
			Msg: "credentials_file is missing; set it to a file (mode 0600) holding the provider's API credentials as key = value lines"})
	case !filepath.IsAbs(f):
		probs = append(probs, SettingProblem{Key: KeyDNSProviderCredentials,
			Msg: fmt.Sprintf("%q must be an absolute path, e.g. \"/etc/detour/%s.credentials\"", f, p.Setting(KeyDNSProvider))})
	}
	if v := p.Setting(KeyDNSProviderTimeout); v != "" {
		if d, err := time.ParseDuration(v); err != nil || d <= 0 {
			probs = append(probs, SettingProblem{Key: KeyDNSProviderTimeout,
				Msg: fmt.Sprintf("%q is not a positive duration; write e.g. \"5m\" or \"90s\"", v)})
		}
	}
	return probs
}
