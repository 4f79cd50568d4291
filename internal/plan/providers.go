package plan

import "github.com/detour-acme/detour/internal/solve/dnsprovider"

// DNSProviderKind is the path kind whose paths name a DNS provider's API.
const DNSProviderKind = dnsprovider.Kind

// DNSProvider is one DNS provider API a dns-provider path can drive, as
// `detour paths dns-provider [NAME]` documents it.
type DNSProvider = dnsprovider.Provider

// DNSProviders returns every DNS provider, sorted by name.
func DNSProviders() []DNSProvider { return dnsprovider.Providers() }

// DescribeDNSProvider returns the provider called name (or an alias of
// it); an unknown name's error offers the closest known one.
func DescribeDNSProvider(name string) (DNSProvider, error) { return dnsprovider.Describe(name) }
